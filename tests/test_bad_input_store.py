"""Bad input to the store, the report and the data readers, as a user hands it over: each case is one line
(``ConfigError``; ``error: ...`` and exit 2 through the CLI) naming the file and what is valid, before anything
is trained or written, or, where the report can honestly go on, one ``warning:`` line.

The bulk runs in process (pytest.raises on the functions the CLI calls); a representative subset goes through
``python -m bench`` (about 5 s each). Results folders are written by the test through bench.results.append_run
(a newer version's rows by patching the version this one writes), data files in their real formats.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import shutil
import struct
import subprocess
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from test_data import CIFAR10_FILES, constant, write_cifar, write_fashion, write_idx, write_shard

from bench import config, data, datasets, results
from bench.config import ConfigError, RunConfig
from conftest import ROOT, run_cli
from plots import critical_batch, report
from test_plots import _run

NEWER = "written by a newer nlcg-bench: upgrade, or move the file out"


def one_line(e) -> str:
    text = str(e.value if hasattr(e, "value") else e)
    assert "\n" not in text and text, text
    return text


def files_under(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


def cli_error(p: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a refused command (exit 2, no traceback)."""
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr[-3000:]
    return errors[0]


# ---- the store: rows of a newer nlcg-bench ---------------------------------------------------------------------


def good_row(cfg: RunConfig, **kw) -> dict:
    """A finished runs row of ``cfg`` as the trainer writes it (today's ids, config JSON, resolved hparams)."""
    return {**cfg.ids(1), "sweep": cfg.sweep, "status": "complete", "top1": 0.5, "optimizer": cfg.optimizer,
            "hparams": json.dumps(cfg.resolved_hparams(), sort_keys=True), "dataset": cfg.dataset, "workers": 1,
            "seed": cfg.seed, "global_batch": cfg.global_batch, "model": cfg.model,
            "config": json.dumps(cfg.to_dict(), sort_keys=True), **kw}


SYNTHETIC = config.make({"dataset": "synthetic", "sweep": "s"})

# (case, how a newer version writes its row: row changes, patches of bench.results while it writes, expected text)
NEWER_ROWS = [
    ("id rule 3", {"id_version": 3}, {}, "id_version = 3; this nlcg-bench reads rules 1..2"),
    ("id rule not a number", {"id_version": "v3"}, {}, "id_version = 'v3'"),
    ("unknown config field", {"config": json.dumps({**SYNTHETIC.to_dict(), "future_knob": 1})}, {},
     "field(s) future_knob that this nlcg-bench's RunConfig does not know"),
    ("runs-table schema 2", {}, {"RUNS_SCHEMA": 2}, "runs-table schema_version 2; this nlcg-bench reads 1..1"),
]


def newer_folder(folder: Path, change: dict, patches: dict, monkeypatch) -> Path:
    """A folder of one good run (seed 0) and one run (seed 1) written by a newer version; returns its file."""
    results.append_run(folder, good_row(SYNTHETIC), [{"step": 1, "loss": 1.0}])
    newer = dataclasses.replace(SYNTHETIC, seed=1)
    with monkeypatch.context() as m:
        for name, value in patches.items():
            m.setattr(results, name, value)
        return results.append_run(folder, good_row(newer, **change), [{"step": 1, "loss": 1.0}])


@pytest.mark.parametrize("case, change, patches, expected", NEWER_ROWS, ids=[c[0] for c in NEWER_ROWS])
def test_rows_of_a_newer_version_are_refused_by_every_reader_never_counted_done(tmp_path, monkeypatch, case, change,
                                                                                patches, expected):
    folder = tmp_path / "s"
    path = newer_folder(folder, change, patches, monkeypatch)
    newer_id = dataclasses.replace(SYNTHETIC, seed=1).run_id(1)
    readers = {"load_runs": lambda: results.load_runs(folder), "load_history": lambda: results.load_history(folder),
               "completed_ids": lambda: results.completed_ids(folder), "check_readable":
               lambda: results.check_readable(folder), "run_rows": lambda: results.run_rows(folder, newer_id),
               "is_completed": lambda: results.is_completed(folder, newer_id)}
    for name, read in readers.items():
        with pytest.raises(results.NewerVersionError) as e:
            read()
        text = one_line(e)
        assert isinstance(e.value, ConfigError) and text.startswith(f"{path}: ") and expected in text, (name, text)
        assert NEWER in text, name
    # moved out, the folder reads again and the newer run is not done: a sweep trains it under this version
    shutil.move(path, tmp_path / path.name)
    assert results.completed_ids(folder) == {SYNTHETIC.run_id(1)}


def test_every_row_records_its_schema_and_fields_an_older_version_had_are_read(tmp_path, monkeypatch):
    results.append_run(tmp_path, good_row(SYNTHETIC), [])
    assert results.load_runs(tmp_path).schema_version.tolist() == [results.RUNS_SCHEMA]
    # a field an earlier RunConfig had and this one removed: an old row, read as usual
    monkeypatch.setattr(results, "REMOVED_FIELDS", {"old_knob": "0123abc"})
    values = {**SYNTHETIC.to_dict(), "old_knob": 3}
    results.append_run(tmp_path / "old", good_row(SYNTHETIC, config=json.dumps(values)), [])
    assert results.completed_ids(tmp_path / "old") == {SYNTHETIC.run_id(1)}
    # several refused files: the first is named, the others counted
    monkeypatch.setattr(results, "REMOVED_FIELDS", {})
    results.append_run(tmp_path / "old", good_row(dataclasses.replace(SYNTHETIC, seed=2), config=json.dumps(values)),
                       [])
    with pytest.raises(results.NewerVersionError, match=r"old_knob .*\(1 more file\(s\) refused alike"):
        results.load_runs(tmp_path / "old")
    assert results.REMOVED_FIELDS == {}  # git log -p -- bench/config.py: no RunConfig field was ever removed


def test_a_sweep_refuses_a_folder_with_a_newer_row_through_the_cli(tmp_path, monkeypatch):
    out = tmp_path / "out"
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'dataset = "synthetic"\noutput_dir = "{out}"\nsweep = "s"\nsteps = 2\n[grid]\nseed = [0, 1]\n')
    path = newer_folder(out / "s", {"id_version": 3}, {}, monkeypatch)
    before = files_under(out)
    line = cli_error(run_cli(["sweep", str(sweep), "--dry-run"]))
    assert f"{path}: " in line and "id_version = 3" in line and NEWER in line
    assert files_under(out) == before


# ---- the report: folders, study.json, --against, --out ----------------------------------------------------------


def toy_rows(dataset="fashion_mnist", prefix="r", batches=(256, 4096), **kw) -> list[dict]:
    rows = []
    for batch in batches:
        for opt, top1 in (("momentum", 0.6), ("nlcg-fr", 0.7), ("rmsprop", 0.65)):
            for seed in (0, 1):
                rows.append(_run(f"{prefix}{opt}{batch}s{seed}", opt, batch, top1 + 0.01 * seed, seed=seed,
                                 cfg={"dataset": dataset}, dataset=dataset, **kw))
    return rows


def evals(run_id: str, batch: int, every: int = 10, last: int = 200) -> list[dict]:
    """Training and evaluation rows: top-1 = step / (0.4 * 4096 / batch + 100) at each evaluation, rising with the
    steps, sooner at larger batches (so the steps to any target are known from these rows alone)."""
    scale = 0.4 * 4096 / batch + 100
    rows = [{"run_id": run_id, "step": s, "epoch": s / 10, "loss": 1.0, "time_s": 0.1 * s} for s in range(1, last)]
    return rows + [{"run_id": run_id, "step": s, "epoch": s / 10, "loss": math.nan, "time_s": 0.1 * s,
                    "top1": min(0.95, s / scale)} for s in range(every, last, every)]


STUDY = {"claim": None, "tuning_fields": ["base_lr"]}


def write_folder(folder: Path, rows: list[dict], study: dict | None = STUDY):  # noqa: B006 - never changed
    for r in rows:
        results.append_run(folder, r, evals(r["run_id"], r["global_batch"]))
    if study is not None:
        (folder / "study.json").write_text(json.dumps(study))
    return folder


def unreadable(folder: Path) -> Path:
    bad = folder / "runs" / "0123456789abcdef-a1.parquet"
    bad.write_bytes(b"PAR1 not really")
    return bad


def study_json(text: str):
    return lambda folder: (folder / "study.json").write_text(text)


# (case, how the folder is spoiled, the path the message names (relative to the folder; "" the folder), text)
BAD_FOLDERS = [
    ("no such folder", lambda f: shutil.rmtree(f), "", "no such results folder"),
    ("a file, not a folder", lambda f: (shutil.rmtree(f), f.write_text("x")), "", "is a file, not a folder"),
    ("no runs", lambda f: (shutil.rmtree(f), f.mkdir()), "", "no runs (no readable runs/*.parquet)"),
    ("only unreadable runs", lambda f: (shutil.rmtree(f / "runs"), (f / "runs").mkdir(), unreadable(f)), "",
     "no runs (no readable runs/*.parquet, 1 unreadable file(s) skipped)"),
    ("no finished runs", lambda f: (shutil.rmtree(f), results.append_run(f, _run("x", "momentum", 256, math.nan,
                                                                               "failed"), [])), "",
     "no finished runs (1 rows: failed 1)"),
    ("two data sets", lambda f: [results.append_run(f, r, []) for r in toy_rows("cifar10", "c")], "",
     "runs of one data set expected; got 2: cifar10 (12 runs), fashion_mnist (12 runs)"),
    ("two training-set sizes", lambda f: results.append_run(f, {**_run("v", "sgd", 256, 0.5, cfg={
        "validation_size": 1000})}, []), "", "runs of one training-set size expected"),
    ("study.json not JSON", study_json("{'claim': None"), "study.json", "not valid JSON (Expecting property name"),
    ("study.json a list", study_json("[1, 2]"), "study.json", "a JSON list, not an object"),
    ("study.json without tuning_fields", study_json('{"claim": null}'), "study.json", "no key 'tuning_fields'"),
    ("study.json claim a string", study_json('{"claim": "nlcg", "tuning_fields": []}'), "study.json",
     'claim = "nlcg" is not a object or null'),
    ("study.json claim batch a string", study_json('{"claim": {"global_batch": "4096"}, "tuning_fields": []}'),
     "study.json", 'claim.global_batch = "4096" is not a integer'),
    ("study.json claim batch true", study_json('{"claim": {"global_batch": true}, "tuning_fields": []}'),
     "study.json", "claim.global_batch = true is not a integer"),
    ("study.json claim unknown key", study_json('{"claim": {"batch": 4096}, "tuning_fields": []}'), "study.json",
     "claim has unknown key(s) batch"),
    ("study.json epochs of strings", study_json('{"claim": {"epochs": ["2"]}, "tuning_fields": []}'), "study.json",
     'claim.epochs = ["2"] must list integer or numbers'),
    ("study.json tuning fields numbers", study_json('{"claim": null, "tuning_fields": [1]}'), "study.json",
     "tuning_fields = [1] must list field names"),
    ("study.json target out of range", study_json('{"claim": null, "tuning_fields": [], "target_top1": 60}'),
     "study.json", "target_top1 = 60 must be a top-1 in [0, 1]"),
    ("study.json a folder", lambda f: (f / "study.json").unlink() or (f / "study.json").mkdir(), "study.json",
     "cannot be read (Is a directory)"),
    ("study.json not UTF-8", lambda f: (f / "study.json").write_bytes(b"\xff\xfe{"), "study.json",
     "cannot be read (UnicodeDecodeError)"),
    ("a newer row", lambda f: results.append_run(f, {**_run("n", "sgd", 256, 0.5), "id_version": 9}, []),
     "runs/n-a1.parquet", "id_version = 9"),
]


@pytest.fixture()
def toy(tmp_path):
    return write_folder(tmp_path / "results" / "toy", toy_rows())


@pytest.mark.parametrize("case, spoil, named, expected", BAD_FOLDERS, ids=[c[0] for c in BAD_FOLDERS])
def test_a_bad_results_folder_is_one_line_and_nothing_is_written(toy, tmp_path, case, spoil, named, expected):
    spoil(toy)
    out = tmp_path / "fig"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unreadable file's own warning
        with pytest.raises(ConfigError) as e:
            report.write(toy, out)
    text = one_line(e)
    assert text.startswith(f"{toy / named if named else toy}: ") and expected in text, text
    assert not out.exists()


AGAINST = [
    ("a file", lambda f: f.write_text("x"), "--against", "is a file, not a folder"),
    ("two data sets", lambda f: [results.append_run(f, r, []) for r in toy_rows() + toy_rows("cifar10", "c")],
     "", "runs of one data set expected"),
    ("corrupt study.json", lambda f: write_folder(f, toy_rows(prefix="o"), None) and
     (f / "study.json").write_text("{"), "study.json", "not valid JSON"),
    ("newer rows", lambda f: results.append_run(f, {**_run("n", "sgd", 256, 0.5), "id_version": 7}, []), "",
     "id_version = 7"),
]


@pytest.mark.parametrize("case, make, named, expected", AGAINST, ids=[c[0] for c in AGAINST])
def test_a_bad_against_folder_is_one_line_and_nothing_is_written(toy, tmp_path, case, make, named, expected):
    other = tmp_path / "results" / "other"
    make(other)
    out = tmp_path / "fig"
    with pytest.raises(ConfigError) as e:
        report.write(toy, out, against=(other,))
    text = one_line(e)
    assert (named.startswith("--") or str(other / named) in text) and str(other) in text and expected in text, text
    assert not out.exists()


def test_an_out_folder_that_cannot_be_one_writes_nothing(toy, tmp_path):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "fig"):
        with pytest.raises(ConfigError, match=f"--out {out}: {tmp_path / 'file'} is a file") as e:
            report.write(toy, out)
        one_line(e)
    assert (tmp_path / "file").read_text() == "x"


def test_the_report_goes_on_with_one_warning_where_it_honestly_can(toy, tmp_path):
    bad = unreadable(toy)
    cases = {  # --reference -> what the warning says (None: no warning about it)
        None: None, tmp_path / "nope.csv": "no such file", tmp_path: "unreadable",
        tmp_path / "cols.csv": "no column(s) train_size", tmp_path / "bin.csv": "unreadable"}
    (tmp_path / "cols.csv").write_text("dataset,global_batch,optimizer,top1,source\ncifar100,128,sgd,0.6,x\n")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01" * 50)
    for ref, expected in cases.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            doc = report.prepare(toy, tmp_path / "fig", ref, "cifar100", against=(tmp_path / "none",)).doc
        said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        assert len([s for s in said if s.startswith("skipping unreadable results file") and str(bad) in s]) == 1
        assert len([s for s in said if s.startswith(f"--against {tmp_path / 'none'}: no such folder")]) == 1
        about = [s for s in said if s.startswith("--reference")]
        if expected is None:
            assert about == [] and doc["paper_source"] is not None
        else:
            assert len(about) == 1 and str(ref) in about[0] and expected in about[0], about
            assert doc["paper_source"] is None and doc["paper_gains_at_claim"] is None
        assert all("\n" not in s for s in said)
    assert not (tmp_path / "fig").exists()  # prepare writes nothing


def test_the_cli_checks_every_folder_before_writing_any(toy, tmp_path):
    second = write_folder(tmp_path / "results" / "second", toy_rows(prefix="x"))
    (second / "study.json").write_text('{"claim": {"global_batch": "big"}, "tuning_fields": []}')
    out = tmp_path / "fig"
    line = cli_error(run_cli(["report", str(toy), str(second), "--out", str(out)]))
    assert line.startswith(f"error: {second / 'study.json'}: claim.global_batch = \"big\" is not a integer")
    assert not out.exists()
    # and a folder of two data sets (once a ValueError traceback from plots.stats.train_size)
    for r in toy_rows("cifar10", "c"):
        results.append_run(toy, r, [])
    line = cli_error(run_cli(["report", str(toy), "--out", str(out)]))
    assert line == (f"error: {toy}: runs of one data set expected; got 2: cifar10 (12 runs), fashion_mnist (12 runs); "
                    "a report is of one study: move the other runs' files to a folder of their own")
    assert not out.exists()


# ---- the report's defaults: --reference found from anywhere, --paper-dataset as the Makefile's -----------------


def make_variable(name: str, **assign) -> str:
    args = [f"{k}={v}" for k, v in assign.items()]
    p = subprocess.run(["make", "-s", "--no-print-directory", "--eval", f"print-var: ; @echo $({name})", "print-var",
                        *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def old_makefile_rule(profile: str) -> str:
    """The Makefile's PAPER_DATASET before it passed auto: $(if $(findstring cifar,$(PROFILE)),cifar100,imagenet)."""
    return "cifar100" if "cifar" in profile else "imagenet"


def test_paper_dataset_auto_is_the_makefiles_rule_for_every_profile():
    assert make_variable("PAPER_DATASET", PROFILE="mini") == "auto"
    assert make_variable("PAPER_DATASET", PROFILE="cifar100_resnet32") == "auto"
    for toml in sorted((ROOT / "experiments").glob("*.toml")):
        dataset = tomllib.loads(toml.read_text()).get("dataset", RunConfig.dataset)
        runs = pd.DataFrame({"dataset": [dataset]})
        assert report.paper_dataset_for(ROOT / "results" / toml.stem, runs) == old_makefile_rule(toml.stem), toml
    assert report.paper_dataset_for("results/c100", pd.DataFrame({"dataset": ["cifar100"]})) == "cifar100"
    assert report.paper_dataset_for("results/cifar_like", pd.DataFrame({"dataset": ["synthetic"]})) == "cifar100"


def test_the_cli_defaults_hold_wherever_it_runs_from(tmp_path):
    mini = write_folder(tmp_path / "results" / "mini", toy_rows())
    bad = unreadable(mini)
    cifar = write_folder(tmp_path / "results" / "cifar100_resnet32", toy_rows("cifar100", "c", batches=(128, 16384)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = run_cli(["report", str(mini), str(cifar), "--out", "fig"], cwd=elsewhere)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    warned = [ln for ln in p.stderr.splitlines() if ln.startswith("warning: ")]
    assert warned == [f"warning: skipping unreadable results file {bad}: " + warned[0].split(f"{bad}: ", 1)[1]]
    docs = {n: json.loads((elsewhere / "fig" / n / "claims.json").read_text()) for n in ("mini", "cifar100_resnet32")}
    # what `make report` passes (auto) picks what the Makefile's rule picked: mini -> imagenet, cifar -> cifar100
    assert {n: d["paper_dataset"] for n, d in docs.items()} == {"mini": "imagenet", "cifar100_resnet32": "cifar100"}
    # the default reference is the repository's, found from another working directory: the paper's CIFAR gains
    assert docs["cifar100_resnet32"]["paper_source"] and docs["cifar100_resnet32"]["paper_gains_at_claim"]


# ---- one target: re-evaluated from the history at the target the study asks now -----------------------------


BATCHES = (256, 512, 1024, 2048, 4096)


def scaling_rows(target: float, started: str, prefix: str = "t") -> list[dict]:
    rows = []
    for batch in BATCHES:
        for opt in ("momentum", "nlcg-fr"):
            for seed in (0, 1, 2):
                rid = f"{prefix}{opt}{batch}s{seed}"
                hist = pd.DataFrame(evals(rid, batch))
                reach = hist[hist.top1 >= target].step.min()
                rows.append(_run(rid, opt, batch, 0.9, seed=seed, cfg={"target_top1": target}, target_top1=target,
                                 steps_to_target=float(reach), started_at=started))
    return rows


def reach_from_history(rows: list[dict], target: float) -> dict:
    out = {}
    for r in rows:
        hist = pd.DataFrame(evals(r["run_id"], r["global_batch"]))
        out[r["run_id"]] = float(hist[hist.top1 >= target].step.min())
    return out


def reached(prep: pd.DataFrame) -> dict:
    """{the run_id a row was written under: its steps to the target} (rows of the first id rule get today's ids)."""
    written = prep.legacy_run_id.fillna(prep.run_id) if "legacy_run_id" in prep else prep.run_id
    return dict(zip(written, prep.reach, strict=True))


def test_runs_finished_at_one_target_are_reported_at_the_target_the_study_asks_now(tmp_path):
    rows = scaling_rows(0.5, "2026-01-01T00:00:00+00:00")
    folder = write_folder(tmp_path / "results" / "scaling", rows, None)
    sweep = tmp_path / "scaling.toml"  # the study's sweep file, its target since raised to 0.6
    sweep.write_text('dataset = "fashion_mnist"\ntarget_top1 = 0.6\n[grid]\nglobal_batch = [256, 512]\n')
    (folder / "study.json").write_text(json.dumps({"sweep": "scaling", "source": str(sweep), "claim": None,
                                                   "tuning_fields": ["base_lr"]}))
    runs, history = results.load_runs(folder), results.load_history(folder)
    assert set(runs.target_top1) == {0.5}
    prep, used = critical_batch.steps_to_target(runs, history, 0.6)
    want = reach_from_history(rows, 0.6)
    assert used == 0.6 and reached(prep) == want
    assert want != reach_from_history(rows, 0.5)  # the stored steps_to_target answer another target
    made = report.prepare(folder, tmp_path / "fig", paper_dataset="imagenet")
    assert made.doc["target_top1"] == 0.6 and made.doc["target_top1_written"] == [{"target_top1": 0.5, "runs": 30}]
    assert any("re-evaluated from every run's evaluations at 0.6" in c for c in made.doc["caveats"])
    fitted = critical_batch.fits(runs, history, 0.6, draws=50)
    for _, f in fitted.iterrows():  # each batch's mean steps: the 0.6 target's, from the history
        for batch, steps in zip(f.batches, f.mean_steps, strict=True):
            mine = [want[r["run_id"]] for r in rows if r["optimizer"] == f.optimizer and r["global_batch"] == batch]
            assert steps == pytest.approx(np.mean(mine))
    assert "top-1 >= 0.6" in made.figures["critical_batch"].get_suptitle()
    assert "top-1 >= 0.6" in made.figures["steps_to_target"].axes[0].get_title()
    # without a declaration, runs of two targets: the latest run's, with one warning; never a silent mix
    (folder / "study.json").unlink()
    later = scaling_rows(0.6, "2026-02-01T00:00:00+00:00", prefix="u")[:3]
    for r in later:
        results.append_run(folder, r, evals(r["run_id"], r["global_batch"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = report.prepare(folder, tmp_path / "fig", paper_dataset="imagenet")
    said = [str(w.message) for w in caught if "target_top1" in str(w.message)]
    # the 3 reruns (target_top1 is outside the run id) are the latest rows of 3 runs: 27 at 0.5, 3 at 0.6
    assert len(said) == 1 and "0.5 (27 runs), 0.6 (3 runs)" in said[0] and "at 0.6, the latest run's" in said[0]
    assert made.doc["target_top1"] == 0.6
    # no history for a run: its stored steps count only when written under the same target
    prep, _ = critical_batch.steps_to_target(runs, None, 0.6)
    assert prep.reach.isna().all()
    prep, _ = critical_batch.steps_to_target(runs, None, 0.5)
    assert reached(prep) == reach_from_history(rows, 0.5)


# ---- data folders: every reader's check, before anything trains --------------------------------------------------


def fashion(tmp_path: Path) -> Path:
    (tmp_path / "fm").mkdir(parents=True)
    write_fashion(tmp_path / "fm")
    return tmp_path / "fm"


def gz(path: Path, payload: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(payload)


FASHION = [  # (case, the path named, relative to the folder ("": the folder), how it is spoiled, expected text)
    ("no folder", "", shutil.rmtree, "does not exist; valid: a folder holding the four *-ubyte.gz"),
    ("a file for the folder", "", lambda f: (shutil.rmtree(f), f.write_text("x")), "is a file, not a folder"),
    ("a missing file", "t10k-labels-idx1-ubyte.gz", lambda f: (f / "t10k-labels-idx1-ubyte.gz").unlink(), "missing"),
    ("a folder for a file", "t10k-labels-idx1-ubyte.gz",
     lambda f: ((f / "t10k-labels-idx1-ubyte.gz").unlink(), (f / "t10k-labels-idx1-ubyte.gz").mkdir()), "missing"),
    ("not gzip", "train-images-idx3-ubyte.gz", lambda f: (f / "train-images-idx3-ubyte.gz").write_bytes(b"x" * 70),
     "not a readable gzip file"),
    ("truncated gzip", "train-labels-idx1-ubyte.gz", lambda f: (f / "train-labels-idx1-ubyte.gz").write_bytes(
        (f / "train-labels-idx1-ubyte.gz").read_bytes()[:15]), "gzip"),
    ("wrong shape", "train-images-idx3-ubyte.gz",
     lambda f: write_idx(f / "train-images-idx3-ubyte.gz", np.zeros((7, 27, 28)), 2051),
     "IDX dims (7, 27, 28); expected (N, 28, 28)"),
    ("labels for images", "train-images-idx3-ubyte.gz",
     lambda f: write_idx(f / "train-images-idx3-ubyte.gz", np.zeros((7, 28, 28)), 2049),
     "IDX magic 2049; expected 2051"),
    ("counts differ", "train-labels-idx1-ubyte.gz",
     lambda f: write_idx(f / "train-labels-idx1-ubyte.gz", np.zeros(6), 2049), "6 labels for 7 images"),
    ("label 10", "t10k-labels-idx1-ubyte.gz",
     lambda f: write_idx(f / "t10k-labels-idx1-ubyte.gz", np.array([1, 10, 2]), 2049), "label 10; expected 0..9"),
    ("empty split", "t10k-images-idx3-ubyte.gz", lambda f: (
        write_idx(f / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28)), 2051),
        write_idx(f / "t10k-labels-idx1-ubyte.gz", np.zeros(0), 2049)), "no images; expected N >= 1"),
    ("header only", "train-images-idx3-ubyte.gz",
     lambda f: gz(f / "train-images-idx3-ubyte.gz", struct.pack(">4I", 2051, 7, 28, 28)),
     "0 data bytes; the IDX header (7, 28, 28) needs 5488"),
]


def cifar(tmp_path: Path, name: str = "cifar10") -> Path:
    if name == "cifar10":
        write_cifar(tmp_path / "c" / "cifar-10-batches-bin", name, CIFAR10_FILES)
    else:
        write_cifar(tmp_path / "c" / "cifar-100-binary", name, {"train.bin": 5, "test.bin": 3})
    return tmp_path / "c"


def poke(path: Path, offset: int, value: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] = value
    path.write_bytes(bytes(raw))


CIFAR = [  # (case, data set, the path named, how it is spoiled, expected)
    ("no folder", "cifar10", "", shutil.rmtree,
     "does not exist; valid: a folder holding cifar-10-batches-bin/ (download cifar-10-binary.tar.gz"),
    ("a file for the folder", "cifar10", "", lambda f: (shutil.rmtree(f), f.write_text("x")),
     "is a file, not a folder"),
    ("a missing file", "cifar10", "cifar-10-batches-bin/data_batch_4.bin",
     lambda f: (f / "cifar-10-batches-bin" / "data_batch_4.bin").unlink(), "missing"),
    ("truncated", "cifar10", "cifar-10-batches-bin/test_batch.bin",
     lambda f: (f / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"x" * 3000),
     "3000 bytes; expected a positive multiple of 3073"),
    ("empty file", "cifar10", "cifar-10-batches-bin/data_batch_2.bin",
     lambda f: (f / "cifar-10-batches-bin" / "data_batch_2.bin").write_bytes(b""), "0 bytes; expected a positive"),
    ("label 10", "cifar10", "cifar-10-batches-bin/data_batch_1.bin",
     lambda f: poke(f / "cifar-10-batches-bin" / "data_batch_1.bin", 3073, 10), "label 10; expected 0..9"),
    ("fine label 100", "cifar100", "cifar-100-binary/test.bin", lambda f: poke(f / "cifar-100-binary" / "test.bin",
                                                                               1, 100), "label 100; expected 0..99"),
    ("garbled coarse label", "cifar100", "cifar-100-binary/train.bin",
     lambda f: poke(f / "cifar-100-binary" / "train.bin", 3074, 200), "coarse label 200; expected 0..19"),
]


def imagenet(tmp_path: Path, train=((1, 2, 3), (501, 502, 503)), validation=((1000, 7, 8),)) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(parents=True)
    for split, shards in (("train", train), ("validation", validation)):
        for k, labels in enumerate(shards):
            write_shard(folder / f"{split}-{k:05d}-of-{len(shards):05d}", [constant((9 * k, 0, 0))] * len(labels),
                        list(labels))
    return folder


def write_records(path: Path, payloads: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(path)) as w:
        for payload in payloads:
            w.write(payload)


def example(label=None, encoded=b"not a jpeg") -> bytes:
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))}
    if label is not None:
        feature["image/class/label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def jpeg() -> bytes:
    return tf.io.encode_jpeg(constant((0, 0, 0))).numpy()


TRAIN1, VAL0 = "train-00001-of-00002", "validation-00000-of-00001"
IMAGENET = [  # (case, the path named, how it is spoiled, expected)
    ("no folder", "", shutil.rmtree, "does not exist; valid: a folder holding train-NNNNN-of-MMMMM"),
    ("a file for the folder", "", lambda f: (shutil.rmtree(f), f.write_text("x")), "is a file, not a folder"),
    ("no validation shards", "", lambda f: (f / VAL0).unlink(), "no {f}/validation-XXXXX-of-YYYYY files"),
    ("a missing shard", "", lambda f: (f / TRAIN1).unlink(), "has 1 train shards but their names say 00002"),
    ("a folder for a shard", TRAIN1, lambda f: ((f / TRAIN1).unlink(), (f / TRAIN1).mkdir()),
     "not a file; valid: a TFRecord shard"),
    ("an empty shard", TRAIN1, lambda f: (f / TRAIN1).write_bytes(b""), "truncated or not a TFRecord file (0 bytes)"),
    ("a truncated shard", VAL0, lambda f: (f / VAL0).write_bytes((f / VAL0).read_bytes()[:40]),
     "truncated or not a TFRecord file (40 bytes)"),
    ("not a JPEG", "train-00000-of-00002", lambda f: write_records(f / "train-00000-of-00002", [example(3)]),
     "cannot read a tf.train.Example with a JPEG image/encoded"),
    ("no label", VAL0, lambda f: write_records(f / VAL0, [example(None, jpeg())]), "cannot read a tf.train.Example"),
    ("a later record without a label", TRAIN1, lambda f: write_records(f / TRAIN1, [example(5, jpeg()),
                                                                                    example(None, jpeg())]),
     "is not a tf.train.Example with image/encoded and image/class/label"),
    ("0-based labels", TRAIN1, lambda f: write_records(f / TRAIN1, [example(k, jpeg()) for k in (4, 0, 9)]),
     "image/class/label 0 (0-based labels?); valid: 1..1000"),
    ("label 1001", VAL0, lambda f: write_records(f / VAL0, [example(k, jpeg()) for k in (7, 1001)]),
     "image/class/label 1001; valid: 1..1000"),
]


def data_error(cfg: RunConfig) -> str:
    with pytest.raises(data.DataError) as e:
        data.check(cfg)
    assert isinstance(e.value, ConfigError)
    datasets.data_check(cfg.dataset, cfg.data_dir)  # the run id's data check never raises on such a folder
    return one_line(e)


DATA_CASES = [*[("fashion_mnist", *c) for c in FASHION], *[(c[1], c[0], *c[2:]) for c in CIFAR],
              *[("imagenet", *c) for c in IMAGENET]]


@pytest.mark.parametrize("dataset, case, named, spoil, expected", DATA_CASES,
                         ids=[f"{c[0]} {c[1]}" for c in DATA_CASES])
def test_a_bad_data_folder_is_one_line_naming_the_path(tmp_path, monkeypatch, dataset, case, named, spoil, expected):
    monkeypatch.delenv("CIFAR_DIR", raising=False)
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    folder = {"imagenet": imagenet, "fashion_mnist": fashion}.get(dataset, lambda t: cifar(t, dataset))(tmp_path)
    spoil(folder)
    text = data_error(dataclasses.replace(RunConfig(), dataset=dataset, data_dir=str(folder)))
    assert str(folder / named if named else folder) in text and expected.format(f=folder) in text, text


def test_per_shard_records_cover_a_0_based_set_beyond_the_first_record(tmp_path, monkeypatch):
    # label 0 only in the third record of the second shard: the first-record check of old missed it
    folder = imagenet(tmp_path, train=((1, 2, 3), (4, 5, 0)))
    cfg = dataclasses.replace(RunConfig(), dataset="imagenet", data_dir=str(folder))
    assert "train-00001-of-00002: image/class/label 0 (0-based labels?)" in data_error(cfg)
    # and what the check does not read fails the run in the pipeline, naming the label and the valid range
    monkeypatch.setattr(data.imagenet, "LABEL_RECORDS", 3)  # one record per shard
    data.check(cfg)
    stream = data.train_dataset(cfg, workers=1, rank=0, micro_batch=6, accumulation=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside 1\.\.1000") as e:
        next(iter(stream))
    assert "[0]" in str(e.value).splitlines()[0] or "[0]" in str(e.value)
    folder2 = imagenet(tmp_path / "v", validation=((7, 0),))
    cfg2 = dataclasses.replace(cfg, data_dir=str(folder2))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside 1\.\.1000"):
        list(data.eval_dataset(cfg2, workers=1, rank=0, batch=2))
    # a sound set trains as before: labels 0..999
    good = imagenet(tmp_path / "g")
    _, labels = next(iter(data.train_dataset(dataclasses.replace(cfg, data_dir=str(good)), workers=1, rank=0,
                                             micro_batch=6, accumulation=1)))
    assert set(labels.numpy()) <= {0, 1, 2, 500, 501, 502}


def test_synthetic_and_the_validation_split_are_checked_too():
    with pytest.raises(data.DataError, match=r"validation_size = 8192; valid: 0 \.\. 8191") as e:
        data.check(dataclasses.replace(RunConfig(), dataset="synthetic", validation_size=8192))
    one_line(e)


def test_bad_data_through_the_cli_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    folder = imagenet(tmp_path, train=((1, 2, 3), (4, 0, 5)))
    broken = fashion(tmp_path)
    (broken / "train-images-idx3-ubyte.gz").write_bytes((broken / "train-images-idx3-ubyte.gz").read_bytes()[:30])
    cases = [
        (["--set", "dataset=cifar10", "--set", f"data_dir={tmp_path / 'nowhere'}"],
         f"error: cifar10: data folder {tmp_path / 'nowhere'} does not exist"),
        (["--set", "dataset=imagenet", "--set", f"data_dir={folder}", "--set", "model=resnet50"],
         f"error: {folder / 'train-00001-of-00002'}: image/class/label 0 (0-based labels?); valid: 1..1000"),
        (["--set", "dataset=fashion_mnist", "--set", f"data_dir={broken}"],
         f"error: {broken / 'train-images-idx3-ubyte.gz'}: not a readable gzip file"),
    ]
    for args, expected in cases:
        p = run_cli(["train", "--set", f"output_dir={out}", *args])
        assert cli_error(p).startswith(expected), p.stderr[-2000:]
    assert not out.exists()
