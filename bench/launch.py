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


def relaunch_command(argv: list[str], workers: int, pack: int) -> list[str]:
    """``mpirun -np workers*pack python -m bench ...``: the same command, under MPI."""
    mpirun = shutil.which("mpirun") or "mpirun"
    return [mpirun, "-np", str(workers * pack), "--oversubscribe", "--bind-to", "none",
            sys.executable, "-m", "bench", *argv]
