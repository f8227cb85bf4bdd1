"""``python -m bench report``: every figure of a results folder (PNG + PDF) and a claims report.

The claims report puts our numbers beside the paper's: per global batch, NLCG's top-1 minus the best
baseline's, computed here from the runs table and from ``experiments/paper_reference.csv`` (nothing
is typed in by hand). The ImageNet claim (> 10 points at > 65k, 90 epochs) has no published table; it
is stated, and checked only when a ResNet-50 ImageNet sweep has been run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.results import load_history, load_runs
from plots import figures

BASELINES = ("rmsprop", "momentum", "sgd")
NLCG = "nlcg-fr"  # the paper's NLCG: Fletcher-Reeves, BFGS preconditioner, step line search
PAPER_CLAIMS = {  # dataset of the paper's study -> (the abstract's claim, the batch it is made at)
    "cifar100": ("NLCG beats the baselines by more than 15 points of top-1 at batch >= 16k (200 epochs)", 16384),
    "imagenet": ("NLCG beats the baselines by more than 10 points of top-1 at batch >= 65k (90 epochs)", 65536),
}


def gains(table: pd.DataFrame) -> pd.DataFrame:
    """Per global batch: top-1 of each optimizer (mean over seeds), NLCG-FR minus the best baseline."""
    wide = table.groupby(["global_batch", "optimizer"]).top1.mean().unstack("optimizer")
    have = [b for b in BASELINES if b in wide]
    if NLCG in wide and have:
        wide["best_baseline"] = wide[have].max(axis=1)
        wide["nlcg_gain_points"] = 100 * (wide[NLCG] - wide["best_baseline"])
    return wide


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| global batch | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for batch, row in df.iterrows():
        cells = ["-" if pd.isna(row[c]) else f"{row[c]:+.1f}" if c == "nlcg_gain_points"
                 else f"{int(row[c])}" if c == "paper_batch_same_steps" else f"{row[c]:.4f}" for c in cols]
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims(runs: pd.DataFrame, reference: pd.DataFrame | None, paper_dataset: str = "cifar100") -> str:
    """The claims report (Markdown) for one sweep's runs."""
    done = figures.finished(runs)
    out = [f"# Claims: {runs.sweep.iloc[0]}", ""]
    ours = done.assign(top1=done.top1.where(done.status == "complete", 0.0))  # diverged counts as 0
    n_div = int((done.status == "diverged").sum())
    listed = lambda col: ", ".join(str(v) for v in sorted(done[col].round(2).unique().tolist()))  # noqa: E731
    out += [f"Ours: {done.dataset.iloc[0]}, {done.model.iloc[0]}, {listed('epochs')} epochs, {listed('workers')} "
            f"worker(s), {len(done)} finished runs ({n_div} diverged, counted as top-1 0), seeds {listed('seed')}.",
            ""]
    ours_gains = gains(ours)
    scale = None
    if reference is not None and len(reference):
        scale = figures.paper_batches_per_batch(done, reference)
        ours_gains.insert(0, "paper_batch_same_steps", (ours_gains.index * scale).round().astype(int))
    out += [_markdown(ours_gains), ""]
    ref_gains = gains(reference) if reference is not None and len(reference) else None
    if ref_gains is not None:
        out += [f"Paper ({reference.source.iloc[0]}): {reference.dataset.iloc[0]}, {reference.model.iloc[0]}, "
                f"{reference.epochs.iloc[0]} epochs.", "", _markdown(ref_gains), ""]
    claim, at = PAPER_CLAIMS[paper_dataset]
    out += ["## The paper's claim", "", f"> {claim}", ""]
    if ref_gains is not None and "nlcg_gain_points" in ref_gains:
        big = ref_gains[ref_gains.index >= at]
        if len(big):
            out.append(f"- In the paper's own table: at batch {', '.join(map(str, big.index))} the gain is "
                       f"{', '.join(f'{x:+.1f}' for x in big.nlcg_gain_points)} points.")
    compared = ours_gains[ours_gains.nlcg_gain_points.notna()] if "nlcg_gain_points" in ours_gains else []
    if len(compared):
        for which, batch in (("largest", compared.index.max()), ("smallest", compared.index.min())):
            g = compared.loc[batch]
            stands = f" (stands for the paper's {int(g.paper_batch_same_steps)})" if scale else ""
            out.append(f"- Ours at our {which} compared batch, {batch}{stands}: NLCG-FR {g[NLCG]:.4f} against "
                       f"the best baseline {g.best_baseline:.4f}: {g.nlcg_gain_points:+.1f} points.")
    else:
        out.append(f"- This sweep has no {NLCG} run beside a baseline ({', '.join(BASELINES)}): nothing to compare.")
    if (done.global_batch.max() * (scale or 1)) < at:
        out.append(f"- This profile does not reach the claim's batch ({at}) even in paper-equivalent steps per "
                   "epoch, so it is evidence about the trend, not a test of the claim.")
    return "\n".join(out) + "\n"


def write(results_dir: str | Path, out_dir: str | Path, reference_csv: str | Path | None = None,
          paper_dataset: str = "cifar100") -> list[Path]:
    """Save every figure (PNG + PDF) and claims.md for one results folder; returns the paths."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    runs = load_runs(results_dir)
    if figures.finished(runs).empty:
        raise FileNotFoundError(f"{results_dir} has no finished runs; run the sweep first "
                                f"(python -m bench sweep experiments/{results_dir.name}.toml)")
    history = load_history(results_dir)
    reference = None
    if reference_csv and Path(reference_csv).exists():
        reference = pd.read_csv(reference_csv)
        reference = reference[reference.dataset == paper_dataset]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in figures.FIGURES.items():
        fig = make(runs, reference) if name == "top1_vs_batch" else make(runs, history)
        for ext in ("png", "pdf"):
            path = out_dir / f"{name}.{ext}"
            fig.savefig(path, dpi=150)
            paths.append(path)
    path = out_dir / "claims.md"
    path.write_text(claims(runs, reference, paper_dataset))
    paths.append(path)
    return paths
