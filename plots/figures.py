"""The paper's figures, one function each: DataFrames in (``load_runs`` / ``load_history`` /
``experiments/paper_reference.csv``), a matplotlib Figure out. No pyplot state, no file I/O here.

Every figure averages over the seeds of ONE configuration only (``stats.prepare``: every training field
but the seed); configurations that differ at the same point are separate series, labelled by what differs
("momentum, base_lr=0.2"). Means carry 95 % Student t intervals over seeds; one seed gets no interval
(hollow marker); a configuration with a diverged seed gets no mean and an x at the bottom with the count.

Small datasets cannot hold the paper's batches, so a profile's batches stand for the paper's batches with
the same number of steps per epoch: ours x (paper train size / our train size). ``top1_vs_batch`` draws
the paper's published numbers at that position; its tick labels give both batches.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from plots import stats
from plots.stats import TRAIN_SIZES, finished, train_size  # noqa: F401  (re-exported for notebooks)

# Colours by role: the methods under test from warm colours, the baselines from the others, each in turn (name
# order within a role); beyond them, tab20's. No optimizer is named: a plug-in is drawn like a built-in.
METHOD_COLORS = ("tab:red", "tab:orange", "tab:pink", "tab:olive")
BASELINE_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:gray", "tab:cyan")
MORE_COLORS = tuple(matplotlib.colormaps["tab20b"].colors) + tuple(matplotlib.colormaps["tab20c"].colors)
_PALETTE: dict[str, str] = {}  # optimizer -> colour, as ``use_roles`` assigned them (a report's folder)
_ORDER: list[str] = []  # methods first, then baselines: the legend's order
_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]  # further configurations of one optimizer
PAPER_STUDIES = {"cifar100": "CIFAR-100 ResNet-32 (200 epochs)", "imagenet": "ImageNet ResNet-50 (90 epochs)"}
PAPER_CLAIM_LINES = {"imagenet": (65536, "paper's claim: > 10 points at batch > 65k")}
CAPTION = ("mean over the seeds of one configuration, bars: 95 % Student t over seeds\n"
           "hollow: 1 seed, no interval; x: a configuration with diverged seeds (k/n)")


def use_roles(roles: dict[str, str]) -> None:
    """Give every optimizer of ``roles`` ({name: "method" or "baseline"}: plots.stats.roles) its colour and its
    place in the legends, methods first: the same in every figure of one report (plots.report calls this
    before drawing). Colours stay fixed per (role, rank by name) for a given set of optimizers."""
    _PALETTE.clear()
    _ORDER.clear()
    methods = sorted(o for o, r in roles.items() if r == "method")
    baselines = sorted(o for o, r in roles.items() if r != "method")
    spare = iter(MORE_COLORS)
    for names, colors in ((methods, METHOD_COLORS), (baselines, BASELINE_COLORS)):
        for i, name in enumerate(names):
            _PALETTE[name] = colors[i] if i < len(colors) else next(spare, "black")
            _ORDER.append(name)


def color(optimizer: str) -> str:
    """The optimizer's colour: ``use_roles``'s; an optimizer it was not told of gets the next spare colour,
    and keeps it."""
    if optimizer not in _PALETTE:
        used = set(_PALETTE.values())
        _PALETTE[optimizer] = next((c for c in MORE_COLORS if c not in used), "black")
    return _PALETTE[optimizer]


def _order(name: str):
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


def paper_batches_per_batch(runs: pd.DataFrame, reference: pd.DataFrame | None = None,
                            paper_dataset: str | None = None) -> float:
    """The paper's batch that one of our batch units stands for: same steps per epoch, so the ratio of the
    training-set sizes (50000 / 60000 for the paper's CIFAR against Fashion-MNIST)."""
    if reference is not None and len(reference):
        return float(reference.train_size.iloc[0]) / train_size(runs)
    return TRAIN_SIZES[paper_dataset] / train_size(runs)


def _series(summary: pd.DataFrame):
    """(name, colour, (line style, marker), rows) per series: one optimizer and one configuration label."""
    keys = sorted({(o, lab) for o, lab in zip(summary.optimizer, summary.label, strict=True)},
                  key=lambda k: (_order(k[0]), k[1]))
    nth = {}
    for opt, lab in keys:
        nth[opt] = nth.get(opt, -1) + 1
        rows = summary[(summary.optimizer == opt) & (summary.label == lab)]
        yield stats.series_name(opt, lab), color(opt), _STYLES[nth[opt] % len(_STYLES)], rows


def _means(ax, rows: pd.DataFrame, x: str, name: str, c: str, style: tuple, k: int) -> None:
    """One series' means with t bars; hollow markers for one seed; x at 0 with 'k/n div.' for divergence."""
    rows = rows.sort_values(x)
    ax.errorbar(rows[x], rows.top1_mean, yerr=rows.top1_half.fillna(0.0), ls=style[0], marker=style[1], capsize=3,
                color=c, label=name)
    single = rows[(rows.n_seeds == 1) & rows.top1_mean.notna()]
    ax.scatter(single[x], single.top1_mean, marker=style[1], s=36, facecolors="white", edgecolors=c, zorder=3,
               gid="one-seed")
    div = rows[rows.n_diverged > 0]
    ax.scatter(div[x], np.zeros(len(div)), marker="x", s=60, color=c, zorder=3, gid="diverged")
    for _, r in div.iterrows():
        ax.annotate(f"{r.n_diverged}/{r.n_seeds} div.", (r[x], 0.0), xytext=(4, 4 + 9 * k),
                    textcoords="offset points", fontsize=7, color=c)


def _empty(message: str) -> Figure:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def top1_vs_batch(runs: pd.DataFrame, reference: pd.DataFrame | None = None,
                  paper_dataset: str | None = None) -> Figure:
    """Final top-1 against the global batch, one panel per epoch budget run at every batch (else the most
    common budget), one line per optimizer and configuration (mean over seeds, 95 % Student t bars).

    ``reference`` (paper_reference.csv rows of the study ``paper_dataset``) is drawn dashed at the batch
    with the same steps per epoch; our tick labels give the paper's batch too, and the title names the
    study the profile stands for. ImageNet has no published curve: its claim's batch is a dotted line.
    """
    prep = stats.prepare(runs)
    if prep.empty:
        return _empty("no finished runs")
    if paper_dataset is None and reference is not None and len(reference):
        paper_dataset = str(reference.dataset.iloc[0])
    scale = 1.0 / paper_batches_per_batch(prep, reference, paper_dataset) if paper_dataset else 1.0
    budgets = stats.shared_budgets(prep)
    summary = stats.summarize(prep[prep.budget.isin(budgets)])
    fig = Figure(figsize=(7.5 * len(budgets), 4.8), layout="constrained")
    ours = sorted(summary.global_batch.unique())
    for ax, budget in zip(fig.subplots(1, len(budgets), squeeze=False)[0], budgets, strict=True):
        for k, (name, c, ls, rows) in enumerate(_series(summary[summary.epochs == budget])):
            _means(ax, rows, "global_batch", f"{name} (ours)", c, ls, k)
        if reference is not None and len(reference):
            ref_name = f"paper: {reference.dataset.iloc[0]} {reference.model.iloc[0]}, {reference.epochs.iloc[0]} ep"
            for opt in sorted(reference.optimizer.unique(), key=_order):
                sel = reference[reference.optimizer == opt].sort_values("global_batch")
                ax.plot(sel.global_batch * scale, sel.top1, ls="--", marker=".", color=color(opt), alpha=0.6,
                        label=f"{opt} ({ref_name})")
        if paper_dataset in PAPER_CLAIM_LINES:
            at, text = PAPER_CLAIM_LINES[paper_dataset]
            ax.axvline(at * scale, color="black", ls=":", lw=1, label=f"{text} (our {at * scale:.0f})")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ours))
        ax.xaxis.set_minor_locator(NullLocator())
        if scale != 1.0:  # each of our batches with the paper's batch it stands for (same steps per epoch)
            ax.xaxis.set_major_formatter(FixedFormatter([f"{b}\n({b / scale:.0f})" for b in ours]))
            what = "global batch (paper's batch with the same steps per epoch)"
        else:
            ax.xaxis.set_major_formatter(FixedFormatter([str(b) for b in ours]))
            what = "global batch"
        ax.set_xlabel(f"{what}; {prep.dataset.iloc[0]}, {prep.model.iloc[0]}")
        ax.set_ylabel("final top-1 test accuracy (x: diverged)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"Top-1 against global batch, {budget:g} epochs")
    stands = f"\nstands for: {PAPER_STUDIES.get(paper_dataset, paper_dataset)} by steps per epoch" \
        if paper_dataset else ""
    fig.suptitle(f"{CAPTION}{stands}", fontsize=9)
    return fig


def top1_vs_epoch_budget(runs: pd.DataFrame) -> Figure:
    """Final top-1 against the epoch budget (each budget its own run, its schedule stretched to it): one
    panel per global batch run at two budgets or more, one line per optimizer and configuration (mean
    over seeds, 95 % Student t bars). The paper's figures 10 and 11."""
    prep = stats.prepare(runs)
    per_batch = prep.groupby("global_batch").budget.nunique() if len(prep) else pd.Series(dtype=int)
    batches = sorted(per_batch[per_batch >= 2].index)
    if not batches:
        return _empty("no global batch was run at two epoch budgets or more")
    summary = stats.summarize(prep[prep.global_batch.isin(batches)])
    fig = Figure(figsize=(5.5 * len(batches), 4.5), layout="constrained")
    for ax, batch in zip(fig.subplots(1, len(batches), squeeze=False)[0], batches, strict=True):
        for k, (name, c, ls, rows) in enumerate(_series(summary[summary.global_batch == batch])):
            _means(ax, rows, "epochs", name, c, ls, k)
        ax.set_xticks(sorted(summary[summary.global_batch == batch].epochs.unique()))
        ax.set_title(f"global batch {batch}")
        ax.set_xlabel("epoch budget (each its own run, schedule stretched)")
        ax.set_ylabel("final top-1 test accuracy (x: diverged)")
        ax.set_ylim(bottom=0)
        ax.margins(x=0.15)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Top-1 against the epoch budget\n{CAPTION}", fontsize=9)
    return fig


COLUMNS = 3  # panels per row at most: legible at a laptop's width


def _grid(n: int, width: float = 4.4, height: float = 3.9, sharey: bool = False) -> tuple[Figure, list]:
    """A figure of ``n`` panels, at most COLUMNS to a row (legible at a laptop's width): the figure and its
    ``n`` axes (at least one); the unused panels of the last row hidden."""
    cols = max(1, min(COLUMNS, n))
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(width * cols, height * rows + 0.6), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel())
    for ax in axes[max(1, n):]:
        ax.set_axis_off()
        ax.set_visible(False)
    return fig, axes[:max(1, n)]


def _curves(runs, history, x: str, y: str, title: str, xlabel: str, ylabel: str, logy: bool,
            only: tuple | None = None) -> Figure:
    """One panel per (global batch, budget) (``only``: that one panel); per configuration the mean over its seeds
    at every step all of them logged (bold) with a 95 % Student t band; a diverged seed ends in an x."""
    prep = stats.prepare(runs)
    rows = history[history.run_id.isin(prep.run_id)] if y in history else history.iloc[:0]
    rows = rows[np.isfinite(rows[y].astype(float))] if len(rows) else rows
    panels = sorted({(int(b), float(e)) for b, e in zip(prep.global_batch, prep.budget, strict=True)})
    panels = [p for p in panels if p == only] if only else panels
    summary = stats.summarize(prep) if len(prep) else prep
    fig, axes = _grid(len(panels), *((6.4, 4.6) if only else (4.4, 3.9)))
    for ax, (batch, budget) in zip(axes, panels, strict=False):
        here = summary[(summary.global_batch == batch) & (summary.epochs == budget)]
        for name, c, ls, cfg in _series(here):
            seeds = prep[prep.config_id == cfg.config_id.iloc[0]]
            h = rows[rows.run_id.isin(seeds.run_id)]
            ids = list(seeds.run_id)
            wide = h.pivot_table(index="step", columns="run_id", values=y).reindex(columns=ids).dropna() \
                if len(h) else pd.DataFrame()
            # every seed logged these steps
            n_div = int(seeds.diverged.sum())
            label = f"{name} ({n_div}/{len(seeds)} diverged)" if n_div else name
            if len(wide):
                xs = h.pivot_table(index="step", columns="run_id", values=x).reindex(index=wide.index, columns=ids)
                mx, ys = xs.mean(axis=1).to_numpy(), wide.to_numpy()
                my = ys.mean(axis=1)
                ax.plot(mx, my, color=c, ls=ls[0], lw=1.8, label=label)
                if ys.shape[1] > 1:
                    half = stats.t_quantile(0.975, ys.shape[1] - 1) * ys.std(axis=1, ddof=1) / np.sqrt(ys.shape[1])
                    low = np.maximum(my - half, my * 1e-3) if logy else my - half
                    ax.fill_between(mx, low, my + half, color=c, alpha=0.2, lw=0)
            for rid in seeds.run_id[seeds.diverged]:
                last = h[h.run_id == rid].sort_values("step").tail(1)
                ax.scatter(last[x], last[y], marker="x", s=50, color=c, zorder=3, gid="diverged")
        ax.set_title(f"global batch {batch}, {budget:g} epochs")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\nbold: mean over the seeds of one configuration, band: 95 % Student t over seeds; "
                 "x: a diverged seed's last step", fontsize=9)
    return fig


def loss_vs_epoch(runs: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Training loss (global mean of each logged step) against epochs (the paper's figure 6)."""
    return _curves(runs, history, "epoch", "loss", "Training loss", "epoch", "training loss", logy=True)


def wall_time(runs: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Training loss against training time (the paper's figure 8): the history's ``time_s``, the optimizer
    steps only (compilation and evaluation excluded)."""
    return _curves(runs, history, "time_s", "loss", "Training loss against training time",
                   "train time (s): optimizer steps, compilation and evaluation excluded", "training loss", logy=True)


def claim_panel(runs: pd.DataFrame, batch: int | None = None) -> tuple | None:
    """The panel the paper draws its figures 6 and 8 at: the claim's batch (default: the largest run) at the
    largest budget run there."""
    prep = stats.finished(runs)
    if prep.empty:
        return None
    batch = int(prep.global_batch.max()) if batch is None else int(batch)
    budgets = [stats.budget_epochs(r) for r in prep[prep.global_batch == batch].to_dict("records")]
    return (batch, float(max(budgets))) if budgets else None


def loss_vs_epoch_at_claim(runs: pd.DataFrame, history: pd.DataFrame, batch: int | None = None) -> Figure:
    """The paper's figure 6: training loss against epochs, one panel, at the claim's batch and longest budget."""
    panel = claim_panel(runs, batch)
    return _curves(runs, history, "epoch", "loss", "Training loss at the claim's batch (the paper's figure 6)",
                   "epoch", "training loss", logy=True, only=panel) if panel else _empty("no finished runs")


def wall_time_at_claim(runs: pd.DataFrame, history: pd.DataFrame, batch: int | None = None) -> Figure:
    """The paper's figure 8: training loss against training time, one panel, at the claim's batch."""
    panel = claim_panel(runs, batch)
    return _curves(runs, history, "time_s", "loss", "Training loss against training time at the claim's batch "
                   "(the paper's figure 8)", "train time (s): optimizer steps only", "training loss", logy=True,
                   only=panel) if panel else _empty("no finished runs")


def top1_during_training(runs: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Test top-1 at each evaluation of a run against its epochs (not budgets: see top1_vs_epoch_budget)."""
    return _curves(runs, history, "epoch", "top1",
                   "Test top-1 during training (evaluations part-way through one run, not epoch budgets)",
                   "epoch of the run", "top-1", logy=False)


def first_reach(runs: pd.DataFrame, history: pd.DataFrame, target: float) -> pd.Series:
    """Per run_id: the first evaluated step whose top-1 reaches ``target`` (NaN if none did)."""
    evals = history[history.run_id.isin(runs.run_id) & history.top1.notna()] if "top1" in history else history
    hit = evals[evals.top1 >= target].groupby("run_id").step.min()
    return hit.reindex(runs.run_id.to_numpy())


def steps_to_target(runs: pd.DataFrame, history: pd.DataFrame, target: float | None = None) -> Figure:
    """Steps until the test top-1 first reaches ``target`` against the global batch, log-log, one line per
    optimizer and configuration (Shallue et al. 2019), at one epoch budget (the largest run at every batch).

    A configuration reaches the target only when every seed does (the first evaluation with top-1 >=
    target; a seed that reached it and diverged later counts as reached): then its point is the mean over
    seeds with a 95 % Student t bar; otherwise no point, and "k/n" (seeds that reached) at its step budget.
    Dashed: perfect scaling (steps halve when the batch doubles), anchored at the smallest batch's best
    measured value. The target is, in order: the argument, the runs' ``target_top1``, or 90 % of the best
    configuration's mean final top-1 (rounded down to 0.01).
    """
    prep = stats.prepare(runs)
    if prep.empty or "top1" not in history or history.top1.notna().sum() == 0:
        return _empty("no evaluations to read a target from")
    budget = max(stats.shared_budgets(prep))
    prep = prep[prep.budget == budget]
    summary = stats.summarize(prep)
    if target is None:
        set_targets = prep.target_top1[prep.target_top1 > 0] if "target_top1" in prep else pd.Series(dtype=float)
        target, why = ((float(set_targets.mode().max()), "the runs' target_top1") if len(set_targets) else
                       (np.floor(90 * summary.top1_mean.max()) / 100, "90 % of the best mean final top-1"))
    else:
        why = "given"
    if np.isnan(target):
        return _empty("every configuration had a diverged seed: no mean top-1 to set a target from")
    prep = prep.assign(reach=first_reach(prep, history, target).to_numpy())
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    points = []
    for k, (name, c, ls, rows) in enumerate(_series(summary)):
        xs, ys, halves = [], [], []
        for _, cfg in rows.sort_values("global_batch").iterrows():
            reach = prep[prep.config_id == cfg.config_id].reach
            if reach.notna().all():
                mean, half, _ = stats.mean_ci(reach)
                xs.append(cfg.global_batch), ys.append(mean), halves.append(0.0 if np.isnan(half) else half)
                points.append((cfg.global_batch, mean))
            else:
                ax.annotate(f"{int(reach.notna().sum())}/{len(reach)}", (cfg.global_batch, cfg.steps), color=c,
                            xytext=(0, -6 - 9 * k), textcoords="offset points", fontsize=8, ha="center", va="top",
                            gid="not-reached")
                ax.plot([cfg.global_batch], [cfg.steps], marker="_", ms=10, color=c, ls="none")
        ys_a, halves_a = np.asarray(ys, dtype=float), np.asarray(halves, dtype=float)
        yerr = np.vstack([np.minimum(halves_a, 0.95 * ys_a), halves_a]).reshape(2, -1)  # log axis: stay above 0
        ax.errorbar(xs, ys, yerr=yerr, marker=ls[1], capsize=3, color=c, ls=ls[0], label=name)
    batches = sorted(summary.global_batch.unique())
    if points:
        b0 = min(b for b, _ in points)
        s0 = min(s for b, s in points if b == b0)
        ax.plot(batches, [s0 * b0 / b for b in batches], color="black", ls="--", lw=1,
                label="perfect scaling (steps halve when the batch doubles)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_major_formatter(FixedFormatter([str(b) for b in batches]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("global batch")
    ax.set_ylabel("steps to reach the target (mean over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(f"Steps to test top-1 >= {target:g} ({why}), {budget:g} epochs\n"
                 "a point only when every seed reached it; bars: 95 % Student t over seeds\n"
                 "k/n: seeds that reached it, written at the step budget", fontsize=9)
    return fig


FIGURES = {
    "top1_vs_batch": top1_vs_batch,
    "top1_vs_epoch_budget": top1_vs_epoch_budget,
    "loss_vs_epoch": loss_vs_epoch,
    "loss_vs_epoch_at_claim": loss_vs_epoch_at_claim,
    "wall_time": wall_time,
    "wall_time_at_claim": wall_time_at_claim,
    "top1_during_training": top1_during_training,
    "steps_to_target": steps_to_target,
}
AT_CLAIM = ("loss_vs_epoch_at_claim", "wall_time_at_claim")  # drawn at the declared claim's batch
RUNS_ONLY = ("top1_vs_epoch_budget",)  # figures drawn from the runs table alone (top1_vs_batch: + reference)
