"""The claims' tests: the primary claim's stratified Welch test, the exploratory comparisons' Welch p-values,
Holm's step-down adjustment over a family, and numbers printed at the precision that shows their sign.

Why a stratified Welch test for the primary claim. The claim pools several epoch budgets at one batch; each
budget is its own experiment (its own schedule, its own seeds), with its own spread. The pooled gain is the
mean over budgets of the per-budget differences of means, every budget weighted alike (the sweep file chose
the budgets, not the seed counts); its variance is the sum of the per-budget Welch variances over K^2, its
degrees of freedom Welch-Satterthwaite's over all 2K samples. With one budget it is exactly Welch's test
(``scipy.stats.ttest_ind(equal_var=False)``, which the tests check). A permutation test within budgets would
need no normality, but with 3 seeds a side its smallest attainable p-value per budget is 0.1, and it gives
no interval; a mixed model needs more budgets than a profile has to estimate a between-budget variance.

Holm's step-down (Holm 1979) controls the family-wise error rate at ``alpha`` for any dependence between the
tests: with the p-values sorted p_(1) <= ... <= p_(m), the adjusted p_(i) = max over j <= i of
min(1, (m - j + 1) p_(j)); a hypothesis is rejected when its adjusted p-value is below ``alpha``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.stats

from bench import intervals

ALPHA = 0.05
PRIMARY_TEST = ("stratified Welch t test: the gain is the mean over the epoch budgets of the per-budget differences "
                "of means (NLCG - baseline), its variance the sum of the per-budget Welch variances over K^2, "
                "Welch-Satterthwaite degrees of freedom; two-sided, alpha 0.05 (one budget: Welch's t test)")
EXPLORATORY_TEST = "two-sided Welch t test (scipy.stats.ttest_ind, equal_var=False) per comparison"


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's t test of mean(a) = mean(b) (SciPy); NaN with fewer than 2 values a side.
    Two constant samples: 0 if their means differ, 1 if not (SciPy returns NaN there)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    with warnings.catch_warnings():  # nearly equal seeds: SciPy warns of cancellation, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)


def stratified_welch(strata: list[tuple[list, list]], level: float = 0.95) -> dict:
    """The primary test over strata [(a_1, b_1), ..., (a_K, b_K)] (a: NLCG's top-1 over seeds, b: the
    baseline's): ``gain`` (mean over strata of mean(a_k) - mean(b_k)), ``low``/``high`` (its ``level``
    interval), ``p_value`` (two-sided), ``df``, ``t``. Each side of each stratum needs 2 values or more."""
    if not strata:
        raise ValueError("stratified_welch: no strata")
    diffs, parts = [], []
    for a, b in strata:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if len(a) < 2 or len(b) < 2:
            raise ValueError(f"stratified_welch: a stratum has {len(a)} and {len(b)} values; need 2 or more a side")
        diffs.append(a.mean() - b.mean())
        parts += [(a.var(ddof=1) / len(a), len(a) - 1), (b.var(ddof=1) / len(b), len(b) - 1)]
    k = len(strata)
    gain = float(np.mean(diffs))
    var_sum = sum(v for v, _ in parts)
    if var_sum == 0:  # every seed identical within its side: no spread to test against
        p = 1.0 if gain == 0 else 0.0
        return {"gain": gain, "low": gain, "high": gain, "p_value": p, "df": math.inf,
                "t": math.copysign(math.inf, gain)}
    df = var_sum**2 / sum(v**2 / d for v, d in parts if v > 0)
    se = math.sqrt(var_sum) / k
    t = gain / se
    half = intervals.t_quantile(0.5 + level / 2, df) * se
    return {"gain": gain, "low": gain - half, "high": gain + half, "df": float(df), "t": float(t),
            "p_value": float(2 * scipy.stats.t.sf(abs(t), df))}


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given; NaN entries are not part of the family."""
    p = np.asarray(p_values, dtype=float)
    keep = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), math.nan)
    m = len(keep)
    running = 0.0
    for rank, i in enumerate(keep[np.argsort(p[keep], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def verdict(gain: float | None, p_value: float | None, alpha: float = ALPHA) -> str:
    """``holds`` (gain > 0 and p < alpha), ``fails`` (gain < 0 and p < alpha), else ``inconclusive``."""
    if gain is None or p_value is None or math.isnan(p_value) or math.isnan(gain) or not p_value < alpha:
        return "inconclusive"
    return "holds" if gain > 0 else "fails" if gain < 0 else "inconclusive"


def decimals(*values: float, least: int = 1, most: int = 4) -> int:
    """The fewest decimals (``least`` to ``most``) at which no nonzero value among ``values`` rounds to zero,
    so that an interval printed with them shows the sign that decided its verdict."""
    for d in range(least, most + 1):
        if all(v == 0 or round(v, d) != 0 for v in values if v is not None and not math.isnan(v)):
            return d
    return most


def signed_interval(low: float, high: float) -> str:
    """``[+0.03, +3.1]``-style: both ends at the decimals that show their signs."""
    d = decimals(low, high)
    return f"[{low:+.{d}f}, {high:+.{d}f}]"


def p_text(p: float | None, alpha: float = ALPHA) -> str:
    """``p = 0.03``: the fewest decimals (2 to 6) that keep the printed value nonzero and on the same side of
    ``alpha`` as the value itself (0.04999 prints as 0.04999, never as 0.05)."""
    if p is None or math.isnan(p):
        return "p n/a"
    if p < 1e-4:
        return "p < 0.0001"
    for d in range(2, 7):
        r = round(p, d)
        if r != 0 and r != alpha and (r < alpha) == (p < alpha):
            return f"p = {p:.{d}f}"
    return f"p = {p:.6f}"
