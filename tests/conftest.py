"""Shared test set-up: quiet TF, Open MPI allowed as root, helpers to run the CLI as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Open MPI refuses root without these; CI and containers run as root.
os.environ["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
os.environ["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def mpirun(np_: int, *args: str) -> list[str]:
    """An mpirun command line for ``np_`` ranks of this interpreter (threads shared by bench itself)."""
    return ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none", PYTHON, *args]


def run_cli(args: list[str], np_: int = 0, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` (under mpirun when np_ > 0), from the repository root."""
    cmd = mpirun(np_, "-m", "bench", *args) if np_ else [PYTHON, "-m", "bench", *args]
    return subprocess.run(cmd, cwd=kw.pop("cwd", ROOT), capture_output=True, text=True, timeout=timeout, **kw)


def have_horovod() -> bool:
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def _horovod_installed():
    """Fails (never skips) a test that needs Horovod where it is missing: `make test` installs it."""
    assert have_horovod(), "horovod is not installed: run `make install` (or `make test`, which installs it)"


requires_horovod = pytest.mark.usefixtures("_horovod_installed")


@pytest.fixture(autouse=True)
def _fresh_compiled_steps():
    """Each test starts without the train steps an earlier test in this process kept for reuse.

    Tests monkeypatch things the reuse key does not see (a loss, a fault, a model builder); a kept
    step from another test would then train the wrong graph.
    """
    yield
    train = sys.modules.get("bench.train")
    if train is not None:
        train.forget_compiled()
