"""Fault injection with real processes: a failure on one rank ends the run on every rank (no hang), sweeps
sharing a folder train each run once, a killed sweep resumes, a failed results write loses nothing."""

import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from bench import leases
from bench.results import load_runs
from conftest import PYTHON, ROOT, mpirun, requires_horovod, run_cli

TINY = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
eval_every_epochs = 0
log_every_steps = 2
precise_bn_images = 256
"""


def _example(jpeg: bytes, label: int) -> bytes:
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
               "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _imagenet_with_a_bad_jpeg_on_rank_1(folder):
    """Two train shards: rank 0 reads shard 0 (good), rank 1 shard 1, whose records are not JPEGs."""
    good = tf.io.encode_jpeg(np.full((40, 48, 3), 128, np.uint8)).numpy()
    for shard, jpeg in enumerate((good, b"\xff\xd8 this is not a jpeg")):
        with tf.io.TFRecordWriter(str(folder / f"train-{shard:05d}-of-00002")) as w:
            for i in range(8):
                w.write(_example(jpeg, 1 + i % 3))
    with tf.io.TFRecordWriter(str(folder / "validation-00000-of-00001")) as w:
        for i in range(4):
            w.write(_example(good, 1 + i % 3))


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_an_error_on_one_rank_fails_the_run_on_every_rank_and_the_sweep_goes_on(tmp_path):
    data_dir = tmp_path / "imagenet"
    data_dir.mkdir()
    _imagenet_with_a_bad_jpeg_on_rank_1(data_dir)
    sweep = tmp_path / "bad.toml"
    sweep.write_text(f'output_dir = "{tmp_path}/results"\ndataset = "imagenet"\ndata_dir = "{data_dir}"\n'
                     'model = "resnet8"\nwidth = 16\nglobal_batch = 4\nper_worker_batch = 2\nsteps = 3\n'
                     'eval_every_epochs = 0\nprecise_bn_images = 4\n[grid]\nseed = [0, 1]\n')
    t0 = time.perf_counter()
    p = run_cli(["sweep", str(sweep)], np_=2, timeout=240)
    took = time.perf_counter() - t0
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    runs = load_runs(tmp_path / "results" / "bad")
    # both runs were tried (the sweep went on after the first failure), each failed on every rank
    assert len(runs) == 2 and (runs.status == "failed").all() and runs.seed.tolist() == [0, 1]
    for error in runs.error:
        assert error.startswith("rank 1: ") and "rank 0" not in error, error
        assert "jpeg" in error.lower() or "JPEG" in error, error
    assert took < 120, f"the failure took {took:.0f} s to end the sweep"
    print(f"2 failed runs recorded in {took:.1f} s (sweep start to exit)")


def _sweep_file(tmp_path, grid: str, steps: int = 6) -> str:
    path = tmp_path / "toy.toml"
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\nsteps = {steps}\nglobal_batch = 64\n[grid]\n{grid}\n')
    return str(path)


def _counts(tmp_path):
    runs = load_runs(tmp_path / "results" / "toy")
    return runs, runs.groupby("run_id").size()


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path):
    path = _sweep_file(tmp_path, 'seed = [0, 1, 2, 3]\noptimizer = ["momentum"]')
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen(mpirun(2, "-m", "bench", "sweep", path), cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    runs, per_run = _counts(tmp_path)
    assert len(per_run) == 4 and (per_run == 1).all(), per_run
    assert (runs.status == "complete").all()
    # both processes trained some (the claims shared the work rather than one process doing all)
    trained = [out.count("complete: top1") for out, _ in outs]
    assert sum(trained) == 4, trained


# ---- the fault matrix: one injected fault (bench/faults.py) per moment of a run --------------------------
# A sweep of two runs on 2 ranks; the fault follows seed 0's run, so seed 1's run shows that the sweep goes on.
# Every case states its bound (sweep start to exit) and the rows it must leave.

FAST_STALL = {"HOROVOD_STALL_CHECK_TIME_SECONDS": "2", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "5",
              "BENCH_PEER_TIMEOUT_S": "5"}


def _fault_sweep(tmp_path, fault: str, grid: str = "seed = [0, 1]", extra: str = "", np_: int = 2,
                 flags=(), env=None, timeout=240):
    path = tmp_path / "toy.toml"
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\nsteps = 6\nglobal_batch = 64\n{extra}\n'
                    f'[grid]\n{grid}\n')
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {}), "BENCH_FAULT": fault}
    t0 = time.perf_counter()
    p = subprocess.run(mpirun(np_, "-m", "bench", "sweep", str(path), *flags), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    return p, load_runs(tmp_path / "results" / "toy"), time.perf_counter() - t0, str(path)


def _by_seed(runs):
    return {int(seed): rows.status.tolist() for seed, rows in runs.groupby("seed")}


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("at, extra, threads", [
    ("data", "", "1"),
    ("compile", "", "1"),  # inside the tracing of the first step
    ("step,step=1", "", "1"),  # early: right after the first step
    ("step,step=5", "", "1"),  # late: mid-training
    ("step,step=5", "", "2"),  # the same with 2 intra-op threads per rank
    ("eval", "", "1"),
    ("checkpoint,step=2", "checkpoint_every_epochs = 0.25", "1"),
])
def test_an_exception_at_any_moment_on_one_rank_is_one_failed_row_and_the_sweep_goes_on(tmp_path, at, extra,
                                                                                       threads):
    p, runs, took, _ = _fault_sweep(tmp_path, f"at={at},rank=1,kind=raise,seed=0", extra=extra,
                                    env={"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads})
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert _by_seed(runs) == {0: ["failed"], 1: ["complete"]}, runs[["seed", "status", "error"]]
    error = runs[runs.seed == 0].error.iloc[0]
    assert error.startswith("rank 1: InjectedFault: injected fault at") and "rank 0" not in error, error
    assert took < 90, f"{at}: {took:.0f} s"
    print(f"{at} ({threads} thread(s)): failed row and the next run in {took:.1f} s")


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_a_failed_results_write_on_the_chief_loses_that_run_only_and_the_next_invocation_retries_it(tmp_path):
    p, runs, took, path = _fault_sweep(tmp_path, "at=results,rank=0,kind=raise,seed=0")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert _by_seed(runs) == {1: ["complete"]} and "InjectedFault" in p.stdout
    assert not list((tmp_path / "results" / "toy" / "claims").glob("*.claim"))  # released all the same
    assert took < 90, took
    print(f"results write failed: the next run's row and a clean exit in {took:.1f} s")
    again = run_cli(["sweep", path], np_=2)
    assert again.returncode == 0 and _by_seed(load_runs(tmp_path / "results" / "toy")) == {
        0: ["complete"], 1: ["complete"]}


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_an_error_choosing_the_next_run_ends_the_group_cleanly_not_in_a_hang(tmp_path):
    p, runs, took, _ = _fault_sweep(tmp_path, "at=claim,rank=0,kind=raise")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert "cannot choose the next run: InjectedFault" in p.stdout and len(runs) == 0
    assert took < 60, took
    print(f"claim_next error: the group ended in {took:.1f} s")


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("kind, signal_words", [("segv", "Segmentation fault"), ("abort", "Aborted")])
def test_a_native_crash_is_a_counted_attempt_and_the_run_is_skipped_after_two(tmp_path, kind, signal_words):
    fault = f"at=step,step=3,rank=1,kind={kind},seed=0"
    folder = tmp_path / "results" / "toy"
    for attempt in (1, 2):  # each invocation dies with the run: no row of its own ...
        p, runs, took, path = _fault_sweep(tmp_path, fault)
        assert p.returncode != 0 and took < 90, (p.returncode, took)
        print(f"{kind}: invocation {attempt} died in {took:.1f} s")
        # ... and the next claimant records the dead attempt, from rank 1's faulthandler report
        assert (runs.status == "crashed").sum() == attempt - 1
    p, runs, took, _ = _fault_sweep(tmp_path, fault)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert _by_seed(runs) == {0: ["crashed", "crashed"], 1: ["complete"]}, runs[["seed", "status"]]
    print(f"{kind}: the third invocation recorded the 2nd crash, skipped the run and trained the next in {took:.1f} s")
    for error in runs[runs.status == "crashed"].error:
        assert "world rank 1" in error and signal_words in error and "faults.py" in error, error
    crashed_id = runs[runs.status == "crashed"].run_id.iloc[0]  # every line about a run names its run_id
    assert f"skipping run {crashed_id} (seed=0): crashed 2 time(s)" in p.stdout and "--max-crashes 3" in p.stdout
    dry = run_cli(["sweep", path, "--workers", "2", "--dry-run"])
    assert "skipped (crashed)" in dry.stdout and "0 to run" in dry.stdout
    again = run_cli(["sweep", path, "--workers", "2", "--max-crashes", "3", "--dry-run"])
    assert "1 to run" in again.stdout  # the way back that the skip line names
    assert not list((folder / "claims").glob("*.claim"))


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_a_rank_that_stops_without_raising_ends_the_job_naming_it(tmp_path):
    # rank 1 sleeps: rank 0 waits in the step's allreduce until Horovod's stall shutdown (5 s here) frees it,
    # then waits for rank 1 at the agreement (5 s here), writes the failed row naming it and aborts the job
    p, runs, took, _ = _fault_sweep(tmp_path, "at=step,step=3,rank=1,kind=sleep,seed=0,seconds=600",
                                    env=FAST_STALL)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert _by_seed(runs) == {0: ["failed"]} and "rank(s) 1 did not reach" in runs.error.iloc[0]
    assert "aborts the job" in p.stderr
    assert took < 60, took
    print(f"a silent rank ended the job in {took:.1f} s (stall shutdown 5 s + peer bound 5 s)")


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_a_claim_taken_over_mid_run_stops_the_run_on_every_rank_and_leaves_the_new_owners_file(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\nsteps = 2000\nglobal_batch = 64\n[grid]\nseed = [0]\n')
    claims_dir = tmp_path / "results" / "toy" / "claims"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "BENCH_CLAIM_LEASE_S": "4"}  # heartbeat every 1 s
    t0 = time.perf_counter()
    proc = subprocess.Popen(mpirun(2, "-m", "bench", "sweep", str(path)), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(claims_dir.glob("*.claim")) and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(2.0)  # training by now
        [claim] = list(claims_dir.glob("*.claim"))
        # a takeover by a live owner elsewhere, made as leases.claim makes one: under the claims folder's lock
        # (without it, our owner's heartbeat, already past its token check, could overwrite it)
        with leases._locked(claims_dir):
            theirs = {**json.loads(claim.read_text()), "host": "elsewhere", "pid": 1, "token": "theirs",
                      "heartbeat": time.time() + 3600}
            claim.write_text(json.dumps(theirs))
        taken = time.perf_counter()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    runs = load_runs(tmp_path / "results" / "toy")
    assert runs.status.tolist() == ["failed"] and "ClaimLost" in runs.error.iloc[0], runs.error.tolist()
    assert runs.steps.iloc[0] < 2000  # stopped mid-run
    assert json.loads(claim.read_text())["token"] == "theirs"  # the new owner's claim, untouched
    print(f"lost claim stopped the run {time.perf_counter() - taken:.1f} s after the takeover "
          f"({time.perf_counter() - t0:.1f} s in all)")


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_a_failing_run_is_tried_once_per_invocation_across_packed_groups(tmp_path):
    # 4 ranks, 2 groups; seeds 0 and 1 fail deterministically on their group's rank 1, seeds 2 and 3 train
    grid = "seed = [0, 1, 2, 3]"
    p, runs, took, path = _fault_sweep(tmp_path, "at=step,step=2,rank=1,kind=raise", grid=grid, np_=4,
                                       flags=("--pack", "2"), timeout=400)
    # the fault fires for every seed: each run fails once, none is retried by the other group
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert _by_seed(runs) == {s: ["failed"] for s in range(4)}, runs[["seed", "status"]]
    again = run_cli(["sweep", path, "--pack", "2"], np_=4, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]  # no fault now: the next invocation retries each once
    assert _by_seed(load_runs(tmp_path / "results" / "toy")) == {s: ["failed", "complete"] for s in range(4)}


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_an_exception_nobody_caught_aborts_the_job_with_its_message(tmp_path):
    path = _sweep_file(tmp_path, "seed = [0]")
    t0 = time.perf_counter()
    p = subprocess.run(mpirun(2, str(ROOT / "tests" / "uncaught_worker.py"), path), cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = time.perf_counter() - t0
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert "rank 1 aborts the job: uncaught OSError" in p.stderr and "No space left on device" in p.stderr
    assert took < 30, took
    print(f"uncaught exception: job aborted in {took:.1f} s")


@requires_horovod
@pytest.mark.slow
def test_under_gloo_a_failed_run_ends_the_invocation_cleanly_with_one_line(tmp_path):
    hvdrun = shutil.which("horovodrun", path=os.path.dirname(PYTHON))
    path = _sweep_file(tmp_path, "seed = [0, 1]")
    env = {**os.environ, "PATH": f"{os.path.dirname(PYTHON)}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "2",
           "BENCH_FAULT": "at=step,step=3,rank=1,kind=raise,seed=0"}
    t0 = time.perf_counter()
    p = subprocess.run([hvdrun, "--gloo", "-np", "2", PYTHON, "-m", "bench", "sweep", path], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t0
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert "under Gloo (horovodrun) Horovod cannot restart after a failed run" in p.stdout
    assert _by_seed(load_runs(tmp_path / "results" / "toy")) == {0: ["failed"]}
    del env["BENCH_FAULT"]  # the next invocation goes on with the rest
    again = subprocess.run([hvdrun, "--gloo", "-np", "2", PYTHON, "-m", "bench", "sweep", path], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert _by_seed(load_runs(tmp_path / "results" / "toy")) == {0: ["failed", "complete"], 1: ["complete"]}
    print(f"Gloo: failed row and a clean end in {took:.1f} s")


def test_a_fault_is_parsed_and_bad_ones_are_one_line_errors(monkeypatch):
    from bench import faults

    assert faults.parse("at=step,step=3,rank=1,kind=segv,seed=0") == {"at": "step", "step": 3, "rank": 1,
                                                                     "kind": "segv", "seed": 0}
    for bad, words in (("at=nowhere,kind=raise", "at= one of data"), ("at=step,kind=explode", "kind= one of"),
                       ("at=step,kind=raise,when=now", "'when=now' is not valid")):
        with pytest.raises(ValueError, match=words):
            faults.parse(bad)
    monkeypatch.setenv("BENCH_FAULT", "at=eval,rank=1,kind=raise,seed=4")
    faults.set_run(4)
    faults.point("eval", rank=0)  # another rank: nothing
    faults.point("step", rank=1)  # another moment: nothing
    with pytest.raises(faults.InjectedFault, match="at eval on rank 1"):
        faults.point("eval", rank=1)
    faults.set_run(5)
    faults.point("eval", rank=1)  # another run: nothing
    faults.set_run(None)


def test_past_attempts_count_crashes_and_this_jobs_failures_from_any_columns_there_are():
    import pandas as pd

    from bench.attempts import Past

    runs = pd.DataFrame({"run_id": ["a", "a", "b", "c", "c"], "status": ["crashed", "crashed", "failed", "failed",
                                                                         "complete"],
                         "job": ["j0", "j1", "j2", "j1", "j2"], "error": ["x", "y", "z", "w", ""]})
    past = Past.of(runs, "j2")
    assert past.crashes == {"a": 2} and past.last_crash == {"a": "y"} and past.failed_here == {"b"}
    assert "crashed 2 time(s)" in past.skip_reason("a", 2) and "--max-crashes 3" in past.skip_reason("a", 2)
    assert past.skip_reason("a", 3) == "" and past.skip_reason("b", 1) == ""
    assert Past.of(runs[["run_id", "status"]], "j2").failed_here == set()  # no job column: older rows
    assert Past.of(runs[["run_id", "status", "job"]], "j1").failed_here == {"a", "c"}  # no error column
