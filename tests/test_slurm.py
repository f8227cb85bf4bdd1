"""experiments/slurm/sweep.sbatch on a real one-node Slurm cluster (experiments/slurm/local-cluster.sh).

The cluster (slurmctld, slurmd, munged: config, state, spool and logs in a tmp folder, free ports) declares
4 CPUs, so the two jobs of a `--array=0-1 -n 2` array run at once on this 2-core machine and share one
sweep's runs through its claims. Never skipped: `make test` installs Slurm first (`make install-slurm`), so a
cluster that does not start fails the test.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results import load_runs
from conftest import ROOT, requires_horovod

CLUSTER = ROOT / "experiments" / "slurm" / "local-cluster.sh"
SBATCH = ROOT / "experiments" / "slurm" / "sweep.sbatch"
TIMEOUT_S = 300

TINY = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
eval_every_epochs = 0
log_every_steps = 2
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has exited
    except (OSError, IndexError):
        return False


def _kill(pid_file: Path) -> None:
    """TERM the daemon whose pid is in ``pid_file`` (KILL after 5 s)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _alive(pid):
            return
        os.kill(pid, sig)
        deadline = time.time() + 5
        while time.time() < deadline and _alive(pid):
            time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node cluster: the environment (SLURM_CONF, VENV) to submit jobs to it with."""
    # Never a skip: `make test` installs Slurm (make install-slurm), so a missing daemon or a cluster that does
    # not start is a failure of the set-up this test exists to check, not a reason to pass quietly.
    missing = [p for p in ("slurmctld", "slurmd", "sbatch", "squeue") if shutil.which(p) is None]
    assert not missing, f"Slurm is not installed ({', '.join(missing)} not found): run `make install-slurm`"
    assert os.geteuid() == 0, "the one-node Slurm cluster runs slurmd as root; run the tests as root (CI does)"
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"), "VENV": sys.prefix}

    def stop():  # cancel the jobs, stop the daemons; then make sure of it by their pids
        subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], env=env, capture_output=True, timeout=60)
        for pid_file in (folder / "slurmd.pid", folder / "slurmctld.pid", folder / "munge" / "munged.pid"):
            _kill(pid_file)

    p = subprocess.run(
        ["bash", str(CLUSTER), "start", str(folder), "4"], env=env, capture_output=True, text=True, timeout=120
    )
    if p.returncode != 0:
        stop()
        pytest.fail(f"the one-node Slurm cluster did not start: {p.stderr.strip()[-1500:]}")
    try:
        yield env
    finally:
        stop()


def _sbatch(env, *args: str) -> str:
    p = subprocess.run(["sbatch", "--parsable", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().split(";")[0]


def _wait(env, job: str, logs: Path) -> list[dict]:
    """Wait until ``job`` (and all its array tasks) left the queue; its tasks' fields from scontrol."""
    deadline = time.time() + TIMEOUT_S
    while True:
        queue = subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout
        if not queue.strip():
            break
        if time.time() > deadline:
            subprocess.run(["scancel", job], env=env)
            tails = "\n".join(f"--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(logs.glob("slurm-*.out")))
            pytest.fail(f"job {job} still queued after {TIMEOUT_S} s:\n{queue}\n{tails}")
        time.sleep(1)
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_a_job_array_shares_one_sweep_and_trains_every_run_once(slurm, tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\nsteps = 4\n[grid]\nseed = [0, 1, 2, 3]\n')
    out = f"{tmp_path}/slurm-%x-%A_%a.out"
    job = _sbatch(slurm, "--array=0-1", "-n", "2", "-o", out, str(SBATCH), str(path))
    tasks = _wait(slurm, job, tmp_path)

    logs = {t: (tmp_path / f"slurm-bench-sweep-{job}_{t}.out").read_text() for t in ("0", "1")}
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"], tasks
    for t in tasks:
        assert (t["JobState"], t["ExitCode"]) == ("COMPLETED", "0:0"), (t, logs[t["ArrayTaskId"]][-3000:])
    a, b = tasks
    assert a["StartTime"] < b["EndTime"] and b["StartTime"] < a["EndTime"], "the two jobs did not overlap"
    for log in logs.values():
        assert "running: mpirun -np 2 --bind-to none" in log
        assert "sweep toy: 4 runs" in log and "on 1 group(s) of 2 worker(s)" in log

    # every run trained exactly once, by one job or the other
    runs = load_runs(tmp_path / "results" / "toy")
    assert sorted(runs.seed) == [0, 1, 2, 3], runs[["run_id", "seed", "status"]]
    assert runs.run_id.nunique() == 4 and runs.run_id.is_unique
    assert (runs.status == "complete").all() and (runs.workers == 2).all()
    assert sum(log.count("] run ") for log in logs.values()) == 4, logs
    assert not list((tmp_path / "results" / "toy" / "claims").glob("*.claim"))  # every claim released

    # srun --mpi=pmix, where the cluster offers it: the finished sweep has nothing left to run
    mpi = subprocess.run(["srun", "--mpi=list"], env=slurm, capture_output=True, text=True)
    if "pmix" in mpi.stdout + mpi.stderr:
        again = _sbatch(
            {**slurm, "BENCH_LAUNCHER": "srun"}, "-n", "2", "-o", f"{tmp_path}/srun-%j.out", str(SBATCH), str(path)
        )
        (task,) = _wait(slurm, again, tmp_path)
        log = (tmp_path / f"srun-{again}.out").read_text()
        assert (task["JobState"], task["ExitCode"]) == ("COMPLETED", "0:0"), log[-3000:]
        assert "running: srun --mpi=pmix" in log and "4 runs, 4 done, 0 to run on 1 group(s) of 2" in log, log
        assert len(load_runs(tmp_path / "results" / "toy")) == 4


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_a_plugin_optimizer_by_reference_trains_on_every_rank_of_a_job(slurm, tmp_path):
    """A user's optimizer as "module:attribute" from a folder on PYTHONPATH, not installed: sbatch passes the
    submitting shell's environment on (its default, --export=ALL), the sweep's mpirun re-launch exports
    PYTHONPATH, so both ranks import it; the row records the reference and its source hash."""
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "plugin" / "nlcg_bench_example" / "optim.py", folder / "my_signum.py")
    path = tmp_path / "mine.toml"
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\nsteps = 4\noptimizer = "my_signum:SignMomentum"\n'
                    "[grid]\nseed = [0, 1]\n")
    env = {**slurm, "PYTHONPATH": str(folder)}
    job = _sbatch(env, "-n", "2", "-o", f"{tmp_path}/mine-%j.out", str(SBATCH), str(path))
    (task,) = _wait(env, job, tmp_path)
    log = (tmp_path / f"mine-{job}.out").read_text()
    assert (task["JobState"], task["ExitCode"]) == ("COMPLETED", "0:0"), log[-3000:]
    runs = load_runs(tmp_path / "results" / "mine")
    assert sorted(runs.seed) == [0, 1] and (runs.status == "complete").all() and (runs.workers == 2).all()
    assert set(runs.optimizer) == {"my_signum:SignMomentum"} and set(runs.optimizer_origin) == {"reference"}
