"""``python -m bench report``: every figure of a results folder (PNG + PDF) and the claims (JSON + Markdown).

The claims put our numbers beside the paper's: per (global batch, epoch budget), NLCG-FR and NLCG-PR each
against the best baseline, with the gain's 95 % interval and a verdict, computed in ``plots.claims`` from
the runs table and ``experiments/paper_reference.csv`` (nothing is typed in by hand). The ImageNet claim
(> 10 points at > 65k, 90 epochs) has no published table; it is stated as text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.results import load_history, load_runs
from plots import claims as claims_mod
from plots import critical_batch, figures, stats

BASELINES = claims_mod.BASELINES
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"  # the profiles, for folders without study.json
paper_gains = claims_mod.paper_gains
FIGURES = {**figures.FIGURES, **critical_batch.FIGURES}  # every figure a results folder gets


def draw(name: str, runs: pd.DataFrame, history: pd.DataFrame, reference: pd.DataFrame | None,
         paper_dataset: str, claim_batch: int | None = None):
    """Figure ``name`` of ``FIGURES`` from the tables it needs (``claim_batch``: the primary claim's)."""
    make = FIGURES[name]
    if name in figures.AT_CLAIM:
        return make(runs, history, claim_batch)
    if name == "top1_vs_batch":
        return make(runs, reference, paper_dataset)
    if name in figures.RUNS_ONLY:
        return make(runs)
    return make(runs, history)


def claims(runs: pd.DataFrame, reference: pd.DataFrame | None, paper_dataset: str = "cifar100",
           study: dict | None = None) -> str:
    """The claims report (Markdown) for one sweep's runs."""
    return claims_mod.markdown(claims_mod.build(runs, reference, paper_dataset, study))


def study(results_dir: Path) -> dict | None:
    """The sweep's declaration: ``study.json`` (written by the sweep before its runs), else, for folders
    written before it existed, ``experiments/<folder>.toml`` read now (said so in the document), else None."""
    path = results_dir / "study.json"
    if path.exists():
        return json.loads(path.read_text())
    toml = EXPERIMENTS / f"{results_dir.name}.toml"
    if toml.exists():
        from bench import grid

        sweep = grid.load(toml)
        return {"sweep": sweep.name, "source": f"{toml} (read at report time: the folder has no study.json)",
                "claim": sweep.claim, "tuning_fields": list(sweep.tuning)}
    return None


def _other(folder: Path, reference: pd.DataFrame | None, paper_dataset: str) -> dict:
    """Another sweep's claims document for ``--against`` (without its history: no critical batch), or a
    ``missing`` note when the folder has no finished runs."""
    runs = load_runs(folder) if folder.is_dir() else pd.DataFrame()
    if runs.empty or stats.finished(runs).empty:
        return {"sweep": folder.name, "missing": f"{folder} has no finished runs (make reproduce-figures "
                                                  f"PROFILE={folder.name})"}
    return claims_mod.build(runs, reference, paper_dataset, study(folder))


def write(results_dir: str | Path, out_dir: str | Path, reference_csv: str | Path | None = None,
          paper_dataset: str = "cifar100", against: tuple = ()) -> list[Path]:
    """Save every figure (PNG + PDF), claims.json and claims.md (last) for one results folder; returns the
    paths written. ``against``: other results folders (e.g. the same batches at shorter budgets) whose claims
    at this folder's batches are set beside this one's (claims.json ``against``)."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    runs = load_runs(results_dir)
    if stats.finished(runs).empty:
        raise FileNotFoundError(f"{results_dir} has no finished runs; run the sweep first "
                                f"(python -m bench sweep experiments/{results_dir.name}.toml)")
    history = load_history(results_dir)
    reference = None
    if reference_csv and Path(reference_csv).exists():
        reference = pd.read_csv(reference_csv)
        reference = reference[reference.dataset == paper_dataset]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    declared = study(results_dir)
    doc = claims_mod.build(runs, reference, paper_dataset, declared, history)
    doc["against"] = claims_mod.against(doc, [_other(Path(f), reference, paper_dataset) for f in against])
    for name in FIGURES:
        fig = draw(name, runs, history, reference, paper_dataset, doc["primary"]["global_batch"])
        for ext in ("png", "pdf"):
            path = out_dir / f"{name}.{ext}"
            fig.savefig(path, dpi=150)
            paths.append(path)
    path = out_dir / "claims.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    paths.append(path)
    path = out_dir / "claims.md"
    path.write_text(claims_mod.markdown(doc))
    paths.append(path)
    return paths


def add_arguments(p) -> None:
    """``python -m bench report``'s arguments."""
    p.add_argument("results", nargs="+", help="results folders, e.g. results/mini")
    p.add_argument("--out", default="figures", help="output folder; one subfolder per results folder")
    p.add_argument("--reference", default="experiments/paper_reference.csv", help="the paper's numbers")
    p.add_argument("--paper-dataset", default="cifar100", choices=["cifar100", "imagenet"],
                   help="which of the paper's studies the results stand for")
    p.add_argument("--against", action="append", default=[], metavar="FOLDER",
                   help="another results folder whose claims at the same batches go beside these (repeatable), "
                        "e.g. --against results/mini for mini_90")


def main(args) -> int:
    """``python -m bench report FOLDER ...``: figures and claims of each results folder, claims.md printed."""
    import os

    from bench.config import ConfigError

    for folder in args.results:
        try:
            paths = write(folder, f"{args.out}/{os.path.basename(os.path.normpath(folder))}", args.reference,
                          args.paper_dataset, tuple(args.against))
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        print(f"{folder}: wrote {len(paths)} files to {paths[0].parent}", flush=True)
        print(paths[-1].read_text(), flush=True)
    return 0
