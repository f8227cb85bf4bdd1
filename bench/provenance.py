"""Where and with what something ran: the host and its CPUs and memory, the library versions, the git commit.
One description for every record the harness writes (a run's row, bench.json's ``machine`` block).

No measurement here (no timing, no load): a description of the host and the code, the same whenever it is
taken. Light to import: TensorFlow, Keras and Horovod are imported when ``provenance()`` is called.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def first_line(cmd: list[str], cwd: Path | None = None) -> str:
    """The first line of ``cmd``'s standard output; "" when it fails, prints nothing or takes over 10 s."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def git_commit(repo: Path = REPO) -> str:
    """HEAD's commit of ``repo``, with ``-dirty`` when a tracked file differs from it; "unknown" outside git."""
    commit = first_line(["git", "rev-parse", "HEAD"], cwd=repo)
    dirty = first_line(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return (commit + "-dirty" if dirty else commit) or "unknown"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; elsewhere the platform's processor string, or "unknown")."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance() -> dict:
    """Where and with what this process runs: ``host``; ``cpu_model``, ``cpu_count`` (the host's) and
    ``cpus_usable`` (this process's affinity); ``memory_gb`` (physical, 10^9 bytes); the versions of Python,
    NumPy, TensorFlow, Keras, Horovod and MPI (``mpirun --version``'s first line); ``git_commit``."""
    import horovod
    import keras
    import numpy as np
    import tensorflow as tf

    return {
        "host": socket.gethostname(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
        "python_version": platform.python_version(), "numpy_version": np.__version__, "tf_version": tf.__version__,
        "keras_version": keras.__version__, "horovod_version": horovod.__version__,
        "mpi_version": first_line(["mpirun", "--version"]), "git_commit": git_commit(),
    }
