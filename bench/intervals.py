"""Student t intervals, on SciPy (``scipy.stats``): the one home of the harness's interval arithmetic, read by
the runs' throughput band (bench.train), the speed study's bands (bench.perf.ratios) and the figures' and
claims' intervals (plots.stats).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile(p={p}, df={df}): need 0 < p < 1 and df > 0")
    return float(scipy.stats.t.ppf(p, df))


def t975(df: float) -> float:
    """The 97.5 % quantile of Student's t (the half-width factor of a 95 % interval); NaN for df < 1."""
    return t_quantile(0.975, df) if df >= 1 else math.nan


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % Student t interval, n) of independent values; half-width NaN for n < 2."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    return float(x.mean()), t975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n), n


def welch(a, b) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95 % Welch t interval (Welch-Satterthwaite degrees of freedom)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's interval needs at least 2 values on each side")
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t975(df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half
