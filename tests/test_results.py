import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_config import write_fashion_files

from bench import atomic, config, datasets, results
from conftest import ROOT


def row(run_id, status="complete", **kw):
    return {"run_id": run_id, "sweep": "s", "status": status, "top1": 0.5, **kw}


def published(folder):
    """Every file under folder (temp files included), relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_append_and_load(tmp_path):
    results.append_run(tmp_path, row("a"), [{"run_id": "a", "step": 1, "loss": 2.0}])
    results.append_run(tmp_path, row("b", "diverged"), [{"run_id": "b", "step": 1, "loss": float("nan")}])
    runs = results.load_runs(tmp_path)
    assert list(runs.run_id) == ["a", "b"] and list(runs.columns[:4]) == ["run_id", "attempt", "sweep", "status"]
    assert len(results.load_history(tmp_path, "b")) == 1
    assert results.completed_ids(tmp_path) == {"a", "b"}
    assert results.is_completed(tmp_path, "a") and not results.is_completed(tmp_path, "zzz")


def test_failed_runs_are_not_completed_and_bad_status_rejected(tmp_path):
    results.append_run(tmp_path, row("a", "failed", error="boom"), [])
    assert results.completed_ids(tmp_path) == set() and not results.is_completed(tmp_path, "a")
    with pytest.raises(ValueError, match="complete"):
        results.append_run(tmp_path, row("x", "done"), [])
    with pytest.raises(ValueError, match=r"run_id = '\.\./x' is not a valid file name"):
        results.append_run(tmp_path, row("../x"), [])


def test_each_attempt_is_one_file_written_once(tmp_path):
    results.append_run(tmp_path, row("a", "failed", error="x"), [{"run_id": "a", "step": 1, "loss": 3.0}])
    before = published(tmp_path)
    results.append_run(tmp_path, row("a"), [{"step": s, "loss": 1.0} for s in (1, 2)])  # run_id filled in
    after = published(tmp_path)
    assert sorted(after) == ["history/a-a1.parquet", "history/a-a2.parquet", "runs/a-a1.parquet",
                             "runs/a-a2.parquet"]
    assert {k: after[k] for k in before} == before  # the first attempt's files are untouched
    one = pq.read_table(tmp_path / "runs" / "a-a2.parquet").to_pandas()
    assert len(one) == 1 and one.attempt[0] == 2 and one.status[0] == "complete"
    hist = pq.read_table(tmp_path / "history" / "a-a2.parquet").to_pandas()
    assert list(hist.step) == [1, 2] and set(hist.run_id) == {"a"} and set(hist.attempt) == {2}


def test_appending_reads_no_other_run(tmp_path):
    results.append_run(tmp_path, row("a"), [])
    (tmp_path / "runs" / "a-a1.parquet").write_bytes(b"not parquet")  # would warn if it were read
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results.append_run(tmp_path, row("b"), [{"step": 1, "loss": 1.0}])


def test_empty_store_has_schema(tmp_path):
    assert "top1" in results.load_runs(tmp_path).columns and results.load_history(tmp_path).empty
    assert list(results.load_runs(tmp_path / "missing").columns) == results.RUN_COLUMNS
    assert results.completed_ids(tmp_path / "missing") == set()


def test_run_columns_keep_their_order_with_the_new_ones_in_place():
    cols = results.RUN_COLUMNS
    assert cols[:3] == ["run_id", "config_id", "attempt"] and len(set(cols)) == len(cols)
    for before, new in [("run_id", "config_id"), ("wall_time_s", "train_time_s"), ("train_time_s", "compile_time_s"),
                        ("compile_time_s", "eval_time_s"), ("top5", "val_top1"), ("peak_lr", "base_lr"),
                        ("model", "image_size"), ("image_size", "bn_eval")]:
        assert cols.index(new) == cols.index(before) + 1, new


def test_a_retried_run_is_a_new_attempt_and_history_shows_the_latest(tmp_path):
    results.append_run(tmp_path, row("a", "failed", error="node lost"), [{"run_id": "a", "step": s, "loss": 9.0}
                                                                          for s in (1, 2, 3)])
    results.append_run(tmp_path, row("b"), [{"run_id": "b", "step": 1, "loss": 1.0}])
    results.append_run(tmp_path, row("a"), [{"run_id": "a", "step": s, "loss": 1.0} for s in (1, 2)])
    runs = results.load_runs(tmp_path)
    assert list(zip(runs.run_id, runs.attempt, runs.status, strict=True)) == [
        ("a", 1, "failed"), ("b", 1, "complete"), ("a", 2, "complete")]
    latest = results.load_history(tmp_path, "a")
    assert list(latest.step) == [1, 2] and (latest.loss == 1.0).all() and (latest.attempt == 2).all()
    assert len(results.load_history(tmp_path, "a", all_attempts=True)) == 5  # nothing is deleted
    assert sorted(results.load_history(tmp_path).run_id) == ["a", "a", "b"]


def test_rows_are_ordered_by_start_time_then_attempt(tmp_path):
    results.append_run(tmp_path, row("late", started_at="2026-01-02T00:00:00+00:00"), [])
    results.append_run(tmp_path, row("early", "failed", started_at="2026-01-01T00:00:00+00:00"), [])
    results.append_run(tmp_path, row("early", started_at="2026-01-01T00:00:00+00:00"), [])  # same second
    runs = results.load_runs(tmp_path)
    assert list(zip(runs.run_id, runs.attempt, strict=True)) == [("early", 1), ("early", 2), ("late", 1)]


def test_history_written_before_attempts_existed_still_loads(tmp_path):
    pd.DataFrame([{"run_id": "old", "step": 1, "loss": 1.0}]).to_parquet(tmp_path / "history.parquet")
    results.append_run(tmp_path, row("new"), [{"run_id": "new", "step": 1, "loss": 2.0}])
    assert sorted(results.load_history(tmp_path).run_id) == ["new", "old"]


def test_legacy_single_files_are_read_counted_and_never_rewritten(tmp_path):
    # a folder written by the old layout: one runs.parquet (no new columns), one history.parquet
    pd.DataFrame([{**row("a", "failed", error="x"), "attempt": 1, "started_at": "2025-01-01T00:00:00+00:00"},
                  {**row("b"), "attempt": 1, "started_at": "2025-01-01T00:00:01+00:00"}]).to_parquet(
        tmp_path / "runs.parquet", index=False)
    pd.DataFrame([{"run_id": "a", "attempt": 1, "step": 1, "loss": 5.0}]).to_parquet(tmp_path / "history.parquet")
    legacy = published(tmp_path)
    results.append_run(tmp_path, row("a", val_top1=0.4, started_at="2026-01-01T00:00:00+00:00"),
                       [{"step": 1, "loss": 1.0}])
    assert {k: v for k, v in published(tmp_path).items() if k in legacy} == legacy
    runs = results.load_runs(tmp_path)
    assert list(zip(runs.run_id, runs.attempt, strict=True)) == [("a", 1), ("b", 1), ("a", 2)]
    assert runs.val_top1.isna().tolist() == [True, True, False]  # a column only the new file has
    assert results.completed_ids(tmp_path) == {"a", "b"} and results.is_completed(tmp_path, "b")
    assert list(results.load_history(tmp_path, "a").loss) == [1.0]
    assert list(results.load_history(tmp_path, "a", all_attempts=True).loss) == [5.0, 1.0]


def test_schemas_that_grow_are_unified(tmp_path):
    results.append_run(tmp_path, row("a", steps_to_target=120), [{"step": 1, "loss": 1.0}])
    results.append_run(tmp_path, row("b", steps_to_target=np.nan, error=None, my_metric=3.0),
                       [{"step": 1, "loss": 2.0, "beta": 0.5}])
    runs = results.load_runs(tmp_path)
    assert runs.steps_to_target.tolist()[0] == 120 and np.isnan(runs.steps_to_target.tolist()[1])
    assert list(runs.columns[-1:]) == ["my_metric"] and runs.my_metric.isna().tolist() == [True, False]
    hist = results.load_history(tmp_path)
    assert hist.beta.isna().tolist() == [True, False]


def test_an_unreadable_file_is_named_in_one_warning_and_skipped(tmp_path):
    for rid in "abcde":
        results.append_run(tmp_path, row(rid), [{"step": 1, "loss": 1.0}])
    runs_dir = tmp_path / "runs"
    good = (runs_dir / "a-a1.parquet").read_bytes()
    (runs_dir / "a-a1.parquet").write_bytes(good[: len(good) // 2])  # truncated
    (runs_dir / "b-a1.parquet").write_bytes(b"PAR1 this is not parquet")  # not Parquet
    pd.DataFrame([{"x": 1}]).to_parquet(runs_dir / "c-a1.parquet")  # no run_id column
    pd.DataFrame([{"run_id": 7, "status": "complete"}]).to_parquet(runs_dir / "d-a1.parquet")  # wrong type
    (runs_dir / ".e-a2.parquet.x1y2.tmp").write_bytes(b"half a write")  # temp files are not results
    (runs_dir / ".e-a3.parquet").write_bytes(b"junk")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = results.load_runs(tmp_path)
    assert list(runs.run_id) == ["e"]
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 4 and all("\n" not in m for m in messages)
    for rid, m in zip("abcd", messages, strict=True):
        assert m.startswith(f"skipping unreadable results file {runs_dir / f'{rid}-a1.parquet'}: ")
    with pytest.warns(UserWarning, match="skipping unreadable results file"):
        assert results.completed_ids(tmp_path) == {"e"}
    (tmp_path / "history" / "e-a1.parquet").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"history/e-a1\.parquet"):
        assert sorted(results.load_history(tmp_path).run_id) == ["a", "b", "c", "d"]


def test_a_killed_writer_leaves_no_row_and_the_next_attempt_skips_its_name(tmp_path):
    # killed between its history file and its runs file: a history file without a runs row
    results.append_run(tmp_path, row("a", "failed", error="x"), [{"step": 1, "loss": 9.0}])
    os.unlink(tmp_path / "runs" / "a-a1.parquet")
    results.append_run(tmp_path, row("a"), [{"step": 1, "loss": 1.0}])  # a1 is taken: becomes a2
    runs = results.load_runs(tmp_path)
    assert list(runs.attempt) == [2] and sorted(os.listdir(tmp_path / "runs")) == ["a-a2.parquet"]
    assert list(results.load_history(tmp_path, "a").loss) == [1.0]


def test_a_failed_second_file_unpublishes_the_first(tmp_path, monkeypatch):
    results.append_run(tmp_path, row("a"), [{"step": 1, "loss": 1.0}])
    before = published(tmp_path)
    real_link = os.link

    def link(src, dst):
        if "/runs/" in str(dst):  # the history file got through, the runs file does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(results.WriteError) as e:
        results.append_run(tmp_path, row("b"), [{"step": 1, "loss": 2.0}])
    assert str(e.value) == f"cannot write results to {tmp_path}: No space left on device (ENOSPC)"
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert published(tmp_path) == before  # no b file, no temp file, a's files as they were


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    from bench import results
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))  # smaller than any Parquet file
    try:
        results.append_run(sys.argv[1], {"run_id": "b", "status": "complete", "top1": 0.7},
                           [{"step": s, "loss": 1.0} for s in range(100)])
    except results.WriteError as e:
        print(e)
        sys.exit(3)
""")


def test_a_write_the_disk_refuses_raises_write_error_and_keeps_older_results(tmp_path):
    results.append_run(tmp_path, row("a"), [{"step": 1, "loss": 1.0}])
    before = published(tmp_path)
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == f"cannot write results to {tmp_path}: File too large (EFBIG)\n"
    assert published(tmp_path) == before  # nothing published, no temp file left, a's files untouched
    assert list(results.load_runs(tmp_path).run_id) == ["a"] and len(results.load_history(tmp_path)) == 1


RACE = textwrap.dedent("""
    import os, sys, time
    from bench import results
    folder, gate, me, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    open(os.path.join(gate, me), "w").close()
    while len(os.listdir(gate)) < n:  # start together, once every writer has imported pandas
        time.sleep(0.01)
    for i in range(3):
        results.append_run(folder, {"run_id": "shared", "status": "failed", "error": me}, [{"step": i}])
        results.append_run(folder, {"run_id": f"own-{me}-{i}", "status": "complete"}, [{"step": i}])
""")


def test_concurrent_writers_lose_no_row(tmp_path):
    folder, gate = tmp_path / "sweep", tmp_path / "gate"
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(folder), str(gate), str(i), "3"], cwd=ROOT)
             for i in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    runs = results.load_runs(folder)
    shared = runs[runs.run_id == "shared"]
    assert sorted(shared.attempt) == list(range(1, 10))  # 9 appends, 9 distinct attempts
    assert len(runs) == 18 and len(results.load_history(folder, all_attempts=True)) == 18
    hist = results.load_history(folder, "shared", all_attempts=True)
    assert sorted(hist.attempt) == list(range(1, 10))  # each history file matches its runs row


# ---- a shared file system (NFS) -----------------------------------------------------------------------


def test_a_link_the_nfs_client_retried_after_it_succeeded_is_our_publication(tmp_path, monkeypatch):
    # NFS: the server made our link, its reply was lost, the client sent LINK again and got EEXIST back
    real_link, calls = os.link, []

    def link(src, dst):
        real_link(src, dst)
        calls.append(os.path.basename(os.path.dirname(dst)))
        if len(calls) <= 2:  # this write's history file and its runs file
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)

    monkeypatch.setattr(os, "link", link)
    results.append_run(tmp_path, row("a"), [{"step": 1, "loss": 1.0}])
    assert calls == ["history", "runs"]  # one link each: neither file was taken for someone else's
    assert sorted(published(tmp_path)) == ["history/a-a1.parquet", "runs/a-a1.parquet"]  # no temp file left
    runs = results.load_runs(tmp_path)
    assert list(runs.attempt) == [1] and list(results.load_history(tmp_path, "a").attempt) == [1]


def test_a_name_another_writer_holds_still_takes_the_next_attempt(tmp_path, monkeypatch):
    results.append_run(tmp_path, row("a", "failed", error="x"), [])
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: [n for n in real_listdir(p) if n != "a-a1.parquet"])
    results.append_run(tmp_path, row("a"), [])  # counts no attempt, so tries a1: EEXIST, not ours
    assert sorted(os.listdir(tmp_path / "runs")) == ["a-a2.parquet"]  # the fake listing
    runs = results.load_runs(tmp_path)
    assert list(zip(runs.attempt, runs.status, strict=True)) == [(1, "failed"), (2, "complete")]


def _refuse_directory_fsync(monkeypatch, code):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("code", sorted({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}),
                         ids=errno.errorcode.get)  # ENOTSUP is EOPNOTSUPP on Linux
def test_a_folder_the_file_system_cannot_fsync_is_written_with_one_warning(tmp_path, monkeypatch, code):
    monkeypatch.setattr(atomic, "_refused_dir_fsync", None, raising=False)  # not yet said in this process
    _refuse_directory_fsync(monkeypatch, code)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results.append_run(tmp_path, row("a"), [{"step": 1, "loss": 1.0}])
        results.append_run(tmp_path, row("b"), [{"step": 1, "loss": 1.0}])
    assert list(results.load_runs(tmp_path).run_id) == ["a", "b"] and len(results.load_history(tmp_path)) == 2
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0], messages  # once per process, one line
    assert str(tmp_path / "history") in messages[0] and errno.errorcode[code] in messages[0]


def test_any_other_refused_folder_fsync_still_fails_the_write(tmp_path, monkeypatch):
    results.append_run(tmp_path, row("a"), [{"step": 1, "loss": 1.0}])
    before = published(tmp_path)
    _refuse_directory_fsync(monkeypatch, errno.EIO)
    with pytest.raises(results.WriteError, match=r"Input/output error \(EIO\)$"):
        results.append_run(tmp_path, row("b"), [{"step": 1, "loss": 2.0}])
    assert published(tmp_path) == before


def _hide(monkeypatch, *names):
    """A directory listing that does not show ``names`` (an NFS client's stale cache of the folder)."""
    real_listdir, real_scandir = os.listdir, os.scandir
    monkeypatch.setattr(os, "listdir", lambda p=".": [n for n in real_listdir(p) if n not in names])
    monkeypatch.setattr(os, "scandir", lambda p=".": iter([e for e in real_scandir(p) if e.name not in names]))


def test_a_finished_run_the_listing_does_not_show_is_found_by_name(tmp_path, monkeypatch):
    results.append_run(tmp_path, row("a", "failed", error="x"), [{"step": 1, "loss": 1.0}])
    results.append_run(tmp_path, row("a"), [{"step": 1, "loss": 1.0}])
    results.append_run(tmp_path, row("b", "failed", error="x"), [])
    _hide(monkeypatch, "a-a1.parquet", "a-a2.parquet", "b-a1.parquet")
    assert results.completed_ids(tmp_path) == set()  # the listing's answer
    assert results.is_completed(tmp_path, "a")  # the check a sweep makes right after claiming
    assert not results.is_completed(tmp_path, "b") and not results.is_completed(tmp_path, "c")


def test_finding_by_name_steps_over_a_killed_writers_gap_and_legacy_attempts(tmp_path, monkeypatch):
    pd.DataFrame([{**row("a", "failed", error="x"), "attempt": 1}]).to_parquet(tmp_path / "runs.parquet",
                                                                            index=False)
    results.append_run(tmp_path, row("a", "failed", error="y"), [{"step": 1, "loss": 1.0}])  # a2
    os.unlink(tmp_path / "runs" / "a-a2.parquet")  # killed between its two files: history/a-a2 only
    results.append_run(tmp_path, row("a"), [{"step": 1, "loss": 1.0}])  # a3
    assert sorted(os.listdir(tmp_path / "runs")) == ["a-a3.parquet"]
    _hide(monkeypatch, "a-a2.parquet", "a-a3.parquet")
    assert results.is_completed(tmp_path, "a")


# ---- rows of the first identity rule ------------------------------------------------------------------

FIRST_RULE_NOT_TRAINING = ("sweep", "output_dir", "log_every_steps", "checkpoint_every_epochs", "eval_every_epochs",
                           "eval_batch", "target_top1")


def first_rule_ids(values: dict, hparams: dict, workers: int) -> tuple[str, str]:
    """run_id and config_id as the first rule made them, written out here on its own: every config field but
    the seven above (the data's folder included), the resolved hyperparameters, the workers, numbers as
    floats, SHA-256 of the sorted JSON; config_id the same without the seed."""
    def canon(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, dict):
            return {str(k): canon(x) for k, x in v.items()}
        return [canon(x) for x in v]

    d = canon({**{k: v for k, v in values.items() if k not in FIRST_RULE_NOT_TRAINING}, "hparams": hparams,
               "workers": workers})
    rid = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    d.pop("seed")
    return rid, hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def first_rule_row(cfg, workers: int, status: str = "complete", **kw) -> dict:
    """A runs row as the trainer wrote it before id_version: no id_version, no data_check, a config JSON
    without precise_bn_batch (its eval_batch was PreciseBN's batch), the ids of the first rule."""
    values = {k: v for k, v in cfg.to_dict().items() if k != "precise_bn_batch"}
    hparams = cfg.resolved_hparams()
    rid, cid = first_rule_ids(values, hparams, workers)
    return {"run_id": rid, "config_id": cid, "sweep": cfg.sweep, "status": status, "top1": 0.5,
            "optimizer": cfg.optimizer, "hparams": json.dumps(hparams, sort_keys=True), "dataset": cfg.dataset,
            "workers": workers, "seed": cfg.seed, "config": json.dumps(values, sort_keys=True), **kw}


def test_first_rule_rows_load_under_todays_ids_and_their_history_joins(tmp_path):
    write_fashion_files(tmp_path / "old_place")
    folder = tmp_path / "s"

    def cfg(place, seed, **kw):
        return config.make({"dataset": "fashion_mnist", "data_dir": str(tmp_path / place), "seed": seed, **kw})

    old = [cfg("old_place", s, eval_batch=500) for s in (0, 1)]
    old_ids = [first_rule_row(c, 1)["run_id"] for c in old]
    assert old_ids[0] != old[0].run_id(1)  # the rule did change
    results.append_run(folder, first_rule_row(old[0], 1, started_at="2026-01-01T00:00:00+00:00"),
                       [{"step": s, "loss": 1.0} for s in (1, 2)])
    results.append_run(folder, first_rule_row(old[1], 1, "failed", started_at="2026-01-01T00:00:01+00:00"),
                       [{"step": 1, "loss": 9.0}])
    now = [cfg("old_place", s) for s in (0, 1)]
    new_ids = [c.run_id(1) for c in now]
    # seed 1 retried under today's rule: a new file under its new id
    results.append_run(folder, {**row("x"), **now[1].ids(1), "started_at": "2026-02-01T00:00:00+00:00",
                                "workers": 1, "config": json.dumps(now[1].to_dict())},
                       [{"step": s, "loss": 0.5} for s in (1, 2, 3)])
    written = published(folder)

    runs = results.load_runs(folder)  # the data are still in the rows' own folder
    assert list(runs.run_id) == [new_ids[0], new_ids[1], new_ids[1]]
    assert list(runs.config_id) == [now[0].config_id(1)] * 3
    assert runs.legacy_run_id.tolist()[:2] == old_ids and pd.isna(runs.legacy_run_id[2])
    assert (runs.data_check == results.data_check("fashion_mnist", str(tmp_path / "old_place"))).all()

    # the study moved: the same files elsewhere, the old folder gone; the sweep says where the data are now
    shutil.copytree(tmp_path / "old_place", tmp_path / "new_place")
    shutil.rmtree(tmp_path / "old_place")
    datasets.clear_data_checks()  # as a new process on the other cluster would see them
    hint = {"fashion_mnist": str(tmp_path / "new_place")}
    moved = [cfg("new_place", s).run_id(1) for s in (0, 1)]
    assert moved == new_ids
    assert list(results.load_runs(folder, hint).run_id) == [new_ids[0], new_ids[1], new_ids[1]]
    assert results.completed_ids(folder, hint) == set(new_ids)
    assert new_ids[0] not in results.completed_ids(folder)  # without the hint, the old rows' data are absent

    hist = results.load_history(folder, data_dirs=hint)
    assert set(hist.run_id) == set(new_ids)  # joins the runs table
    first = hist[hist.run_id == new_ids[0]]
    assert list(first.step) == [1, 2] and set(first.legacy_run_id) == {old_ids[0]}
    retried = results.load_history(folder, new_ids[1], data_dirs=hint)  # the latest attempt: today's file
    assert list(retried.step) == [1, 2, 3] and retried.legacy_run_id.isna().all()
    every = results.load_history(folder, new_ids[1], all_attempts=True, data_dirs=hint)
    assert list(every.loss) == [9.0, 0.5, 0.5, 0.5]
    assert published(folder) == written  # nothing was rewritten


def test_rows_written_before_a_field_existed_keep_their_run_under_todays_id(tmp_path):
    # a row of today's rule whose config predates a field: it ran at the field's default, so it is today's run
    cfg = config.make({"dataset": "synthetic", "seed": 3})
    values = {k: v for k, v in cfg.to_dict().items() if k != "precise_bn_images"}
    ids = cfg.ids(1)
    older = {**{k: v for k, v in config.identity(values, 1, hparams=cfg.resolved_hparams(), data=ids["data_check"])
                .items() if k != "precise_bn_images"}}
    old_id = config.hash_fields(older)
    assert old_id != ids["run_id"]
    results.append_run(tmp_path, {**row(old_id), **{k: v for k, v in ids.items() if k != "run_id"}, "workers": 1,
                                  "hparams": json.dumps(cfg.resolved_hparams()), "config": json.dumps(values)},
                       [{"step": 1, "loss": 1.0}])
    runs = results.load_runs(tmp_path)
    assert (runs.run_id[0], runs.legacy_run_id[0]) == (ids["run_id"], old_id)
    assert results.completed_ids(tmp_path) == {ids["run_id"]}
    assert set(results.load_history(tmp_path).run_id) == {ids["run_id"]}
    # and a row whose ids are today's is left alone
    results.append_run(tmp_path / "b", {**row("x"), **ids, "workers": 1, "config": json.dumps(cfg.to_dict()),
                                        "hparams": json.dumps(cfg.resolved_hparams())}, [])
    again = results.load_runs(tmp_path / "b")
    assert again.run_id[0] == ids["run_id"] and again.legacy_run_id.isna().all()


def test_every_column_a_runs_row_carries_is_in_the_one_schema():
    """The runs table's columns are written in one place (bench.results.RUN_SCHEMA, issue 26): the rows that
    bench.train (new_row, with its job and Measured.row) and bench.attempts (crash_row) build name no other, and
    results/README.md documents every one, so a column added to a row without its schema entry fails here."""
    import re
    import types

    from bench import attempts, train
    from bench.config import RunConfig

    cfg = RunConfig(dataset="synthetic", epochs=1)
    world = types.SimpleNamespace(size=1, rank=0, is_chief=True)
    info = types.SimpleNamespace(image_shape=(cfg.synthetic_image_size, cfg.synthetic_image_size, 3),
                                 train_size=cfg.synthetic_train_size)
    rows = {"new_row": {**train.new_row(cfg, world, info, cfg.global_batch, 1, 10), "job": "j",
                        **train.Measured().row()},
            "crash_row": attempts.crash_row(cfg, 1, {"claimed_at": 0, "host": "h", "job": "j"}, "killed")}
    for name, written in rows.items():
        assert not set(written) - set(results.RUN_SCHEMA), (name, sorted(set(written) - set(results.RUN_SCHEMA)))
    assert len(set(results.RUN_SCHEMA)) == len(results.RUN_SCHEMA)
    documented = set(re.findall(r"`([a-z_0-9]+)`", (ROOT / "results" / "README.md").read_text()))
    documented |= {f"{kind}_{what}" for kind in ("model", "dataset")  # the README's "(and model_*, dataset_*)"
                   for what in ("origin", "reference", "version", "source_hash")}
    assert not set(results.RUN_SCHEMA) - documented, sorted(set(results.RUN_SCHEMA) - documented)
