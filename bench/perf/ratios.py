"""Ratios and their 95 % bands: the arithmetic of every bench.json entry. An entry is the ratio of two sides
measured in the same run (``side``: what, unit, samples, mean, standard error), with its band
(``INTERVAL_METHOD``: the delta method; paired when both sides ran in the same rounds, which cancels the
machine's drift between rounds) and its verdict against a target (``entry``). No timing here (bench.perf's
measuring modules time); everything is a pure function of its arguments, tested by hand.

Student's t quantiles come from bench.intervals (``scipy.stats.t.ppf``).
"""

from __future__ import annotations

import math

import numpy as np

from bench import intervals

t975 = intervals.t975  # the 97.5 % quantile of Student's t
INTERVAL_METHOD = ("delta method: ratio r = mean(a) / mean(b); a sample is one interleaved round (one child "
                   "process for the multi-process entries). Paired entries (both sides measured in the same "
                   "rounds): standard error sd(a_i - r b_i) / sqrt(n) / mean(b), which cancels the machine's "
                   "drift between rounds, band r +- t_{0.975, n - 1} x that; otherwise relative standard error "
                   "sqrt((se_a/mean_a)^2 + (se_b/mean_b)^2), band r +- t_{0.975, min(n_a, n_b) - 1} x r x that")


def mean_se(samples) -> tuple[float, float, int]:
    """(mean, standard error of the mean, n) of a list of numbers; se is nan for n < 2."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, 0
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return float(x.mean()), se, int(x.size)


def ratio_interval(mean_a: float, se_a: float, n_a: int, mean_b: float, se_b: float, n_b: int):
    """mean_a / mean_b and its 95 % band [low, high] by the delta method (see INTERVAL_METHOD).

    The band is (nan, nan) when either side has fewer than 2 samples."""
    r = mean_a / mean_b
    rel = math.sqrt((se_a / mean_a) ** 2 + (se_b / mean_b) ** 2)
    half = t975(min(n_a, n_b) - 1) * abs(r) * rel
    return r, (r - half, r + half)


def paired_ratio_interval(a, b):
    """mean(a) / mean(b) and its 95 % band when a_i and b_i were measured in the same round i (see
    INTERVAL_METHOD): the ratio estimator's standard error sd(a_i - r b_i) / sqrt(n) / mean(b), so that a
    round in which the machine ran slow for both sides moves the ratio little. (nan, nan) for n < 2."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same number of rounds, got {a.size} and {b.size}")
    r = float(a.mean() / b.mean())
    if a.size < 2:
        return r, (math.nan, math.nan)
    se = float((a - r * b).std(ddof=1) / math.sqrt(a.size) / abs(b.mean()))
    half = t975(a.size - 1) * se
    return r, (r - half, r + half)


def side(what: str, unit: str, samples, **extra) -> dict:
    """One side (numerator or denominator) of an entry: what it is, its unit, its samples and summary."""
    mean, se, n = mean_se(samples)
    return {"what": what, "unit": unit, "mean": mean, "se": se, "n": n,
            "samples": [float(s) for s in samples], **extra}


def entry(numerator: dict, denominator: dict, target: float | None, direction: str = ">=", note: str = "",
          paired: bool = False) -> dict:
    """A bench.json entry: the ratio of two sides measured in one run, its band, and the verdict.

    ``paired``: sample i of both sides comes from the same round (paired_ratio_interval); else the sides
    are treated as independent (ratio_interval).

    ``meets_target`` compares the point ratio with ``target`` (``direction`` ">=" or "<="); null when the
    entry is reported only (``target`` None) or the ratio is not finite."""
    if paired:
        r, (low, high) = paired_ratio_interval(numerator["samples"], denominator["samples"])
    else:
        r, (low, high) = ratio_interval(numerator["mean"], numerator["se"], numerator["n"],
                                        denominator["mean"], denominator["se"], denominator["n"])
    meets = None
    if target is not None and math.isfinite(r):
        meets = bool(r >= target) if direction == ">=" else bool(r <= target)
    return {"ratio": r, "ci95": [low, high], "interval": "paired" if paired else "independent", "target": target,
            "direction": direction if target is not None else None,
            "meets_target": meets, "numerator": numerator, "denominator": denominator, "note": note}


def finite_or_none(value):
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        return finite_or_none(value.item())
    return value
