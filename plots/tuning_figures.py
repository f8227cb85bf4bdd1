"""Figures of a quasi-random search (bench.search, issue 27): how the result depends on the tuning budget, and
how the optimizers compare over every (batch, budget) cell at once.

``tuning_curve``: per study, the best validation top-1 among k of its N trials against k (Dahl et al. 2023's
tuning curve): the median and 95 % band over subsets of k trials drawn without replacement (every subset when
there are at most ``subsets`` of them). Infeasible trials (diverged, failed, never finished) have no value; a
subset of infeasible trials only has none either (a gap), and ranks below every value in the quantiles.

``performance_profile``: AlgoPerf's performance profile over the cells (global batch, epoch budget): per cell
each optimizer's measure is the mean test top-1 of its chosen trial over the confirmation seeds, its ratio the
top-1 error over the cell's best error (inf: a diverged confirmation seed, or no chosen trial or no
confirmation), and rho(tau) the fraction of cells whose ratio is at most tau.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from plots import figures, tuning
from plots.tuning import STUDY_KEYS

QUANTILES = (0.5, 0.025, 0.975)  # median, band
TAUS = np.linspace(1.0, 4.0, 301)


def _quantiles(best: np.ndarray) -> list[float]:
    """Median, 2.5 % and 97.5 % (np.quantile, method "linear") of ``best`` where -inf is a subset without a
    value: it ranks lowest, and a quantile that -inf enters with any weight is NaN."""
    finite = best[np.isfinite(best)]
    if not finite.size:
        return [math.nan] * len(QUANTILES)
    floor = float(finite.min())
    q = np.quantile(np.where(np.isfinite(best), best, floor - 1.0), QUANTILES, method="linear")
    return [float(v) if v >= floor - 1e-9 else math.nan for v in q]


def tuning_curve_data(trial_rows: pd.DataFrame, subsets: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per study (tuning.trials' rows) and k = 1..n (its trials with a row): the best val_top1 among k trials
    drawn without replacement, its median, low (2.5 %) and high (97.5 %) over subsets; every subset when
    C(n, k) <= ``subsets``, else ``subsets`` of them drawn by numpy default_rng(``seed``) (one stream per study)."""
    if subsets < 1:
        raise ValueError(f"subsets = {subsets} must be >= 1")
    cols = [*STUDY_KEYS, "k", "median", "low", "high"]
    out = []
    for (opt, batch, budget), g in trial_rows.groupby(STUDY_KEYS, sort=True):
        values = np.where(g.feasible.astype(bool), g.val_top1.astype(float), -np.inf)
        values = np.where(np.isnan(values), -np.inf, values)
        n = len(values)
        rng = np.random.default_rng(seed)
        for k in range(1, n + 1):
            if math.comb(n, k) <= subsets:
                best = np.array([values[list(c)].max() for c in itertools.combinations(range(n), k)])
            else:
                picks = np.argsort(rng.random((subsets, n)), axis=1)[:, :k]
                best = values[picks].max(axis=1)
            median, low, high = _quantiles(best)
            out.append({"optimizer": opt, "global_batch": int(batch), "epochs": float(budget), "k": k,
                        "median": median, "low": low, "high": high})
    return pd.DataFrame(out, columns=cols)


def _trial_counts(search: dict) -> str:
    counts = dict(search.get("trials") or {})
    if len(set(counts.values())) == 1:
        return str(next(iter(counts.values())))
    return "N (" + ", ".join(f"{o} {n}" for o, n in sorted(counts.items())) + ")"


def tuning_curve(runs: pd.DataFrame, study: dict | None) -> Figure:
    """One panel per (global batch, epoch budget): the best validation top-1 found against the number of trials,
    per optimizer its median (line) and 95 % band over random subsets of its trials (``tuning_curve_data``)."""
    search = tuning.declared(study)
    if search is None:
        return figures._empty("not a search: the folder's study has no [search] (a grid has no trials)")
    data = tuning_curve_data(tuning.trials(runs, study))
    if data.empty:
        return figures._empty("no trials of the search have finished")
    cells = sorted({(int(b), float(e)) for b, e in zip(data.global_batch, data.epochs, strict=True)})
    fig, axes = figures._grid(len(cells))
    for ax, (batch, budget) in zip(axes, cells, strict=True):
        here = data[(data.global_batch == batch) & (data.epochs == budget)]
        for opt in sorted(here.optimizer.unique(), key=figures._order):
            rows = here[here.optimizer == opt].sort_values("k")
            c = figures.color(opt)
            ax.plot(rows.k, rows["median"], color=c, marker=".", label=f"{opt} ({len(rows)} trials)")
            ax.fill_between(rows.k, rows.low, rows.high, color=c, alpha=0.2, lw=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"global batch {batch}, {budget:g} epochs")
        ax.set_xlabel("number of trials")
        ax.set_ylabel("best validation top-1 found")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Best validation top-1 against the tuning budget ({search.get('sampler', '?')} search)\n"
                 f"median and 95 % band over random subsets of the {_trial_counts(search)} trials (every subset "
                 "when they are few); a gap: subsets of infeasible trials only", fontsize=9)
    return fig


def performance_ratios(runs: pd.DataFrame, study: dict | None) -> pd.DataFrame:
    """Per cell (global batch, epochs) and optimizer (the search's, and any chosen): ``top1_mean``, the mean test
    top-1 of the chosen trial over its confirmation seeds (NaN: a diverged seed, no chosen trial or no
    confirmation), and ``ratio``, its top-1 error over the cell's best error (inf where top1_mean is NaN)."""
    cols = ["global_batch", "epochs", "optimizer", "top1_mean", "ratio"]
    search = tuning.declared(study)
    if search is None:
        return pd.DataFrame(columns=cols)
    picked = tuning.chosen(tuning.trials(runs, study), study)
    if picked.empty:
        return pd.DataFrame(columns=cols)
    confirmed = tuning.confirmations(runs, study, picked)
    names = sorted({*(search.get("trials") or {}), *picked.optimizer}, key=figures._order)
    cells = sorted({(int(b), float(e)) for b, e in zip(picked.global_batch, picked.epochs, strict=True)})
    out = []
    for batch, budget in cells:
        means = {}
        for opt in names:
            pick = picked[(picked.optimizer == opt) & (picked.global_batch == batch) & (picked.epochs == budget)]
            cid = pick.config_id.iloc[0] if len(pick) else None
            seeds = confirmed[confirmed.config_id == cid] if cid is not None else confirmed.iloc[:0]
            ok = len(seeds) and not seeds.diverged.any()
            means[opt] = float(seeds.top1.astype(float).mean()) if ok else math.nan
        errors = {o: 1.0 - m for o, m in means.items() if not math.isnan(m)}
        best = min(errors.values()) if errors else math.nan
        for opt, mean in means.items():
            if math.isnan(mean):
                ratio = math.inf
            elif best > 0:
                ratio = errors[opt] / best
            else:  # the best is perfect: only the perfect are within any tau
                ratio = 1.0 if errors[opt] == 0 else math.inf
            out.append({"global_batch": batch, "epochs": budget, "optimizer": opt, "top1_mean": mean, "ratio": ratio})
    return pd.DataFrame(out, columns=cols)


def performance_profile_data(runs: pd.DataFrame, study: dict | None, taus=None) -> pd.DataFrame:
    """Per optimizer and tau (default TAUS: 1 to 4): rho, the fraction of cells whose ratio is <= tau."""
    taus = TAUS if taus is None else np.asarray(taus, dtype=float)
    ratios = performance_ratios(runs, study)
    out = []
    for opt in ratios.optimizer.unique():
        r = ratios.ratio[ratios.optimizer == opt].to_numpy(dtype=float)
        out += [{"optimizer": opt, "tau": float(t), "rho": float((r <= t).mean())} for t in taus]
    return pd.DataFrame(out, columns=["optimizer", "tau", "rho"])


def performance_profile(runs: pd.DataFrame, study: dict | None) -> Figure:
    """AlgoPerf's performance profile over the (global batch, epoch budget) cells: rho(tau) per optimizer."""
    if tuning.declared(study) is None:
        return figures._empty("not a search: the folder's study has no [search] (no chosen trials to profile)")
    ratios = performance_ratios(runs, study)
    if ratios.empty:
        return figures._empty("no trials of the search have finished")
    data = performance_profile_data(runs, study)
    n_cells = len(ratios[["global_batch", "epochs"]].drop_duplicates())
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for opt in ratios.optimizer.unique():
        rows = data[data.optimizer == opt]
        ax.step(rows.tau, rows.rho, where="post", color=figures.color(opt), lw=1.8, label=opt)
    ax.set_xlim(1.0, 4.0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau (top-1 error over the cell's best)")
    ax.set_ylabel("fraction of cells with ratio <= tau")
    ax.text(0.98, 0.03, f"{n_cells} cell(s): (global batch, epoch budget)", transform=ax.transAxes, ha="right",
            fontsize=8, gid="cells")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("Performance profile over the cells (AlgoPerf)\nmeasure: the chosen trial's mean test top-1 over "
                 "the confirmation seeds;\na diverged seed, no chosen trial or no confirmation: never within tau",
                 fontsize=9)
    return fig


FIGURES = {"tuning_curve": tuning_curve, "performance_profile": performance_profile}
