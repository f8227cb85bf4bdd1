"""Logging (bench.log): every line with a timestamp and the rank; the chief's INFO on the console and in the run
attempt's log file results/<sweep>/logs/<run_id>-aN.log, with every rank's WARNING and above; --log-level."""

from __future__ import annotations

import os
import re

import pytest

from bench.results import load_runs
from conftest import requires_horovod, run_cli

TINY = ["dataset=synthetic", "synthetic_image_size=8", "synthetic_train_size=512", "synthetic_test_size=256",
        "width=4", "global_batch=64", "per_worker_batch=32", "steps=4", "log_every_steps=1",
        "eval_every_epochs=0", "precise_bn_images=128", "tensorboard=false", "save_model=false"]
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d rank (\d+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) bench[.\w]*: ")


def _sets(items):
    return [a for item in items for a in ("--set", item)]


def _train(out, *extra, before=(), np_=0, env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return run_cli([*before, "train", *_sets([*TINY, f"output_dir={out}", "sweep=tiny", *extra])], np_=np_,
                   env=env, timeout=600)


def _log_lines(folder, attempt=1):
    [run_id] = set(load_runs(folder).run_id)
    path = folder / "logs" / f"{run_id}-a{attempt}.log"
    assert path.exists(), sorted(p.name for p in (folder / "logs").iterdir())
    lines = path.read_text().splitlines()
    assert lines and all(LINE.match(ln) for ln in lines), lines  # one line per record, each stamped
    return lines


def _info(lines, rank=0):
    return [ln for ln in lines if LINE.match(ln) and LINE.match(ln).groups() == (str(rank), "INFO")]


@pytest.mark.slow
def test_one_worker_logs_the_chiefs_info_with_time_and_rank_to_the_console_and_the_attempts_file(tmp_path):
    p = _train(tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    lines = _log_lines(tmp_path / "tiny")
    assert any("bench.train: step 4 (epoch 0.50): loss" in ln and "top1" in ln for ln in _info(lines))
    console = [ln for ln in p.stdout.splitlines() if LINE.match(ln)]
    assert any("step 4 (epoch 0.50)" in ln for ln in _info(console))
    assert any(ln.startswith("complete: top1") for ln in p.stdout.splitlines())  # program output: plain
    assert "|" in p.stderr  # the progress bar stays


@pytest.mark.slow
def test_log_level_warning_quiets_the_console_not_the_file(tmp_path):
    p = _train(tmp_path, before=["--log-level", "WARNING"])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert not _info(p.stdout.splitlines()), p.stdout[-2000:]
    assert any(ln.startswith("complete: top1") for ln in p.stdout.splitlines())
    assert _info(_log_lines(tmp_path / "tiny"))  # the file keeps the chief's INFO


def test_log_level_is_checked(tmp_path):
    p = run_cli(["--log-level", "LOUD", "list"])
    assert p.returncode == 2 and "--log-level" in p.stderr


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_two_ranks_log_to_one_file_per_attempt_with_rank_1s_error_and_warning(tmp_path):
    # attempt 1: a checkpoint at step 2, then rank 1 fails at step 3 (its ERROR goes to the file)
    ckpt = "checkpoint_every_epochs=0.25"
    p = _train(tmp_path, ckpt, np_=2, env={"BENCH_FAULT": "at=step,step=3,rank=1,kind=raise"})
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    folder = tmp_path / "tiny"
    first = _log_lines(folder, 1)
    assert _info(first, 0) and not _info(first, 1)  # the chief's INFO; rank 1's WARNING and above only
    assert any(" rank 1 ERROR " in ln and "injected fault at step on rank 1" in ln for ln in first), first
    # attempt 2: rank 1's BN statistics of the checkpoint are unreadable: its WARNING, and the run starts over
    [local] = list((folder / "checkpoints").glob("*/local-1-2.npz"))
    local.write_bytes(b"not an npz file")
    p = _train(tmp_path, ckpt, np_=2)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    second = _log_lines(folder, 2)
    assert any(" rank 1 WARNING bench.checkpoint: rank 1: cannot restore its BN statistics" in ln for ln in second)
    assert any("rank 0 INFO bench.train: step 4" in ln for ln in second)
    assert " rank 1 WARNING " in p.stdout  # rank 1's warning on the console too


def test_warnings_during_an_attempt_are_records_of_its_log_with_rank_and_time(tmp_path):
    import logging
    import warnings

    from bench import log

    original = warnings.showwarning
    log.setup(rank=1, level="INFO", chief=False)
    try:
        with log.attempt_log(tmp_path, "rid", 2, rank=1) as path:
            warnings.warn("a value the harness found odd", UserWarning, stacklevel=1)
            warnings.warn("an old call", DeprecationWarning, stacklevel=1)  # shown under pytest's filters
        with pytest.warns(UserWarning, match="after the attempt"):  # the usual way again, not the attempt's file
            warnings.warn("after the attempt", UserWarning, stacklevel=1)
    finally:
        log.setup(rank=0, level="INFO")
    lines = path.read_text().splitlines()
    assert all(LINE.match(ln) and LINE.match(ln).groups() == ("1", "WARNING") for ln in lines), lines
    assert [ln.split("bench.warnings: ", 1)[1].split(" (", 1)[0] for ln in lines] == [
        "UserWarning: a value the harness found odd", "DeprecationWarning: an old call"]
    assert "test_logging.py:" in lines[0]  # where it was raised
    assert warnings.showwarning is original and logging.getLogger("bench.warnings").parent.name == "bench"
