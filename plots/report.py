"""``python -m bench report``: every figure of a results folder (PNG + PDF), the claims (JSON + Markdown) and
one self-contained page of them all (index.html, plots.site).

The claims put our numbers beside the paper's: per (global batch, epoch budget), NLCG-FR and NLCG-PR each
against the best baseline, with the gain's 95 % interval and a verdict, computed in ``plots.claims`` from
the runs table and ``experiments/paper_reference.csv`` (nothing is typed in by hand). The ImageNet claim
(> 10 points at > 65k, 90 epochs) has no published table; it is stated as text.

Bad input is one line and exit 2 (``ConfigError``), checked for every folder before anything is drawn or
written: a results or ``--against`` folder that is not a folder, a results folder without finished runs or
holding runs of several data sets, a ``study.json`` that is not the object ``bench sweep`` writes, rows of a
newer nlcg-bench (bench.results), an output folder that cannot be one. Where the report can honestly go on
it does, with one ``warning:`` line each: an unreadable results file (left out), a missing or unreadable
``--reference`` (no paper numbers), an ``--against`` folder without finished runs (said so in claims.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tomllib
import warnings
from pathlib import Path

import pandas as pd

from bench.config import ConfigError
from bench.results import load_history, load_runs
from plots import claims as claims_mod
from plots import ablation, critical_batch, figures, site, stats, tuning, tuning_figures

ROOT = Path(__file__).resolve().parent.parent  # the repository: relative paths of study.json resolve here too
EXPERIMENTS = ROOT / "experiments"  # the profiles, for folders without study.json
REFERENCE = EXPERIMENTS / "paper_reference.csv"  # --reference's default, wherever the command runs from
REFERENCE_COLUMNS = ("dataset", "train_size", "global_batch", "optimizer", "top1", "source")
PAPER_DATASETS = tuple(claims_mod.PAPER_CLAIMS)  # the paper's two studies: cifar100, imagenet
AUTO = "auto"
# --paper-dataset auto: a folder whose runs are of one of the paper's data sets stands for that study
PAPER_STUDY_OF = {"cifar10": "cifar100", "cifar100": "cifar100", "imagenet": "imagenet"}
paper_gains = claims_mod.paper_gains
FIGURES = {**figures.FIGURES, **critical_batch.FIGURES, **tuning_figures.FIGURES}  # every figure a results folder gets
TARGET_FIGURES = ("steps_to_target", "critical_batch")  # drawn at the one target the claims read (``asked_target``)
# study.json as bench.study.declare writes it: key -> (the types it may hold, required)
STUDY_KEYS = {"sweep": ((str,), False), "source": ((str,), False), "claim": ((dict, type(None)), True),
              "tuning_fields": ((list,), True), "declared_at": ((str, type(None)), False),
              "previous": ((list,), False), "target_top1": ((int, float), False), "roles": ((dict,), False),
              "search": ((dict,), False), "variants": ((dict,), False)}
CLAIM_TYPES = {"optimizer": (str,), "baseline": (str,), "baselines": (list,), "global_batch": (int,), "epochs": (list,),
               "confirm_seeds": (list,), "declared": (bool,)}


def draw(name: str, runs: pd.DataFrame, history: pd.DataFrame, reference: pd.DataFrame | None,
         paper_dataset: str, claim_batch: int | None = None, target: float | None = None,
         study: dict | None = None):
    """Figure ``name`` of ``FIGURES`` from the tables it needs (``claim_batch``: the primary claim's; ``target``:
    the target top-1 of the figures of steps to a target, the one the claims read; ``study``: the folder's
    declaration, for the figures of a search)."""
    make = FIGURES[name]
    if name in tuning_figures.FIGURES:
        return make(runs, study)
    if name in figures.AT_CLAIM:
        return make(runs, history, claim_batch)
    if name == "top1_vs_batch":
        return make(runs, reference, paper_dataset)
    if name in figures.RUNS_ONLY:
        return make(runs)
    if name in TARGET_FIGURES:
        return make(runs, history, target)
    return make(runs, history)


def claims(runs: pd.DataFrame, reference: pd.DataFrame | None, paper_dataset: str = "cifar100",
           study: dict | None = None) -> str:
    """The claims report (Markdown) for one sweep's runs."""
    return claims_mod.markdown(claims_mod.build(runs, reference, paper_dataset, study))


# ---- the folder's declaration --------------------------------------------------------------------------------


def _type_names(types: tuple) -> str:
    return " or ".join("null" if t is type(None) else {dict: "object", list: "list", str: "string", int: "integer",
                                                        float: "number", bool: "true/false"}[t] for t in types)


def _is(value, types: tuple) -> bool:
    """isinstance, where a bool is not a number (JSON's true is no batch size)."""
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def check_study(path: Path, doc) -> dict:
    """``doc`` (study.json's JSON) if it has the shape bench.study.declare writes; else ConfigError, one line
    naming the file, the key and what is valid. Why strict: the report reads the primary claim, the tuning fields
    and the target from it, and a claim read from a damaged file would be a different claim, not an error."""
    valid = "valid: the object bench sweep writes before its runs (bench.study.declare); run the sweep again to " \
            "rewrite it (finished runs are skipped)"
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a JSON {type(doc).__name__}, not an object with claim and tuning_fields; {valid}")
    for key, (types, required) in STUDY_KEYS.items():
        if key not in doc:
            if required:
                raise ConfigError(f"{path}: no key {key!r}; {valid}")
            continue
        if not _is(doc[key], types):
            raise ConfigError(f"{path}: {key} = {json.dumps(doc[key])[:80]} is not a {_type_names(types)}; {valid}")
    if not all(isinstance(f, str) for f in doc["tuning_fields"]):
        raise ConfigError(f"{path}: tuning_fields = {json.dumps(doc['tuning_fields'])[:80]} must list field names "
                          f"(strings); {valid}")
    if "target_top1" in doc and not 0 <= doc["target_top1"] <= 1:
        raise ConfigError(f"{path}: target_top1 = {doc['target_top1']!r} must be a top-1 in [0, 1]; {valid}")
    claim = doc["claim"] or {}
    unknown = sorted(set(claim) - set(CLAIM_TYPES))
    if unknown:
        raise ConfigError(f"{path}: claim has unknown key(s) {', '.join(unknown)}; valid keys: "
                          f"{', '.join(CLAIM_TYPES)}")
    for key, types in CLAIM_TYPES.items():
        if key in claim and not _is(claim[key], types):
            raise ConfigError(f"{path}: claim.{key} = {json.dumps(claim[key])[:80]} is not a {_type_names(types)}; "
                              f"{valid}")
    for key, types in (("epochs", (int, float)), ("confirm_seeds", (int,))):
        if not all(_is(x, types) for x in claim.get(key, [])):
            raise ConfigError(f"{path}: claim.{key} = {json.dumps(claim[key])[:80]} must list {_type_names(types)}s; "
                              f"{valid}")
    extra = sorted(set(doc) - set(STUDY_KEYS))
    if extra:
        warnings.warn(f"{path}: key(s) {', '.join(extra)} unknown to this nlcg-bench (a newer one's?), ignored",
                      stacklevel=2)
    return doc


def study(results_dir: Path) -> dict | None:
    """The sweep's declaration: ``study.json`` (written by the sweep before its runs; ``check_study``), else, for
    folders written before it existed, ``experiments/<folder>.toml`` read now (said so in the document), else
    None."""
    path = Path(results_dir) / "study.json"
    if path.exists():
        try:
            text = path.read_text()
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); valid: the "
                              "object bench sweep writes before its runs (bench.study.declare); run the sweep again "
                              "to rewrite it (finished runs are skipped)") from None
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
            raise ConfigError(f"{path}: cannot be read ({reason}); valid: a readable JSON file, as bench sweep "
                              "writes it") from None
        return check_study(path, doc)
    toml = EXPERIMENTS / f"{Path(results_dir).name}.toml"
    if toml.exists():
        from bench import grid

        sweep = grid.load(toml)
        asked = sorted({c.target_top1 for c in sweep.runs if c.target_top1 > 0})
        return {"sweep": sweep.name, "source": f"{toml} (read at report time: the folder has no study.json)",
                "claim": sweep.claim, "roles": sweep.roles, "tuning_fields": list(sweep.tuning),
                **({"target_top1": asked[0]} if len(asked) == 1 else {})}
    return None


def _sweep_file(source: str) -> Path | None:
    """The sweep file a study.json names (``source``: as given to bench sweep, so relative to where it ran: the
    working directory, else the repository, where the Makefile runs it)."""
    path = Path(source)
    for where in ([path] if path.is_absolute() else [Path.cwd() / path, ROOT / path]):
        if where.is_file():
            return where
    return None


def _file_targets(path: Path) -> list[float]:
    """Every ``target_top1`` a sweep file sets anywhere (its base config, [grid] lists, per-optimizer tables)."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "target_top1":
                    found.update(x for x in (v if isinstance(v, list) else [v]) if _is(x, (int, float)))
                else:
                    walk(v)
        elif isinstance(node, list):
            for x in node:
                walk(x)

    walk(tomllib.loads(path.read_text()))
    return sorted(float(t) for t in found)


def asked_target(declared: dict | None, runs: pd.DataFrame, history: pd.DataFrame | None) -> float | None:
    """The one target top-1 the figures and claims read steps to the target at (plots.critical_batch re-evaluates
    it from each run's history), because target_top1 is outside the run id and a study may change it after runs
    finished: the declaration's ``target_top1``; else the one its sweep file (``source``) sets now; else the runs'
    own (their one target, or the latest started run's: ``critical_batch.runs_target``); else 90 % of the best
    mean final top-1. A sweep file that cannot say (gone, unreadable, several targets) is one warning line when
    the runs were written under several targets, the runs' latest then standing."""
    declared = declared or {}
    written = critical_batch.targets(runs)
    if declared.get("target_top1"):
        return float(declared["target_top1"])
    source = declared.get("source")
    path = _sweep_file(source) if isinstance(source, str) else None
    why = f"its sweep file {source} is not there" if source else "the folder has no declaration"
    if path is not None:
        try:
            asked = _file_targets(path)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            asked, why = None, f"its sweep file {path} cannot be read ({type(e).__name__})"
        if asked is not None and len(asked) == 1 and asked[0] > 0:
            return asked[0]
        if asked:
            why = f"its sweep file {path} sets several ({', '.join(f'{t:g}' for t in asked)})"
        elif asked is not None:
            why = f"its sweep file {path} sets none"
    target = critical_batch.steps_to_target(runs, history)[1]
    if len(written) > 1:
        warnings.warn(f"runs written under target_top1 {', '.join(f'{t:g} ({n} runs)' for t, n in written.items())} "
                      f"and {why}: steps to the target re-evaluated from every run's evaluations at {target:g}, the "
                      "latest run's", stacklevel=2)
    return target


# ---- the inputs, checked before anything is written -------------------------------------------------------


def reference_table(path: str | Path | None, paper_dataset: str) -> pd.DataFrame | None:
    """The paper's rows of ``paper_dataset`` from ``path`` (default REFERENCE: the repository's, wherever the
    command runs from), or None: no rows for that study (the ImageNet claim has no published table), or the
    file missing or unreadable, which is one warning naming the path (the report goes on without the paper's
    numbers: they are a comparison, not an input of our claims)."""
    path = Path(path) if path else REFERENCE
    without = "the report goes on without the paper's numbers"
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        warnings.warn(f"--reference {path}: no such file; {without} (default: {REFERENCE})", stacklevel=2)
        return None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
        warnings.warn(f"--reference {path}: unreadable ({reason}); {without}", stacklevel=2)
        return None
    missing = [c for c in REFERENCE_COLUMNS if c not in table]
    numbers = [c for c in ("train_size", "global_batch", "top1") if c in table
               and not pd.api.types.is_numeric_dtype(table[c])]
    if missing or numbers:
        what = f"no column(s) {', '.join(missing)}" if missing else f"non-numbers in {', '.join(numbers)}"
        warnings.warn(f"--reference {path}: {what} (valid columns: {', '.join(REFERENCE_COLUMNS)}); {without}",
                      stacklevel=2)
        return None
    rows = table[table.dataset == paper_dataset]
    return rows if len(rows) else None


def paper_dataset_for(results_dir: str | Path, runs: pd.DataFrame | None = None) -> str:
    """``--paper-dataset auto``: the paper's study a results folder stands for. Its runs' data set when it is one
    of the paper's (cifar10 / cifar100: its CIFAR-100 study; imagenet: its ImageNet one); else by the folder's
    name: ``cifar100`` when it contains "cifar", else ``imagenet`` (the Makefile's PAPER_DATASET rule before it
    passed ``auto``: ``mini`` -> imagenet, ``cifar100_resnet32`` -> cifar100)."""
    found = set(runs.dataset.astype(str)) if runs is not None and "dataset" in runs else set()
    studies = {PAPER_STUDY_OF[d] for d in found if d in PAPER_STUDY_OF}
    if len(studies) == 1 and len(found) == 1:
        return studies.pop()
    return "cifar100" if "cifar" in Path(os.path.normpath(results_dir)).name else "imagenet"


def _folder(path: str | Path, flag: str = "") -> Path:
    """``path`` as a results folder: ConfigError when it is a file (a missing one: the caller decides); ``flag``
    (e.g. "--against") starts the message when the folder came through one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag + ' ' if flag else ''}{path}: is a file, not a folder; valid: a results folder "
                          "results/<sweep> (runs/, history/)")
    return path


def _runs(folder: Path) -> tuple[pd.DataFrame, int]:
    """(load_runs of ``folder``, the number of its unreadable files, warned about one line each)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(folder)
    for w in caught:
        warnings.warn(str(w.message), w.category, stacklevel=2)
    return runs, sum(str(w.message).startswith("skipping unreadable results file") for w in caught)


def _finished(folder: Path, runs: pd.DataFrame, skipped: int) -> str | None:
    """Why ``runs`` of ``folder`` cannot be reported (no runs, none finished), or None."""
    name = folder.name
    hint = f"run the sweep first (python -m bench sweep experiments/{name}.toml)"
    unreadable = f", {skipped} unreadable file(s) skipped" if skipped else ""
    if runs.empty:
        return f"{folder}: no runs (no readable runs/*.parquet{unreadable}); {hint}"
    if "status" not in runs:
        return f"{folder}: no finished runs (its rows have no status column: not a runs table); {hint}"
    if stats.finished(runs).empty:
        counts = ", ".join(f"{k} {n}" for k, n in runs.status.astype(str).value_counts().items())
        return f"{folder}: no finished runs ({len(runs)} rows: {counts}{unreadable}); {hint}"
    return None


def _one_study(folder: Path, runs: pd.DataFrame) -> None:
    """ConfigError unless the finished runs share one data set and training-set size (stats.train_size)."""
    try:
        stats.train_size(stats.finished(runs))
    except ConfigError as e:
        raise ConfigError(f"{folder}: {e}; a report is of one study: move the other runs' files to a folder of "
                          "their own") from None


def _other(folder: Path, reference: pd.DataFrame | None, paper_dataset: str) -> dict:
    """Another sweep's claims document for ``--against`` (without its history: no critical batch), or a
    ``missing`` note (and a warning) when the folder is not there or has no finished runs."""
    folder = _folder(folder, "--against")
    runs, skipped = _runs(folder) if folder.is_dir() else (pd.DataFrame(), 0)
    why = f"--against {folder}: no such folder" if not folder.is_dir() else _finished(folder, runs, skipped)
    if why:
        warnings.warn(f"{why}; its claims are left out (said so in claims.md)", stacklevel=2)
        return {"sweep": folder.name, "missing": f"{folder} has no finished runs (make reproduce-figures "
                                                  f"PROFILE={folder.name})"}
    _one_study(folder, runs)
    declared = study(folder)
    return claims_mod.build(ablation.split(runs, declared), reference, paper_dataset, declared)


def _out(out_dir: Path) -> None:
    """ConfigError when ``out_dir`` cannot be made a folder: it, or the nearest of its parents that exists, is a
    file (checked before anything is written, so a bad --out writes nothing)."""
    for p in [out_dir, *out_dir.parents]:
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"--out {out_dir}: {p} is a file; valid: a folder (made if missing)")
            return


@dataclasses.dataclass
class Report:
    """One results folder's figures and claims, made in memory (``prepare``) and then saved (``save``)."""

    results_dir: Path
    out_dir: Path
    doc: dict
    figures: dict
    runs: pd.DataFrame | None = None  # every attempt, for the page's table of runs and provenance

    def save(self) -> list[Path]:
        """Every figure (PNG + PDF), claims.json, claims.md, then index.html (last: the page of them all, written
        atomically by plots.site); returns the paths written."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, fig in self.figures.items():
            for ext in ("png", "pdf"):
                path = self.out_dir / f"{name}.{ext}"
                fig.savefig(path, dpi=150)
                paths.append(path)
        path = self.out_dir / "claims.json"
        path.write_text(json.dumps(self.doc, indent=1) + "\n")
        paths.append(path)
        path = self.out_dir / "claims.md"
        path.write_text(claims_mod.markdown(self.doc))
        paths.append(path)
        runs = self.runs if self.runs is not None else load_runs(self.results_dir)
        paths.append(site.write(self.out_dir, self.doc, runs, {n: self.out_dir / f"{n}.png" for n in self.figures}))
        return paths


def prepare(results_dir: str | Path, out_dir: str | Path, reference_csv: str | Path | None = None,
            paper_dataset: str = AUTO, against: tuple = ()) -> Report:
    """Read and check one results folder (and its ``against`` folders), compute its claims and draw its figures,
    writing nothing: every ConfigError of the module docstring is raised here."""
    results_dir, out_dir = _folder(results_dir), Path(out_dir)
    if not results_dir.exists():
        raise ConfigError(f"{results_dir}: no such results folder; valid: a folder a sweep wrote, results/<sweep> "
                          f"(python -m bench sweep experiments/{results_dir.name}.toml)")
    _out(out_dir)
    runs, skipped = _runs(results_dir)
    why = _finished(results_dir, runs, skipped)
    if why:
        raise ConfigError(why)
    _one_study(results_dir, runs)
    if paper_dataset == AUTO:
        paper_dataset = paper_dataset_for(results_dir, stats.finished(runs))
    if paper_dataset not in PAPER_DATASETS:
        raise ConfigError(f"--paper-dataset {paper_dataset!r}; valid: {AUTO}, {', '.join(PAPER_DATASETS)}")
    history = load_history(results_dir)
    reference = reference_table(reference_csv, paper_dataset)
    declared = study(results_dir)
    target = asked_target(declared, runs, history)
    asked = {**(declared or {}), **({"target_top1": target} if target is not None and not math.isnan(target) else {})}
    others = [_other(Path(f), reference, paper_dataset) for f in against]
    own = ablation.split(runs, declared)  # the study's own runs; its variants are compared with them on their own
    doc = claims_mod.build(own, reference, paper_dataset, asked or None, history)
    doc["variants"] = ablation.build(runs, declared, doc, history)
    doc["against"] = claims_mod.against(doc, others)
    figures.use_roles(doc["roles"])  # one colour per optimizer in every figure, by its role
    # a search's figures show what its claims judge: the chosen trials' confirmation reruns, one series per optimizer
    # (the tuning figures read every trial)
    shown = tuning.judged_runs(own, declared)
    drawn = {name: draw(name, own if name in tuning_figures.FIGURES else shown, history, reference, paper_dataset,
                        doc["primary"]["global_batch"], target, study=declared) for name in FIGURES}
    if doc["variants"]:
        drawn.update({name: ablation.draw(name, runs, declared, doc, history, reference) for name in ablation.FIGURES})
    return Report(results_dir, out_dir, doc, drawn, runs)


def write(results_dir: str | Path, out_dir: str | Path, reference_csv: str | Path | None = None,
          paper_dataset: str = AUTO, against: tuple = ()) -> list[Path]:
    """Save every figure (PNG + PDF), claims.json, claims.md and index.html (last) for one results folder; returns the
    paths written. ``against``: other results folders (e.g. the same batches at shorter budgets) whose claims
    at this folder's batches are set beside this one's (claims.json ``against``). ``reference_csv``: None for
    the repository's paper_reference.csv. Nothing is written when the input is bad (``prepare``)."""
    return prepare(results_dir, out_dir, reference_csv, paper_dataset, against).save()


def add_arguments(p) -> None:
    """``python -m bench report``'s arguments."""
    p.add_argument("results", nargs="+", help="results folders, e.g. results/mini")
    p.add_argument("--out", default="figures", help="output folder; one subfolder per results folder")
    p.add_argument("--reference", default=None,
                   help=f"the paper's numbers (default: {REFERENCE.relative_to(ROOT)} of this repository, wherever the "
                        "command runs from); missing or unreadable: one warning, the report without them")
    p.add_argument("--paper-dataset", default=AUTO, choices=[AUTO, *PAPER_DATASETS],
                   help="which of the paper's studies the results stand for; auto (default): the runs' data set "
                        "when it is one of the paper's (cifar10/cifar100 -> cifar100, imagenet), else the folder's "
                        "name (cifar100 if it contains 'cifar', else imagenet), the Makefile's PAPER_DATASET rule")
    p.add_argument("--against", action="append", default=[], metavar="FOLDER",
                   help="another results folder whose claims at the same batches go beside these (repeatable), "
                        "e.g. --against results/mini for mini_90")


def main(args) -> int:
    """``python -m bench report FOLDER ...``: figures and claims of each results folder, claims.md printed. Every
    folder is read and checked first, so a bad one (one ``error:`` line, exit 2) leaves nothing written; a
    warning is one ``warning:`` line on stderr."""
    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr, flush=True)

    outs = [f"{args.out}/{os.path.basename(os.path.normpath(folder))}" for folder in args.results]
    if len(set(outs)) < len(outs):
        raise ConfigError(f"results folders {', '.join(args.results)}: two share a name, and so the output folder "
                          f"{max(outs, key=outs.count)}; valid: folders of different names")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the libraries' own (pandas, matplotlib): not the user's business
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = one_line
        reports = [prepare(folder, out, args.reference, args.paper_dataset, tuple(args.against))
                   for folder, out in zip(args.results, outs, strict=True)]
    for folder, report in zip(args.results, reports, strict=True):
        paths = report.save()
        print(f"{folder}: wrote {len(paths)} files to {paths[0].parent}; the page: {paths[-1]}", flush=True)
        print((paths[0].parent / "claims.md").read_text(), flush=True)
    return 0
