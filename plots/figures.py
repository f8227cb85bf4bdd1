"""The paper's figures, one function each: DataFrames in (``load_runs`` / ``load_history`` /
``experiments/paper_reference.csv``), a matplotlib Figure out. No pyplot state, no file I/O here.

Small datasets cannot hold the paper's batches, so a profile's batches stand for the paper's batches with
the same number of steps per epoch: ours x (paper train size / our train size). ``top1_vs_batch`` draws
the paper's published numbers at that position; its tick labels give both batches.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

FINISHED = ("complete", "diverged")
# training-set sizes, for the steps-per-epoch mapping between a profile and the paper
TRAIN_SIZES = {"fashion_mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}
_COLORS = {"nlcg-fr": "tab:red", "nlcg-pr": "tab:orange", "rmsprop": "tab:blue", "momentum": "tab:green",
           "sgd": "tab:gray", "lars": "tab:purple", "lamb": "tab:brown"}
_ORDER = ["nlcg-fr", "nlcg-pr", "rmsprop", "momentum", "sgd", "lars", "lamb"]


def color(optimizer: str) -> str:
    return _COLORS.get(optimizer, "black")


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that ended as a result (complete or diverged), the latest row of each run_id."""
    done = runs[runs.status.isin(FINISHED)]
    return done.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def train_size(runs: pd.DataFrame) -> int:
    """The training-set size of the runs' dataset (one dataset per sweep)."""
    datasets = runs.dataset.unique()
    if len(datasets) != 1:
        raise ValueError(f"runs of one dataset expected; got {', '.join(map(str, datasets))}")
    if datasets[0] in TRAIN_SIZES:
        return TRAIN_SIZES[datasets[0]]
    return int(json.loads(runs.config.iloc[0])["synthetic_train_size"])


def paper_batches_per_batch(runs: pd.DataFrame, reference: pd.DataFrame) -> float:
    """The paper's batch that one of our batch units stands for: same steps per epoch, so the ratio of the
    training-set sizes (50000 / 60000 for the paper's CIFAR against Fashion-MNIST)."""
    return float(reference.train_size.iloc[0]) / train_size(runs)


def _optimizers(frame: pd.DataFrame) -> list[str]:
    names = list(frame.optimizer.unique())
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def top1_vs_batch(runs: pd.DataFrame, reference: pd.DataFrame | None = None) -> Figure:
    """Final top-1 against the global batch, one line per optimizer (mean over seeds, min-max bars).

    Diverged runs are drawn as crosses at 0. ``reference`` (paper_reference.csv rows of one dataset) is
    drawn dashed at the batch with the same steps per epoch; our tick labels give the paper's batch too.
    """
    runs = finished(runs)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for opt in _optimizers(runs):
        sel = runs[runs.optimizer == opt]
        top1 = sel.top1.where(sel.status == "complete", 0.0)
        g = top1.groupby(sel.global_batch)
        mean, lo, hi = g.mean(), g.min(), g.max()
        ax.errorbar(mean.index, mean.values, yerr=[mean - lo, hi - mean], marker="o", capsize=3,
                    color=color(opt), label=f"{opt} (ours)")
        bad = sel[sel.status == "diverged"]
        ax.scatter(bad.global_batch, np.zeros(len(bad)), marker="x", s=60, color=color(opt), zorder=3)
    scale = 1.0
    if reference is not None and len(reference):
        scale = 1.0 / paper_batches_per_batch(runs, reference)  # paper batch -> our batch
        ref_name = f"paper: {reference.dataset.iloc[0]} {reference.model.iloc[0]}, {reference.epochs.iloc[0]} ep"
        for opt in _optimizers(reference):
            sel = reference[reference.optimizer == opt].sort_values("global_batch")
            ax.plot(sel.global_batch * scale, sel.top1, ls="--", marker=".", color=color(opt), alpha=0.6,
                    label=f"{opt} ({ref_name})")
    ax.set_xscale("log", base=2)
    ours = sorted(runs.global_batch.unique())
    ax.xaxis.set_major_locator(FixedLocator(ours))
    ax.xaxis.set_minor_locator(NullLocator())
    if scale != 1.0:  # each of our batches with the paper's batch it stands for (same steps per epoch)
        ax.xaxis.set_major_formatter(FixedFormatter([f"{b}\n({b / scale:.0f})" for b in ours]))
        what = "global batch (paper's batch with the same steps per epoch)"
    else:
        ax.xaxis.set_major_formatter(FixedFormatter([str(b) for b in ours]))
        what = "global batch"
    ax.set_xlabel(f"{what}; {runs.dataset.iloc[0]}, {runs.model.iloc[0]}" if len(runs) else what)
    ax.set_ylabel("top-1 test accuracy (x: diverged)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    epochs = sorted(runs.epochs.round(2).unique()) if len(runs) else []
    ax.set_title(f"Top-1 against global batch ({', '.join(map(str, epochs))} epochs)")
    return fig


def _panels(runs: pd.DataFrame, title: str):
    batches = sorted(runs.global_batch.unique())
    fig = Figure(figsize=(4.2 * max(1, len(batches)), 3.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(batches)), squeeze=False)[0]
    fig.suptitle(title)
    return fig, list(zip(batches, axes, strict=False))


def _curves(runs, history, x: str, y: str, title: str, xlabel: str, ylabel: str, logy: bool) -> Figure:
    runs = finished(runs)
    rows = history[history.run_id.isin(runs.run_id) & history[y].notna()] if y in history else history.iloc[:0]
    fig, panels = _panels(runs, title)
    for batch, ax in panels:
        for opt in _optimizers(runs[runs.global_batch == batch]):
            ids = runs[(runs.global_batch == batch) & (runs.optimizer == opt)].run_id
            for k, rid in enumerate(ids):  # one line per seed, labelled once
                h = rows[rows.run_id == rid].sort_values("step")
                ax.plot(h[x], h[y], color=color(opt), lw=1, label=opt if k == 0 else None)
        ax.set_title(f"global batch {batch}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def loss_vs_epoch(runs: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Training loss (global mean of each logged step) against epochs, one panel per global batch."""
    return _curves(runs, history, "epoch", "loss", "Training loss", "epoch", "training loss", logy=True)


def wall_time(runs: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Training loss against training wall time (evaluation excluded), one panel per global batch."""
    return _curves(runs, history, "time_s", "loss", "Training loss against wall time", "training time (s)",
                   "training loss", logy=True)


def top1_vs_epochs(runs: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Test top-1 at each evaluation against epochs, one panel per global batch."""
    return _curves(runs, history, "epoch", "top1", "Test top-1 during training", "epoch", "top-1", logy=False)


def first_reach(runs: pd.DataFrame, history: pd.DataFrame, target: float) -> pd.Series:
    """Per run_id: the first evaluated step whose top-1 reaches ``target`` (NaN if none did)."""
    evals = history[history.run_id.isin(runs.run_id) & history.top1.notna()] if "top1" in history else history
    hit = evals[evals.top1 >= target].groupby("run_id").step.min()
    return hit.reindex(runs.run_id.to_numpy())


def steps_to_target(runs: pd.DataFrame, history: pd.DataFrame, target: float | None = None) -> Figure:
    """Steps until the test top-1 first reaches ``target``, bars per optimizer and global batch (mean over
    seeds; hatched up to the budget: not reached). The target is, in order: the argument, the runs'
    ``target_top1``, or 90 % of the best final top-1 in ``runs`` (rounded down to 0.01)."""
    runs = finished(runs)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    done = runs[runs.status == "complete"]
    if done.empty or "top1" not in history or history.top1.notna().sum() == 0:
        ax.text(0.5, 0.5, "no evaluations to read a target from", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    if target is None:
        set_targets = runs.target_top1[runs.target_top1 > 0]
        target, why = ((float(set_targets.max()), "the runs' target_top1") if len(set_targets) else
                       (np.floor(90 * done.top1.max()) / 100, "90 % of the best final top-1"))
    else:
        why = "given"
    runs = runs.assign(reach=first_reach(runs, history, target).to_numpy())
    batches = sorted(runs.global_batch.unique())
    opts = _optimizers(runs)
    width = 0.8 / len(opts)
    for i, opt in enumerate(opts):
        sel = runs[runs.optimizer == opt].groupby("global_batch")
        reach, budget = sel.reach.mean().reindex(batches), sel.steps.max().reindex(batches)
        reached = reach.notna().to_numpy()
        xs = np.arange(len(batches)) + i * width
        ax.bar(xs[reached], reach[reached], width, color=color(opt), label=opt)
        ax.bar(xs[~reached], budget[~reached], width, color="none", edgecolor=color(opt), hatch="//")
    ax.set_xticks(np.arange(len(batches)) + 0.4 - width / 2, [str(b) for b in batches])
    ax.set_xlabel("global batch")
    ax.set_ylabel("steps (hatched: not reached in the budget)")
    ax.set_title(f"Steps to test top-1 >= {target:g} ({why})")
    ax.legend(fontsize=7)
    return fig


FIGURES = {
    "top1_vs_batch": top1_vs_batch,
    "loss_vs_epoch": loss_vs_epoch,
    "wall_time": wall_time,
    "top1_vs_epochs": top1_vs_epochs,
    "steps_to_target": steps_to_target,
}
