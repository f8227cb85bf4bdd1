"""Issue 25: no run can be stuck for ever, and no launch trains other runs than asked.

A checkpoint that cannot be restored is set aside and its run starts over (bit for bit the fresh run); a run
that fails every time is skipped after ``--max-failures`` failures in a row; a heartbeat blocked in ``flock``
stops its run within the lease and ``release()`` returns; a claim left by an attempt that stored its row is not
recorded as a crash, however a listing lags; every line names its run; under MPI a worker count the launch
contradicts is refused.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from bench import attempts, leases, results, sweep
from bench.results import load_history, load_runs
from conftest import ROOT, requires_horovod, run_cli

TINY = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
eval_every_epochs = 0
log_every_steps = 2
"""


def _write(tmp_path, body, name="toy.toml", out=None, base=TINY):
    path = tmp_path / name
    path.write_text(f'output_dir = "{out or tmp_path / "results"}"\n{base}\n{body}')
    return path


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


# ---- 1. a checkpoint that cannot be restored is set aside; the run starts over as the fresh run ---------------
# 12 steps of 8 per epoch, checkpoints every 4 steps, an evaluation every 4 (ResNet-8 at width 4, NLCG-PR with
# its buffers, the weight EMA): a run failing at step 10 leaves the checkpoint of step 8.
RESUMABLE = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
global_batch = 64
steps = 12
log_every_steps = 1
eval_every_epochs = 0.5
checkpoint_every_epochs = 0.5
optimizer = "nlcg-pr"
eval_ema = true
"""
# what a row measured (not its clocks, host or attempt number)
MEASURED = ["run_id", "status", "steps", "final_train_loss", "top1", "top5", "noise_scale", "steps_to_target"]


def _tear(folder, how: str, rank: int = 0) -> None:
    """Break the checkpoint in ``folder`` (checkpoints/<run_id>/) the way ``how`` says."""
    [ckpt] = [p for p in (folder / "checkpoints").iterdir() if p.is_dir()]
    progress = json.loads((ckpt / "progress.json").read_text())
    assert progress["format"] == 1 and progress["step"] == 8, progress

    def halve(path):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    if how == "history":  # the weights restore, then the history does not: a partial restore on the chief
        halve(ckpt / progress["history"])
    elif how == "data":  # a disk that filled up while the weights were written
        halve(ckpt / f"{progress['checkpoint']}.data-00000-of-00001")
    elif how == "index":
        (ckpt / f"{progress['checkpoint']}.index").unlink()
    elif how == "format":  # written by another version
        (ckpt / "progress.json").write_text(json.dumps({**progress, "format": 99}))
    elif how == "json":
        (ckpt / "progress.json").write_text(json.dumps(progress)[:40])
    elif how == "local":  # one rank's BN statistics: the chief restores, that rank cannot
        halve(ckpt / f"local-{rank}-8.npz")
    else:
        raise ValueError(how)


def _same_run(a_folder, b_folder):
    """The start-over attempt of ``b_folder`` is, bit for bit, the fresh run of ``a_folder``."""
    a, b = load_runs(a_folder), load_runs(b_folder)
    fresh, again = a.iloc[-1], b.iloc[-1]
    assert again.resumed_from_step == 0 and again.status == "complete", b[["status", "resumed_from_step", "error"]]
    for column in MEASURED:  # equal, or both NaN
        x, y = fresh[column], again[column]
        assert x == y or (x != x and y != y), (column, x, y)
    ha, hb = (load_history(f).drop(columns=["time_s", "attempt"]) for f in (a_folder, b_folder))
    assert list(ha.columns) == list(hb.columns) and len(ha) == len(hb) == 12 + 3, (ha.shape, hb.shape)
    assert {"loss", "alpha", "top1"} <= set(ha.columns)
    for column in ha.columns:
        if column == "run_id":
            assert (ha.run_id == hb.run_id).all()
        else:
            np.testing.assert_array_equal(ha[column].to_numpy(float), hb[column].to_numpy(float), err_msg=column)


@pytest.fixture(scope="module")
def failed_at_step_10(tmp_path_factory):
    """(straight results folder, failed results folder with the checkpoint of step 8, its sweep file body)."""
    base = tmp_path_factory.mktemp("resumable")
    folders = {}
    for name, fault in (("straight", ""), ("failed", "at=step,step=10,kind=raise")):
        path = _write(base, RESUMABLE, name=f"{name}.toml", out=base / name, base="")
        p = run_cli(["sweep", str(path)], env=_env(BENCH_FAULT=fault), timeout=300)
        assert p.returncode == (1 if fault else 0), p.stdout[-2000:] + p.stderr[-3000:]
        folders[name] = base / name / name
    assert load_runs(folders["failed"]).status.tolist() == ["failed"]
    return folders["straight"], folders["failed"]


@requires_horovod
@pytest.mark.slow
@pytest.mark.parametrize("how", ["history", "data", "format", "json"])
def test_a_checkpoint_that_cannot_be_restored_is_set_aside_and_the_run_starts_over_as_the_fresh_run(
        tmp_path, failed_at_step_10, how):
    straight, failed = failed_at_step_10
    folder = tmp_path / "again" / "failed"
    shutil.copytree(failed, folder)
    _tear(folder, how)
    [ckpt] = [p for p in (folder / "checkpoints").iterdir()]
    before = sorted(p.name for p in ckpt.iterdir())
    path = _write(tmp_path, RESUMABLE, name="failed.toml", out=tmp_path / "again", base="")
    p = run_cli(["sweep", str(path)], env=_env(), timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    run_id = load_runs(folder).run_id.iloc[0]
    # one line: the run, the error, where its checkpoint went
    [line] = [ln for ln in p.stdout.splitlines() if "cannot be restored" in ln]
    [aside] = list((folder / "checkpoints").glob(f"{run_id}.unusable-*"))
    assert f" bench.checkpoint: run {run_id}: its checkpoint cannot be restored (" in line  # after time, rank, level
    assert f"moved to {aside}" in line
    assert "starting over from step 0" in line
    assert sorted(p.name for p in aside.iterdir()) == before  # kept whole, for inspection
    assert load_runs(folder).status.tolist() == ["failed", "complete"]
    assert not (folder / "checkpoints" / run_id).exists()  # the finished run's own checkpoint is removed
    _same_run(straight, folder)
    if how == "history":
        again = run_cli(["sweep", str(path)], env=_env(), timeout=300)  # done: the set-aside one is left alone
        assert again.returncode == 0 and "1 runs, 1 done, 0 to run" in again.stdout and aside.exists()


def test_a_failed_partial_restore_puts_back_every_freshly_built_value(tmp_path, capsys):
    """The restore of a checkpoint whose weights read and whose history does not: every variable the
    checkpoint tracks (weights, BN statistics, NLCG's buffers, the EMA) is assigned, then the error; the run
    must then hold its fresh values, not the checkpoint's."""
    import tensorflow as tf

    from bench import checkpoint, config, data, distributed, train

    cfg = config.make({"dataset": "synthetic", "synthetic_image_size": 8, "synthetic_train_size": 512,
                       "synthetic_test_size": 256, "width": 4, "global_batch": 64, "steps": 12,
                       "checkpoint_every_epochs": 0.5, "optimizer": "nlcg-pr", "eval_ema": True,
                       "output_dir": str(tmp_path), "sweep": "partial"})
    world, info = distributed.World(), data.info(cfg)
    saved = train._build(cfg, world, info, 1, 12, cfg.run_id(1))
    for v in saved.checkpoint._variables():  # the checkpoint's values differ from a fresh build's everywhere
        v.assign(v.numpy() + np.ones_like(v.numpy()))
    saved.checkpoint.save(8, {"blocks": [], "row": {}}, [{"step": 8, "loss": 1.0}])
    ckpt_dir = checkpoint.directory(tmp_path / "partial", cfg.run_id(1))
    assert json.loads((ckpt_dir / "progress.json").read_text())["format"] == checkpoint.FORMAT
    # every variable the checkpoint holds is one the snapshot covers (save counter and object graph aside)
    tracked = [n for n, _ in tf.train.list_variables(str(ckpt_dir / "ckpt-8"))
               if "save_counter" not in n and "_CHECKPOINTABLE_OBJECT_GRAPH" not in n]
    assert len(tracked) == len(saved.checkpoint._variables())

    tf.keras.backend.clear_session()
    fresh = train._build(cfg, world, info, 1, 12, cfg.run_id(1))
    built = fresh.checkpoint._values()
    (ckpt_dir / "history-8.parquet").write_bytes(b"PAR1 torn")
    lines = []
    assert fresh.checkpoint.restore(say=lines.append) == (0, {}, [])
    for v, value in zip(fresh.checkpoint._variables(), built, strict=True):
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.name)
    [line] = lines
    assert f"run {cfg.run_id(1)}: its checkpoint cannot be restored (" in line and ".unusable-" in line
    assert not ckpt_dir.exists() and len(list(ckpt_dir.parent.glob("*.unusable-*"))) == 1
    # the control: an intact checkpoint restores the saved values (so the test above tested something)
    tf.keras.backend.clear_session()
    saved.checkpoint.directory = ckpt_dir
    saved.checkpoint.save(8, {"blocks": [], "row": {}}, [{"step": 8, "loss": 1.0}])
    again = train._build(cfg, world, info, 1, 12, cfg.run_id(1))
    assert again.checkpoint.restore(say=lines.append)[0] == 8 and len(lines) == 1
    moved = [not np.array_equal(v.numpy(), b) for v, b in zip(again.checkpoint._variables(), built, strict=True)]
    assert all(moved)


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_two_workers_start_over_as_the_fresh_run_when_the_chiefs_or_a_peers_part_cannot_be_restored(tmp_path):
    folders = {}
    for name, fault in (("straight", ""), ("failed", "at=step,step=10,rank=1,kind=raise")):
        path = _write(tmp_path, RESUMABLE, name=f"{name}.toml", out=tmp_path / name, base="")
        p = run_cli(["sweep", str(path)], np_=2, env=_env(BENCH_FAULT=fault), timeout=300)
        assert p.returncode == (1 if fault else 0), p.stdout[-2000:] + p.stderr[-3000:]
        folders[name] = tmp_path / name / name
    assert load_runs(folders["failed"]).status.tolist() == ["failed"]
    for how in ("history", "local"):  # the chief's partial restore; rank 1's BN file (the ranks' agreement)
        folder = tmp_path / how / "failed"
        shutil.copytree(folders["failed"], folder)
        _tear(folder, how, rank=1)
        path = _write(tmp_path, RESUMABLE, name="failed.toml", out=tmp_path / how, base="")
        p = run_cli(["sweep", str(path)], np_=2, env=_env(), timeout=300)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
        run_id = load_runs(folder).run_id.iloc[0]
        assert p.stdout.count(f"run {run_id}: its checkpoint cannot be restored") == 1, p.stdout[-3000:]
        if how == "local":
            assert "rank 1: cannot restore its BN statistics" in p.stdout
        assert len(list((folder / "checkpoints").glob(f"{run_id}.unusable-*"))) == 1
        _same_run(folders["straight"], folder)


# ---- 2. a run that fails every time is skipped after --max-failures failures in a row ----------------------------


def test_failures_in_a_row_count_across_jobs_and_a_result_or_a_crash_ends_the_streak():
    runs = pd.DataFrame({
        "run_id": ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d"],
        "status": ["failed", "failed", "failed", "failed", "crashed", "failed", "failed", "failed", "complete",
                   "failed"],
        "job": ["j0", "j1", "j2", "j0", "j1", "j2", "j0", "j1", "j2", "j3"],
        "error": ["e0", "e1", "e2", "x", "y", "z", "", "", "", "d0"],
        "started_at": ["3", "1", "2", "1", "2", "3", "1", "2", "3", "1"]})  # a's rows out of order on disk
    past = attempts.Past.of(runs, "j3")
    assert past.failed_in_a_row == {"a": 3, "b": 1, "d": 1} and past.last_failure["a"] == "e0"
    why = past.skip_reason("a", 2, 3)
    assert why == "failed 3 time(s) in a row, the limit (last: e0); to try it again: --max-failures 4"
    assert past.skipped("a", 2, 3) == "failed" and past.skip_reason("a", 2, 4) == ""
    assert past.skip_reason("b", 2, 2) == "" and past.skip_reason("c", 2, 1) == ""
    assert past.failed_here == {"d"} and past.skip_reason("d", 2) == ""  # the default limit: 3


@requires_horovod
@pytest.mark.slow
def test_a_run_that_fails_every_time_is_skipped_after_max_failures_and_dry_run_shows_it(tmp_path):
    path = _write(tmp_path, "steps = 2\nglobal_batch = 64\n[launch]\nmax_failures = 2\n[grid]\nseed = [0, 1]\n")
    fault = _env(BENCH_FAULT="at=step,step=1,kind=raise,seed=0")  # seed 0 fails every time; seed 1 trains
    for _ in (1, 2):  # two invocations, each failing seed 0 once
        p = run_cli(["sweep", str(path)], env=fault)
        assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    runs = load_runs(tmp_path / "results" / "toy")
    assert sorted(zip(runs.seed, runs.status, strict=True)) == [(0, "failed"), (0, "failed"), (1, "complete")]
    run_id = runs[runs.seed == 0].run_id.iloc[0]
    p = run_cli(["sweep", str(path)], env=fault)  # the file's [launch] max_failures = 2: skipped, nothing tried
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    [line] = [ln for ln in p.stdout.splitlines() if "skipping" in ln]
    assert f"skipping run {run_id} (seed=0): failed 2 time(s) in a row, the limit (last: " in line, line
    assert "InjectedFault" in line and line.endswith("to try it again: --max-failures 3")
    assert len(load_runs(tmp_path / "results" / "toy")) == 3
    dry = run_cli(["sweep", str(path), "--dry-run"])
    row = next(ln for ln in dry.stdout.splitlines() if run_id in ln)
    assert "skipped (failed)" in row and row.split()[-2] == "2" and "0 to run" in dry.stdout, dry.stdout
    dry = run_cli(["sweep", str(path), "--dry-run", "--max-failures", "3"])  # the way back the line names
    assert "failed (will retry)" in dry.stdout and "1 to run" in dry.stdout, dry.stdout
    p = run_cli(["sweep", str(path), "--max-failures", "0"])
    assert p.returncode == 2 and "--max-failures 0" in p.stderr and "must be >= 1" in p.stderr


# ---- 3. a heartbeat blocked in flock stops its run within the lease; release() returns -------------------------
LEASE = 2.0  # heartbeats every 0.25 s; lost after 1 s without one; release waits 0.5 s for the lock
HOLDER = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644); "
          "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)")


def _blocked_claim_is_lost_and_released_in_time(tmp_path, run_id: str, offset: float, block) -> tuple[float, float]:
    """Claim ``run_id``, wait ``offset`` s (a moment in the heartbeat's cycle), make the lock unobtainable
    (``block()``); check() must raise within the lease and release() return within a quarter lease and a beat.
    Returns (seconds until lost, seconds release took)."""
    mine = leases.claim(tmp_path, run_id, lease_s=LEASE, heartbeat_s=0.25)
    time.sleep(offset)
    mine.check()  # held
    block()
    t0 = time.monotonic()
    while True:
        try:
            mine.check()
        except leases.ClaimLost as e:
            lost = time.monotonic() - t0
            assert "not written for" in str(e) and run_id in str(e), e
            break
        assert time.monotonic() - t0 < LEASE, "the claim was still held a lease after its heartbeat blocked"
        time.sleep(0.01)
    t1 = time.monotonic()
    with pytest.raises(OSError, match="not granted within"):
        mine.release()  # it cannot know the file is still ours without the lock: left to go stale
    took = time.monotonic() - t1
    assert took < LEASE / 4 + 0.25 + 0.5, took
    assert lost < LEASE / 2 + 0.3, lost  # judged by check() from the clock, whatever the thread does
    return lost, took


def test_a_lock_held_by_another_process_stops_the_claim_within_the_lease(tmp_path):
    times = []
    for i, offset in enumerate((0.0, 0.06, 0.13, 0.19, 0.31)):  # moments of the 0.25 s heartbeat cycle
        folder = tmp_path / f"t{i}"
        (folder / "claims").mkdir(parents=True)
        holder = None

        def block(folder=folder):
            nonlocal holder
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / "claims" / ".lock")],
                                      stdout=subprocess.PIPE, text=True)
            assert holder.stdout.readline() == "held\n"

        try:
            times.append(_blocked_claim_is_lost_and_released_in_time(folder, f"r{i}", offset, block))
        finally:
            if holder is not None:
                holder.kill()
                holder.wait(timeout=60)
        if i < 4:
            continue
        # the lock is free again: a takeover waits for it and gets it (the claim went stale: no heartbeat)
        time.sleep(LEASE + 0.1)
        taken = leases.claim(folder, f"r{i}", lease_s=LEASE)
        assert taken is not None and taken.previous is not None
        taken.release()
        assert not (folder / "claims" / f"r{i}.claim").exists()
    print("lost after / release took (s):", [(round(a, 2), round(b, 2)) for a, b in times])


def test_a_flock_that_never_returns_stops_the_claim_and_leaves_no_lock_behind(tmp_path, monkeypatch):
    import fcntl

    real = fcntl.flock
    gates = []

    def hung(fd, op):  # as on a hung NFS lock server: the call itself never returns (LOCK_NB or not)
        gates[-1].wait()
        return real(fd, op)

    for i, offset in enumerate((0.0, 0.04, 0.11, 0.17, 0.23, 0.3)):
        gates.append(threading.Event())
        try:
            _blocked_claim_is_lost_and_released_in_time(
                tmp_path, f"h{i}", offset, lambda: monkeypatch.setattr(leases.fcntl, "flock", hung))
        finally:
            monkeypatch.setattr(leases.fcntl, "flock", real)
            gates[-1].set()  # the stuck calls return now: each drops the lock it was granted late
    deadline = time.time() + 10
    while time.time() < deadline and any(t.name.startswith("claims-lock-") for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("claims-lock-")]
    with leases._locked(tmp_path / "claims", wait=1.0):  # nobody holds it
        pass


# ---- 4. a claim left by an attempt that stored its row is no crash, however the listing lags ------------------


def _stale_claim_of(folder, run_id: str, job: str) -> None:
    """The claim a process on this machine left when it died after writing its row (its pid is gone)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = time.time()
    path = folder / "claims" / f"{run_id}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "host": "h", "where": leases.machine(), "pid": int(dead.stdout),
                                "token": "dead", "claimed_at": now - 5, "heartbeat": now - 1, "job": job,
                                "ranks": [0]}))


@pytest.mark.parametrize("status", ["complete", "failed", None])
def test_no_crashed_row_for_an_attempt_that_has_its_row_when_the_listing_misses_it(tmp_path, monkeypatch, status):
    s = sweep.load(_write(tmp_path, "steps = 2\nglobal_batch = 64\n"))
    [cfg] = s.runs
    run_id, folder = cfg.run_id(1), cfg.results_dir
    if status:
        results.append_run(folder, {**attempts.crash_row(cfg, 1, {"job": "jobA"}, ""), "status": status,
                                    "error": "boom" if status == "failed" else ""}, [])
    _stale_claim_of(folder, run_id, "jobA")
    real_files = results._files
    monkeypatch.setattr(results, "_files", lambda d, run_id=None: [])  # the listing lags: it shows no file
    assert len(load_runs(folder)) == 0 and len(results.run_rows(folder, run_id)) == (1 if status else 0)
    lines = []
    got, held = sweep.claim_next(s, 1, sweep.Group("jobB", 0, [0]), say=lines.append)
    monkeypatch.setattr(results, "_files", real_files)
    statuses = load_runs(folder).status.tolist()
    if status == "complete":  # finished: not trained again, nothing recorded, the left claim removed
        assert (got, held) == (None, None) and lines == [] and statuses == ["complete"]
        assert not (folder / "claims" / f"{run_id}.claim").exists()
        return
    assert got is cfg and held is not None
    held.release()
    if status == "failed":  # retried by this job, and no crashed row for the attempt that wrote its failed row
        assert statuses == ["failed"], statuses
        [line] = lines
        assert line.startswith(f"[group 0] an earlier attempt of run {run_id} on h (pid ")
        assert "stored its row but left its claim behind" in line and "(not counted as a crash)" in line
    else:  # the control: no row anywhere, so the attempt did die: one crashed row
        assert statuses == ["crashed"] and "without a trace" in lines[0] and run_id in lines[0]


@requires_horovod
@pytest.mark.slow
def test_a_sweep_whose_lock_hangs_mid_run_stops_the_run_and_the_next_invocation_retries_it_without_a_crash(
        tmp_path):
    path = _write(tmp_path, "steps = 6\nglobal_batch = 64\n")
    claims_dir = tmp_path / "results" / "toy" / "claims"
    lease = _env(BENCH_CLAIM_LEASE_S="4")
    # the run sleeps 8 s after its first step, then checks its claim: by then the lock has been held 6+ s
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**lease, "BENCH_FAULT": "at=step,step=1,kind=sleep,seconds=8"})
    holder = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(claims_dir.glob("*.claim")) and proc.poll() is None:
            time.sleep(0.02)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(claims_dir / ".lock")], stdout=subprocess.PIPE,
                                  text=True)
        assert holder.stdout.readline() == "held\n"
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=120)
        ended = time.monotonic() - t0
    finally:
        proc.kill()
        if holder is not None:
            holder.kill()
            holder.wait(timeout=60)
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    runs = load_runs(tmp_path / "results" / "toy")
    run_id = runs.run_id.iloc[0]
    assert runs.status.tolist() == ["failed"] and "ClaimLost: heartbeat of the claim" in runs.error.iloc[0]
    assert runs.steps.iloc[0] == 0 and ended < 8 + 30, ended  # stopped at its first check
    assert f"warning: cannot release the claim on {run_id}" in out  # the lock still hung: left to go stale
    assert list(claims_dir.glob("*.claim"))
    again = run_cli(["sweep", str(path)], env=lease)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert f"an earlier attempt of run {run_id} on " in again.stdout and "stored its row" in again.stdout
    assert load_runs(tmp_path / "results" / "toy").status.tolist() == ["failed", "complete"]  # no crashed row
    print(f"the hung lock stopped the run {ended:.1f} s after it was taken (8 s of it the injected sleep)")


# ---- 5. every line names its run --------------------------------------------------------------------------------


def test_every_description_names_the_run_id_and_its_grid_values(tmp_path):
    plain = sweep.load(_write(tmp_path, "steps = 2\n", name="plain.toml"))
    grid = sweep.load(_write(tmp_path, "steps = 2\n[grid]\nseed = [0, 1]\noptimizer = [\"sgd\"]\n", name="g.toml"))
    [cfg] = plain.runs
    assert sweep._describe(plain, cfg, 1) == cfg.run_id(1)
    cfg = grid.runs[1]
    assert sweep._describe(grid, cfg, 2) == f"{cfg.run_id(2)} (seed=1, optimizer=sgd)"


# ---- 6. under MPI, a worker count the launch contradicts is refused ------------------------------------------


@requires_horovod
@pytest.mark.mpi
def test_under_mpirun_a_worker_count_the_launch_contradicts_is_refused_and_nothing_is_written(tmp_path):
    path = _write(tmp_path, "steps = 2\nglobal_batch = 64\n[grid]\nseed = [0]\n")
    p = run_cli(["sweep", str(path), "--workers", "1"], np_=2, timeout=120)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    lines = {ln for ln in p.stderr.splitlines() if ln.startswith("error: ")}
    assert lines == {"error: --workers 1 disagrees with this launch: 2 MPI rank(s) in 1 group(s) (--pack 1) give 2 "
                     "worker(s) per run; valid: --workers 2 here, or launch 1 ranks (mpirun -np 1) for --workers 1 "
                     "--pack 1"}, p.stderr[-3000:]
    launched = _write(tmp_path, "steps = 2\nglobal_batch = 64\n[launch]\nworkers = 1\npack = 1\n", name="l.toml")
    p = run_cli(["sweep", str(launched)], np_=2, timeout=120)  # the file's [launch] workers: the same rule
    assert p.returncode == 2 and f"{launched}'s [launch] workers = 1 disagrees with this launch" in p.stderr
    assert not (tmp_path / "results").exists()  # nothing declared, claimed or trained


def test_the_relaunch_under_mpirun_carries_the_worker_count_for_the_child_to_check(tmp_path):
    fake = tmp_path / "bin" / "mpirun"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'argv'}\n")
    fake.chmod(0o755)
    path = _write(tmp_path, "steps = 2\nglobal_batch = 64\n[launch]\nworkers = 2\nmax_failures = 5\n")
    p = run_cli(["sweep", str(path), "--pack", "1"], env=_env(PATH=f"{fake.parent}:{os.environ['PATH']}"))
    assert p.returncode == 0, p.stderr[-3000:]
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:2] == ["-np", "2"] and argv[argv.index("sweep"):] == [
        "sweep", str(path), "--workers", "2", "--pack", "1", "--max-crashes", "2", "--max-failures", "5"]
    assert not (tmp_path / "results").exists()
