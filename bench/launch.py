"""How this process was launched, and how to re-launch a command under MPI (no heavy imports here)."""

from __future__ import annotations

import os
import shutil
import sys


def under_mpi(environ=os.environ) -> bool:
    """True when this process was started by an MPI launcher (Open MPI, MPICH/Hydra, Slurm's PMI)."""
    return any(v in environ for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))


def mpi_size(environ=os.environ) -> int:
    """The number of MPI ranks the launcher started (0 when unknown). ``srun --mpi=pmix`` sets PMIX_RANK but
    no size variable of MPI's: its step's task count is Slurm's."""
    sources = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
    if "PMIX_RANK" in environ:
        sources += ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    for var in sources:
        if environ.get(var, "").isdigit():
            return int(environ[var])
    return 0


# Launcher variables: processes on this host, counting every process (packed groups included).
_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE", "HOROVOD_LOCAL_SIZE")


def processes_on_host(environ=os.environ, group_local_size: int = 1) -> int:
    """How many processes share this host: the launcher's count (every packed group), else ``group_local_size``."""
    for var in _LOCAL_SIZE_VARS:
        if environ.get(var, "").isdigit() and int(environ[var]) > 0:
            return int(environ[var])
    return max(1, group_local_size)


def threads_per_process(environ=os.environ, group_local_size: int = 1, cores: int | None = None) -> int:
    """The host's cores shared among every process on it (at least 1)."""
    return max(1, (cores or os.cpu_count() or 1) // processes_on_host(environ, group_local_size))


def share_cores(environ=os.environ) -> int:
    """Give TensorFlow this process's share of the cores through its environment variables, which it reads
    when its runtime starts: call before anything creates a tensor (config validation builds an optimizer,
    so bench.distributed.init's set_*_parallelism_threads would come too late). The user's values win;
    values this function set in a parent process (a sweep that re-launches itself under mpirun) do not."""
    if environ.get("BENCH_THREADS_SET_BY") == "bench" or "TF_NUM_INTRAOP_THREADS" not in environ:
        n = str(threads_per_process(environ))
        environ.update(TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n, BENCH_THREADS=n,
                       BENCH_THREADS_SET_BY="bench")
    else:  # the user's own setting
        environ.setdefault("BENCH_THREADS", environ["TF_NUM_INTRAOP_THREADS"])
    return int(environ["BENCH_THREADS"])


# Open MPI busy-polls in a blocking call unless it knows the host is oversubscribed. Each rank here also
# runs TensorFlow's compute and Horovod's background thread on its share of the cores, so a rank spinning
# in Horovod's per-cycle negotiation steals its own compute thread's core: 2 workers trained at 0.65x one
# worker on 2 cores (bench.json scaling_2_workers) before this default, ~1.05-1.15x after.
MPI_DEFAULTS = {"OMPI_MCA_mpi_yield_when_idle": "1"}


def mpi_defaults(environ=os.environ) -> None:
    """Set the MPI settings above unless the user set them; call before MPI starts (it reads them once)."""
    for key, value in MPI_DEFAULTS.items():
        environ.setdefault(key, value)


def relaunch_command(argv: list[str], workers: int, pack: int) -> list[str]:
    """``mpirun -np workers*pack python -m bench ...``: the same command, under MPI."""
    mpirun = shutil.which("mpirun") or "mpirun"
    return [mpirun, "-np", str(workers * pack), "--oversubscribe", "--bind-to", "none",
            sys.executable, "-m", "bench", *argv]
