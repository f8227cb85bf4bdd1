"""The Parquet store: one ``runs.parquet`` row per run, one ``history.parquet`` row per logged step.

Layout: ``<output_dir>/<sweep>/{runs,history}.parquet``. A run's rows are appended only when it ends,
with its history first, so a ``runs`` row always has its history. Appends are atomic and serialised:
an exclusive lock on ``.lock`` (several packed groups may finish at once), then read + concat, write
to a temporary file, fsync, rename over the old file. A killed writer leaves the old file intact.

In a notebook::

    from bench.results import load_runs, load_history
    runs = load_runs("results/smoke")
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

import pandas as pd

RUNS = "runs.parquet"
HISTORY = "history.parquet"

# The runs table's columns, in order (extra columns are kept after these).
RUN_COLUMNS = [
    "run_id", "attempt", "sweep", "status", "error", "optimizer", "hparams", "dataset", "model", "global_batch",
    "workers", "per_worker_batch", "accumulation", "epochs", "steps", "resumed_from_step", "seed", "peak_lr",
    "final_train_loss", "top1", "top5", "wall_time_s", "images_per_s", "images_per_s_ci95",
    "target_top1", "steps_to_target", "time_to_target_s", "started_at", "host", "tf_version",
    "keras_version", "horovod_version", "mpi_version", "git_commit", "config",
]
STATUSES = ("complete", "diverged", "failed")


@contextlib.contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _atomic_write(df: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            df.to_parquet(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _append(path: Path, rows: pd.DataFrame, old: pd.DataFrame | None = None) -> None:
    if old is None:
        old = pd.read_parquet(path) if path.exists() else None
    new = rows if old is None or old.empty else pd.concat([old, rows], ignore_index=True)
    _atomic_write(new, path)


def append_run(directory: str | Path, run: dict, history: list[dict]) -> None:
    """Append one run's history rows, then its runs row, under one lock."""
    directory = Path(directory)
    if run.get("status") not in STATUSES:
        raise ValueError(f"status = {run.get('status')!r}; valid: {', '.join(STATUSES)}")
    with _locked(directory):
        # attempt: 1 + the rows this run_id already has (a failed run retried by a sweep is attempt 2)
        old = load_runs(directory)
        attempt = int((old.run_id == run["run_id"]).sum()) + 1 if len(old) else 1
        run_df = pd.DataFrame([{**run, "attempt": attempt}])
        run_df = run_df[[c for c in RUN_COLUMNS if c in run_df] + [c for c in run_df if c not in RUN_COLUMNS]]
        if history:
            _append(directory / HISTORY, pd.DataFrame(history).assign(attempt=attempt))
        _append(directory / RUNS, run_df, old)  # the runs table read once, above


def load_runs(directory: str | Path) -> pd.DataFrame:
    """All runs of a sweep folder (empty frame with the schema's columns if none yet)."""
    path = Path(directory) / RUNS
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=RUN_COLUMNS)


def load_history(directory: str | Path, run_id: str | None = None, all_attempts: bool = False) -> pd.DataFrame:
    """Logged steps (and eval rows, where ``top1`` is set) of a sweep folder, optionally of one run.

    A run retried after a failure has several attempts; by default only each run's latest is returned.
    """
    path = Path(directory) / HISTORY
    if not path.exists():
        return pd.DataFrame(columns=["run_id", "attempt", "step", "epoch", "loss", "lr"])
    df = pd.read_parquet(path)
    if run_id:
        df = df[df.run_id == run_id]
    if not all_attempts and "attempt" in df:
        attempt = df.attempt.fillna(1)  # rows written before attempts were recorded are first attempts
        df = df[attempt == attempt.groupby(df.run_id).transform("max")]
    return df.reset_index(drop=True)


def completed_ids(directory: str | Path) -> set[str]:
    """run_ids that already have a ``complete`` or ``diverged`` row (a sweep skips these)."""
    runs = load_runs(directory)
    return set(runs.loc[runs.status.isin(["complete", "diverged"]), "run_id"])
