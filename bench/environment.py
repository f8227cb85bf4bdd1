"""The process's environment: every environment variable the harness reads or writes is named and read
here, and nowhere else; how this process was launched; its share of the host's cores; how to re-launch a
command under MPI. No heavy imports (no TensorFlow): it runs before TensorFlow starts.

Variables of the harness's own (the user may set any of them):
- ``BENCH_THREADS``: this process's share of the host's cores (written by ``share_cores``, read by the
  input pipeline and the train step's pools); ``BENCH_THREADS_SET_BY=bench`` marks a value we wrote.
- ``BENCH_CLAIM_LEASE_S``: seconds without a heartbeat after which a run's claim is stale (bench.leases).
- ``BENCH_PEER_TIMEOUT_S``: how long a rank waits for a peer outside Horovod (bench.distributed).
- ``BENCH_FAULT``: a fault to inject, for the fault tests (bench.faults).
- ``BENCH_REUSE_COMPILED``: ``0`` makes every run of a process build and trace its own train step (by default a
  run reuses an earlier run's of the same shape, reset: bench.train.Compiled).
- ``CIFAR_DIR``, ``IMAGENET_DIR``: where the data sets are when a config's ``data_dir`` is empty (each
  data set's ``data_variable`` in bench.datasets; read with ``get``).
Variables of the libraries, set as defaults (the user's values win): TensorFlow's thread pools and log
level, Open MPI's idle yield, Horovod's stall times and fusion threshold.
"""

from __future__ import annotations

import os
import shutil
import sys

THREADS = "BENCH_THREADS"
THREADS_SET_BY = "BENCH_THREADS_SET_BY"
CLAIM_LEASE = "BENCH_CLAIM_LEASE_S"
PEER_TIMEOUT = "BENCH_PEER_TIMEOUT_S"
FAULT = "BENCH_FAULT"
REUSE_COMPILED = "BENCH_REUSE_COMPILED"


def get(name: str, environ=os.environ) -> str:
    """The value of one of the variables above, stripped ("" when unset)."""
    return environ.get(name, "").strip()


def threads(environ=os.environ) -> int:
    """This process's share of the cores as ``share_cores`` set it (0 when not set: TensorFlow's own)."""
    text = get(THREADS, environ)
    return int(text) if text.isdigit() else 0


def quiet_tensorflow(environ=os.environ) -> None:
    """TensorFlow's C++ log level 2 (warnings and errors only) unless the user set one: keeps its start-up
    chatter out of the progress bar. Before TensorFlow is imported."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    if environ.get(THREADS_SET_BY) == "bench" or "TF_NUM_INTRAOP_THREADS" not in environ:
        n = str(threads_per_process(environ))
        environ.update({"TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": n, THREADS: n, THREADS_SET_BY: "bench"})
    else:  # the user's own setting
        environ.setdefault(THREADS, environ["TF_NUM_INTRAOP_THREADS"])
    return int(environ[THREADS])


def set_threads(n: int, environ=os.environ) -> None:
    """Record this process's share of the cores where the input pipeline reads it (``threads``)."""
    environ[THREADS] = str(n)


# Open MPI busy-polls in a blocking call unless it knows the host is oversubscribed. Each rank here also
# runs TensorFlow's compute and Horovod's background thread on its share of the cores, so a rank spinning
# in Horovod's per-cycle negotiation steals its own compute thread's core: 2 workers trained at 0.65x one
# worker on 2 cores (bench.json scaling_2_workers) before this default, ~1.05-1.15x after.
MPI_DEFAULTS = {"OMPI_MCA_mpi_yield_when_idle": "1"}


def mpi_defaults(environ=os.environ) -> None:
    """Set the MPI settings above unless the user set them; call before MPI starts (it reads them once)."""
    for key, value in MPI_DEFAULTS.items():
        environ.setdefault(key, value)


def relaunch_command(argv: list[str], workers: int, pack: int, module: str | None = None,
                     environ=os.environ) -> list[str]:
    """``mpirun -np workers*pack python -m MODULE ...``: the same command under MPI, of the module this process
    was started as (``entry_module``: ``python -m bench``, or a tool of one's own that calls bench's CLI) unless
    ``module`` names another. ``PYTHONPATH``, when set, is exported to every rank (``-x``: Open MPI forwards it
    to ranks on other hosts too), so a plug-in imported from a folder on it (bench.components) imports on
    every rank as it did here."""
    mpirun = shutil.which("mpirun") or "mpirun"
    export = ["-x", "PYTHONPATH"] if environ.get("PYTHONPATH") else []
    return [mpirun, "-np", str(workers * pack), "--oversubscribe", "--bind-to", "none", *export,
            sys.executable, "-m", module or entry_module(), *argv]


def entry_module(main=None) -> str:
    """The module ``python -m MODULE`` ran as this process's ``__main__`` (its package for a ``__main__.py``) when
    it is bench's CLI or a tool that calls it (it holds bench.__main__ or one of its functions): ``bench`` for
    ``python -m bench``, ``mytool`` for ``python -m mytool`` that calls ``bench.__main__.main``. Otherwise
    ``bench``: a script or a notebook cannot be re-run as a module, and another program (pytest) is not
    bench's CLI."""
    main = sys.modules.get("__main__") if main is None else main
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None) or ""
    if name.endswith(".__main__"):
        name = name[: -len(".__main__")]
    if name == "bench":
        return name
    calls_cli = any(getattr(v, "__name__", None) == "bench.__main__" or getattr(v, "__module__", None)
                    == "bench.__main__" for v in vars(main).values()) if main is not None else False
    return name if name and calls_cli else "bench"


# Horovod's stall inspector warns after CHECK s and, as a backstop, shuts Horovod down after SHUTDOWN s of a
# collective that some ranks never join (a rank stuck outside any collective); the user's values win.
STALL_CHECK_S, STALL_SHUTDOWN_S = 30, 90
# Horovod's tensor fusion copies every gradient into one buffer before the allreduce and back after. Its
# default threshold (128 MiB) suits GPUs, where a collective's latency dominates; on CPU workers the copies
# cost memory bandwidth. Measured here (2 workers, one grouped allreduce, median of 20; threshold 0 / 1 MiB /
# 4 MiB / 16 MiB / 128 MiB): ResNet-50's 214 gradients (102 MB) 76-84 / 66 / 85-95 / 105-113 / 133-164 ms;
# ResNet-8's 26 (0.3 MB) 3.7-3.9 ms unfused, 2.0-3.5 fused. 1 MiB fuses the small ones and lets the large
# go alone. The cycle time stays at Horovod's 1 ms (2, 5 and 10 ms were no better in training steps).
CPU_FUSION_THRESHOLD = 2**20


def horovod_defaults(environ=os.environ, *, has_gpu: bool) -> None:
    """Horovod's settings of this harness, read by hvd.init, unless the user set them: the stall times, and
    on CPU workers the fusion threshold (CPU_FUSION_THRESHOLD)."""
    environ.setdefault("HOROVOD_STALL_CHECK_TIME_SECONDS", str(STALL_CHECK_S))
    environ.setdefault("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", str(STALL_SHUTDOWN_S))
    if not has_gpu:
        environ.setdefault("HOROVOD_FUSION_THRESHOLD", str(CPU_FUSION_THRESHOLD))


def node_local_rank(environ=os.environ, *, horovod_local_rank: int) -> int:
    """This process's rank among all processes on its host, packed groups included.

    Horovod's local rank counts only this process's group: two packed groups on one host would both have
    a local rank 0. The launcher's own variables count every process on the host.
    """
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "HOROVOD_LOCAL_RANK"):
        if environ.get(var, "").isdigit():
            return int(environ[var])
    return horovod_local_rank


def child_environment(**extra: str) -> dict:
    """A copy of this process's environment for a child process, with ``extra`` set."""
    return {**os.environ, **extra}
