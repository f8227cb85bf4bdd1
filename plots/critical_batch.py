"""The critical batch of each optimizer: how far the batch can grow before steps stop halving when it doubles.

Two readings, from the steps each run took to reach a target top-1 at several global batches:

- **The fit** (McCandlish, Kaplan, Amodei et al., arXiv 1812.06162, eq. 2.11): steps S and examples E = B S
  trade off as (S / S_min - 1)(E / E_min - 1) = 1, that is S(B) = S_min + E_min / B: a linear least squares
  in 1 / B. Steps vary over orders of magnitude across batches, so the residuals are relative: per batch B_b
  with mean steps S_b (over the seeds of one configuration), minimise sum_b ((S_b - S_min - E_min / B_b) /
  S_b)^2 with S_min, E_min >= 0. B_crit = E_min / S_min: the batch at which a step costs twice the minimum
  steps and twice the minimum examples (inf when S_min = 0: perfect scaling over every batch measured).
- **The 20 % rule** (model-free; Zhang et al., arXiv 2410.21676): relative to the smallest batch B0 with
  steps S0, perfect scaling needs S0 B0 / B steps; B_20 is the smallest batch where S(B) > 1.2 S0 B0 / B,
  with log(S B / (S0 B0)) interpolated linearly in log B between the two batches around the crossing
  (inf when no batch measured exceeds it).

Intervals: a bootstrap over seeds (resample the seeds of each batch with replacement, refit; ``DRAWS`` draws,
percentile interval at 95 %, seeded so a figure redraws alike). The resampled means' deviations are scaled
by sqrt(n / (n - 1)) (n seeds): a plain bootstrap's spread is the ddof=0 one, too narrow for 3 to 5 seeds.
A batch enters only when every seed of its configuration reached the target (a mean of the others would be
biased low); a series needs MIN_BATCHES (3) batches.

Which steps: one target for every run, re-evaluated from each run's history (its evaluation rows carry top-1
at their step): the first evaluation whose top-1 reaches it. ``target_top1`` is outside the run id, so a study
whose target changed after some runs finished holds rows written under the old one, and their stored
``steps_to_target`` answer another question; reading them beside the others would mix targets. The target is
the one asked (plots.report: the study's), else the runs' ``target_top1`` (``runs_target``: several, the
latest started run's, said in ``mixed_targets``), else 90 % of the best configuration's mean final top-1
(rounded down to 0.01), the rule of plots.figures.steps_to_target. A run without evaluation rows in the history
(none given, or its file unreadable) keeps its stored ``steps_to_target`` only when it was written under that
same target; else it did not reach it (NaN).

Which runs, per batch: McCandlish's S(B) is the fewest steps at batch B under the best tuning, and Shallue et
al. (arXiv 1811.03600) tune at every batch. So a series is an optimizer with its untuned setting (the runs'
``setting``: what differs apart from the tuning fields, e.g. bn_momentum), and at each batch its steps are
those of the *tuned choice*: among that batch's groups of seeds that differ only in epoch budget (the
schedule's warm-up and decays are fractions of it) and tuning fields (``label``, e.g. base_lr), the group
whose every seed reached the target with the fewest mean steps (``chosen`` says which, per batch). A study
whose budgets grow with the batch (larger batches need more epochs to reach the target) is thus one fit; a
study with one budget at every batch is the plain fit. The choice is made on the same seeds it then reports,
so with several candidates per batch the steps lean low (the bootstrap does not redo the choice); a study that
wants it unbiased runs the chosen settings again on new seeds.

``comparison``: B_crit of each NLCG series over that of the best baseline (the baseline series with the
largest B_crit: the hardest one to out-scale), the ratio's bootstrap interval (independent draws of the
two), and a verdict: ``holds`` if the interval is above 1, ``fails`` if below, else ``inconclusive``.

Figures (DataFrames in, a Figure out, like plots.figures, whose panel grid and colours they share):
``critical_batch`` and ``noise_scale``; ``FIGURES`` (plots.report draws them beside plots.figures').
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from plots import stats
from plots.figures import _empty, _grid, color

DRAWS = 2000
LEVEL = 0.95
EXCESS = 1.2  # the 20 % rule
MIN_BATCHES = 3


# ---- the fit and the rule ----------------------------------------------------------------------------------


def fit(batches, steps) -> tuple[np.ndarray, np.ndarray]:
    """(S_min, E_min) of S = S_min + E_min / B, relative residuals, both >= 0. ``steps`` is [batches] or
    [draws, batches] (a fit per row: the bootstrap refits thousands of times, so this is a closed-form
    two-parameter non-negative least squares rather than one scipy call per draw)."""
    b = np.asarray(batches, dtype=float)
    s = np.atleast_2d(np.asarray(steps, dtype=float))
    a0, a1 = 1 / s, 1 / (b * s)  # each row of the design, divided by its observation: target 1
    m00, m01, m11 = (a0 * a0).sum(1), (a0 * a1).sum(1), (a1 * a1).sum(1)
    v0, v1 = a0.sum(1), a1.sum(1)
    det = m00 * m11 - m01 ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        free = np.stack([(m11 * v0 - m01 * v1) / det, (m00 * v1 - m01 * v0) / det], axis=1)
    # on the boundary when the free optimum is not >= 0: the better of one parameter alone (a convex problem)
    only0, only1 = np.stack([v0 / m00, 0 * v0], 1), np.stack([0 * v1, v1 / m11], 1)

    def cost(t):
        return -2 * (t[:, 0] * v0 + t[:, 1] * v1) + t[:, 0] ** 2 * m00 + 2 * t[:, 0] * t[:, 1] * m01 \
            + t[:, 1] ** 2 * m11

    edge = np.where((cost(only0) <= cost(only1))[:, None], only0, only1)
    ok = (det > 0) & (free >= 0).all(1)
    theta = np.where(ok[:, None], free, edge)
    return (theta[:, 0], theta[:, 1]) if np.ndim(steps) == 2 else (theta[0, 0], theta[0, 1])


def b_crit(s_min, e_min):
    """E_min / S_min: inf where S_min = 0 < E_min, NaN where both are 0."""
    s_min, e_min = np.asarray(s_min, dtype=float), np.asarray(e_min, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(s_min > 0, e_min / np.where(s_min > 0, s_min, 1), np.where(e_min > 0, np.inf, np.nan))
    return out[()] if out.ndim == 0 else out


def twenty_percent(batches, steps, excess: float = EXCESS):
    """The smallest batch where steps exceed perfect scaling from the smallest batch by ``excess``
    (interpolated in log B); inf if none does. ``steps`` as in ``fit``."""
    b = np.asarray(batches, dtype=float)
    s = np.atleast_2d(np.asarray(steps, dtype=float))
    r = np.log(s * b / (s[:, :1] * b[0]))  # log of steps over perfect scaling's
    t = math.log(excess)
    out = np.full(len(s), np.inf)
    for i, row in enumerate(r):
        above = np.nonzero(row > t)[0]
        if len(above):
            j = above[0]  # >= 1: row[0] is 0
            lo, hi = np.log(b[j - 1]), np.log(b[j])
            out[i] = math.exp(lo + (t - row[j - 1]) * (hi - lo) / (row[j] - row[j - 1]))
    return out if np.ndim(steps) == 2 else out[0]


def _interval(draws) -> tuple[float, float]:
    """Percentile interval without interpolation (draws may be inf); NaN draws are left out."""
    d = np.asarray(draws, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan, math.nan
    q = (1 - LEVEL) / 2
    return (float(np.quantile(d, q, method="inverted_cdf")), float(np.quantile(d, 1 - q, method="inverted_cdf")))


def bootstrap(points: dict, draws: int = DRAWS, seed: int = 0) -> dict:
    """``points``: {batch: steps of each seed}. The fit, B_crit and B_20 with their bootstrap intervals, and
    the B_crit draws (for ratios). Seeds are resampled within each batch."""
    batches = np.array(sorted(points), dtype=float)
    seeds = [np.asarray(points[b], dtype=float) for b in sorted(points)]
    means = np.array([s.mean() for s in seeds])
    rng = np.random.default_rng(seed)
    # a resampled mean's spread is sqrt((n - 1) / n) of the mean's standard error: rescaled back, so that
    # 3 to 5 seeds do not give intervals too narrow (one seed gives none: no spread to resample)
    resampled = np.stack([m + math.sqrt(len(s) / max(1, len(s) - 1))
                          * (s[rng.integers(0, len(s), size=(draws, len(s)))].mean(1) - m)
                          for s, m in zip(seeds, means, strict=True)], axis=1)
    s_min, e_min = fit(batches, means)
    d_smin, d_emin = fit(batches, resampled)
    d_crit, d_20 = b_crit(d_smin, d_emin), twenty_percent(batches, resampled)
    crit = float(b_crit(s_min, e_min))
    return {"batches": batches.astype(int).tolist(), "mean_steps": means.tolist(), "s_min": float(s_min),
            "e_min": float(e_min), "b_crit": crit, "b_crit_ci": _interval(d_crit),
            "b_20": float(twenty_percent(batches, means)), "b_20_ci": _interval(d_20),
            "extrapolated": not batches[0] <= crit <= batches[-1], "b_crit_draws": d_crit}


# ---- from the runs table -----------------------------------------------------------------------------------


def targets(runs: pd.DataFrame) -> dict:
    """{target_top1: finished runs written under it} of the runs that set one (> 0)."""
    prep = stats.finished(runs) if len(runs) else runs
    if "target_top1" not in prep:
        return {}
    set_ = prep.target_top1.astype(float)
    return {float(t): int(n) for t, n in set_[set_ > 0].value_counts().sort_index().items()}


def runs_target(runs: pd.DataFrame) -> float | None:
    """The runs' own target: their one ``target_top1`` (> 0), or with several (the study's target changed
    between runs) the latest started finished run's, the study's most recent; None when no run set one."""
    found = targets(runs)
    if len(found) <= 1:
        return next(iter(found), None)
    done = stats.finished(runs)
    done = done[done.target_top1.astype(float) > 0]
    if "started_at" in done:
        done = done.sort_values("started_at", kind="stable", na_position="first")
    return float(done.target_top1.iloc[-1])


def steps_to_target(runs: pd.DataFrame, history: pd.DataFrame | None = None, target: float | None = None):
    """(finished runs with ``config_id``, ``budget`` and ``reach``: steps to the target, NaN if not reached;
    the target, None if there is none). One target for every run (module docstring): ``target``, else
    ``runs_target``, else 90 % of the best mean final top-1; steps from each run's evaluation rows in
    ``history``, or its stored ``steps_to_target`` if it has none there and was written under that target."""
    prep = stats.prepare(runs)
    if prep.empty:
        return prep.assign(reach=np.nan), target
    has_evals = history is not None and "top1" in history and history.top1.notna().any()
    if target is None:
        target = runs_target(prep)
    if target is None:
        best = stats.summarize(prep).top1_mean.max()
        if not has_evals or not np.isfinite(best):  # nothing to read, or every configuration had a diverged seed
            return prep.assign(reach=np.nan), None
        target = math.floor(90 * best) / 100
    reach = pd.Series(np.nan, index=prep.index)
    evaluated = pd.Series(False, index=prep.index)
    if has_evals:
        evals = history[history.run_id.isin(prep.run_id) & history.top1.notna()]
        first = evals[evals.top1 >= target].groupby("run_id").step.min()
        reach = pd.Series(first.reindex(prep.run_id.to_numpy()).to_numpy(dtype=float), index=prep.index)
        evaluated = prep.run_id.isin(set(evals.run_id))
    if "steps_to_target" in prep and "target_top1" in prep:  # no evaluation rows: the stored steps, same target only
        same = np.isclose(prep.target_top1.astype(float), target) & ~evaluated
        reach = reach.where(~same, prep.steps_to_target.astype(float))
    return prep.assign(reach=reach.to_numpy(dtype=float)), target


def _tuned(at: pd.DataFrame):
    """Of one series' runs at one batch: (seeds' steps, budget, label) of the group (same budget and tuning
    label) whose every seed reached the target with the fewest mean steps; None if no group's every seed did."""
    best = None
    for (budget, label), g in at.groupby(["budget", "label"], sort=True):
        if g.reach.notna().all() and (best is None or g.reach.mean() < best[0].mean()):
            best = (g.reach.to_numpy(dtype=float), float(budget), label)
    return best


def _choice(budget: float, label: str) -> str:
    return f"{budget:g} ep" + (f", {label}" if label else "")


def fits(runs: pd.DataFrame, history: pd.DataFrame | None = None, target: float | None = None,
         draws: int = DRAWS) -> pd.DataFrame:
    """One row per series (optimizer, untuned ``setting``) with at least MIN_BATCHES batches reached, each
    batch's steps those of its tuned choice (module docstring): ``bootstrap``'s fields, ``chosen`` ({batch:
    "budget ep[, tuning label]"}), ``left_out`` (batches where no group had every seed reach the target),
    ``b_simple`` (median of the series' runs' last noise_scale; NaN without one) and ``b_simple_range``
    (min, max), ``target`` (the one target every series was read at, ``steps_to_target``)."""
    prep, used = steps_to_target(runs, history, target)
    rows = []
    if prep.empty:
        return pd.DataFrame(rows)
    for (opt, setting), g in prep.groupby(["optimizer", "setting"], sort=True):
        points, chosen, left_out = {}, {}, []
        for batch, at in g.groupby("global_batch"):
            best = _tuned(at)
            if best is None:
                left_out.append(int(batch))
            else:
                points[int(batch)], chosen[int(batch)] = best[0], _choice(best[1], best[2])
        if len(points) < MIN_BATCHES:
            continue
        ns = g.noise_scale.dropna().astype(float) if "noise_scale" in g else pd.Series(dtype=float)
        seed = zlib.crc32(f"{opt}|{setting}".encode())  # its own draws: series are independent
        rows.append({"optimizer": opt, "label": setting, "name": stats.series_name(opt, setting),
                     **bootstrap(points, draws, seed), "chosen": chosen, "left_out": left_out, "target": used,
                     "b_simple": float(ns.median()) if len(ns) else math.nan,
                     "b_simple_range": (float(ns.min()), float(ns.max())) if len(ns) else (math.nan, math.nan)})
    return pd.DataFrame(rows)


def _verdict(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    return "holds" if low > 1 else "fails" if high < 1 else "inconclusive"


def comparison(fitted: pd.DataFrame, sides: tuple | None = None) -> list[dict]:
    """Per series of a method under test: its B_crit over the best baseline series' (the largest B_crit), the
    ratio's bootstrap interval and the verdict (``holds``: interval above 1). ``sides``: (the methods, the
    baselines), as the claims have them (plots.claims); default: by the optimizers' roles (``stats.roles``)."""
    out = []
    if fitted.empty:
        return out
    if sides is None:
        roles = stats.roles(fitted)
        sides = (stats.methods(roles), stats.baselines(roles))
    methods, baselines = sides
    base = fitted[fitted.optimizer.isin(baselines) & fitted.b_crit.notna()]
    if base.empty:
        return out
    best = base.loc[base.b_crit.idxmax()]
    for _, nl in fitted[fitted.optimizer.isin(methods)].iterrows():
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = nl.b_crit_draws / best.b_crit_draws
            point = np.float64(nl.b_crit) / np.float64(best.b_crit)  # 0 / 0, x / 0: NaN, inf, no error
        low, high = _interval(ratio)
        out.append({"nlcg": nl["name"], "baseline": best["name"], "b_crit_nlcg": nl.b_crit,
                    "b_crit_baseline": best.b_crit, "ratio": float(point), "ratio_low": low, "ratio_high": high,
                    "verdict": _verdict(low, high), "extrapolated": bool(nl.extrapolated or best.extrapolated)})
    return out


START = 0.1  # "the start of training": the estimates logged in a run's first 10 % of steps


def noise_mapping(runs: pd.DataFrame, history: pd.DataFrame | None) -> dict | None:
    """The stand-in in noise-scale terms: B_simple at the start (median over runs of the estimates logged in each
    run's first START of its steps) and at the end (median of the runs' last ``noise_scale``), over every run
    with an estimate and per optimizer, and each global batch as a multiple of both. None without estimates
    (every run with one batch size, or written before the estimator existed)."""
    prep = stats.prepare(runs)
    if history is None or "noise_scale" not in history or prep.empty:
        return None
    h = history[history.run_id.isin(prep.run_id) & (history.noise_scale.astype(float) > 0)]
    if h.empty:
        return None
    last_step = h.groupby("run_id").step.transform("max")
    early = h[h.step <= np.maximum(START * last_step, h.groupby("run_id").step.transform("min"))]
    start_of = early.groupby("run_id").noise_scale.median()
    end_of = prep.set_index("run_id").noise_scale.astype(float) if "noise_scale" in prep else pd.Series(dtype=float)
    end_of = end_of[end_of > 0]
    opt_of = prep.set_index("run_id").optimizer

    def both(ids) -> dict:
        st, en = start_of.reindex(ids).dropna(), end_of.reindex(ids).dropna()
        return {"start": float(st.median()) if len(st) else math.nan,
                "end": float(en.median()) if len(en) else math.nan, "n_runs": int(len(set(st.index) | set(en.index)))}

    ids = sorted(set(start_of.index) | set(end_of.index))
    overall = both(ids)
    return {"start_fraction": START, **overall,
            "by_optimizer": {opt: both([i for i in ids if opt_of[i] == opt]) for opt in sorted(opt_of[ids].unique())},
            "batches": [{"global_batch": int(b), "over_start": b / overall["start"], "over_end": b / overall["end"]}
                        for b in sorted(prep.global_batch.unique())]}


# ---- figures -----------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else "-" if math.isnan(x) else f"{x:.0f}"


def critical_batch(runs: pd.DataFrame, history: pd.DataFrame | None = None, target: float | None = None) -> Figure:
    """Left: steps against examples (log-log) of every series with MIN_BATCHES batches reached: the mean over
    seeds of each batch's tuned choice (labelled with its budget when a series' choices differ), the fitted
    hyperbola (S / S_min - 1)(E / E_min - 1) = 1 and its B_crit (star: S = 2 S_min, E = 2 E_min). Right: per
    series B_crit and B_20 with their 95 % bootstrap intervals over seeds, beside B_simple (the runs' last
    noise scale: median, bar min to max)."""
    fitted = fits(runs, history, target)
    if fitted.empty:
        return _empty(f"no series reached the target at {MIN_BATCHES} batches or more\n"
                      "(set target_top1, or evaluate during the runs)")
    fig, (ax, summary) = _grid(2, width=5.5)
    for _, f in fitted.iterrows():
        c = color(f.optimizer)
        b, s = np.array(f.batches, dtype=float), np.array(f.mean_steps)
        ax.plot(b * s, s, "o", color=c)
        if len(set(f.chosen.values())) > 1:  # say which budget / tuning each point is
            for bb, ss in zip(b, s, strict=True):
                ax.annotate(f.chosen[int(bb)], (bb * ss, ss), fontsize=5, color=c, xytext=(3, 3),
                            textcoords="offset points")
        grid = np.geomspace(b[0] / 2, b[-1] * 2, 100)
        ax.plot(grid * (f.s_min + f.e_min / grid), f.s_min + f.e_min / grid, color=c, lw=1.5,
                label=f"{f['name']}: B_crit {_fmt(f.b_crit)} [{_fmt(f.b_crit_ci[0])}, {_fmt(f.b_crit_ci[1])}]")
        if np.isfinite(f.b_crit) and f.b_crit > 0:
            ax.plot([2 * f.e_min], [2 * f.s_min], "*", ms=12, color=c, mec="black", mew=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a 1.5-decade axis overlap
    ax.set_xlabel("examples to the target (E = B x steps)")
    ax.set_ylabel("steps to the target (mean over seeds)")
    ax.set_title("S = S_min + E_min / B, each batch at its tuned choice\nstar: B_crit = E_min / S_min", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = summary
    names = list(fitted.name)
    x = np.arange(len(fitted))
    for i, (_, f) in enumerate(fitted.iterrows()):
        for dx, value, (low, high), marker in [(-0.2, f.b_crit, f.b_crit_ci, "o"), (0.0, f.b_20, f.b_20_ci, "s"),
                                               (0.2, f.b_simple, f.b_simple_range, "D")]:
            if not np.isfinite(value):
                continue
            top = high if np.isfinite(high) else value * 4  # an open interval: an arrow upwards
            ax.errorbar([i + dx], [value], yerr=[[value - low], [top - value]], fmt=marker, color=color(f.optimizer),
                        capsize=3, uplims=not np.isfinite(high))
    lo, hi = min(min(b) for b in fitted.batches), max(max(b) for b in fitted.batches)
    ax.axhspan(lo, hi, color="gray", alpha=0.12, label="batches measured")
    for marker, what in [("o", "B_crit (fit)"), ("s", "B_20 (20 % rule)"), ("D", "B_simple (noise scale)")]:
        ax.plot([], [], marker, color="black", label=what)  # legend keys in black: colours are the optimizers
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("global batch")
    ax.set_title("bars: 95 % bootstrap over seeds;\nB_simple: median of the runs, bar min to max", fontsize=9)
    ax.grid(alpha=0.3, which="both", axis="y")
    ax.legend(fontsize=7)
    used = fitted.target.iloc[0]
    mixed = targets(runs)
    note = f"; runs written under target_top1 {', '.join(f'{t:g}' for t in mixed)}" if len(mixed) > 1 else ""
    fig.suptitle(f"Critical batch (steps to test top-1 >= {used:g}, from each run's evaluations{note})", fontsize=10)
    return fig


def noise_scale(runs: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """B_simple (the history's smoothed ``noise_scale``) against epochs, one panel per global batch, one line per
    run coloured by optimizer (B_simple is undefined, NaN, for runs with one batch size)."""
    prep = stats.prepare(runs)
    h = history[history.run_id.isin(prep.run_id)] if "noise_scale" in history else history.iloc[:0]
    h = h[np.isfinite(h.noise_scale.astype(float)) & (h.noise_scale.astype(float) > 0)] if len(h) else h
    if h.empty:
        return _empty("no noise-scale estimates: runs with one batch size (one worker, no accumulation)\n"
                      "or written before the estimator existed")
    batch_of = dict(zip(prep.run_id, prep.global_batch, strict=True))
    name_of = dict(zip(prep.run_id, [stats.series_name(o, lab) for o, lab in zip(prep.optimizer, prep.label,
                                                                                  strict=True)], strict=True))
    opt_of = dict(zip(prep.run_id, prep.optimizer, strict=True))
    batches = sorted({batch_of[r] for r in h.run_id.unique()})
    fig, axes = _grid(len(batches), sharey=True)  # one scale: B_simple across batches compares at a glance
    for ax, batch in zip(axes, batches, strict=False):
        seen = set()
        for rid, g in h[h.run_id.map(batch_of) == batch].groupby("run_id", sort=True):
            g = g.sort_values("step")
            name = name_of[rid]
            ax.plot(g.epoch, g.noise_scale, color=color(opt_of[rid]), lw=1.2, alpha=0.8,
                    label=None if name in seen else name)
            seen.add(name)
        ax.axhline(batch, color="black", ls=":", lw=1, label=f"this global batch ({batch})")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("B_simple = tr(Sigma) / |G|^2")
        ax.set_title(f"global batch {batch}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("Gradient noise scale B_simple during training (one line per run; EMA 0.9 per logged step)",
                 fontsize=10)
    return fig


FIGURES = {"critical_batch": critical_batch, "noise_scale": noise_scale}
