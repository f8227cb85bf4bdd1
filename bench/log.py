"""The harness's messages: Python's ``logging`` under the logger ``bench``, each line with a timestamp and the rank::

    2026-12-02 17:50:01 rank 0 INFO bench.sweep: sweep mini: 8 runs, 0 done, 8 to run ...

``setup(rank, level)`` (``python -m bench --log-level LEVEL``, applied before the command runs): the console
(stdout, through ``tqdm.write`` so the chief's progress bar is not broken) shows the chief's records at ``level``
(default INFO) and above, every other rank's WARNING and above. ``attempt_log`` adds, around one run attempt,
``results/<sweep>/logs/<run_id>-a<N>.log`` (appended by every rank of the run, one line per record): the chief's
INFO and above, every other rank's WARNING and above. Python warnings raised during an attempt (the harness's, Keras's,
TensorFlow's Python side) are records of ``bench.warnings`` there, with the rank and time, not bare lines on stderr.
Program output (a run's result line, ``--dry-run``'s
table, ``list``, ``report``) stays plain print on stdout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DIR = "logs"  # results/<sweep>/logs/<run_id>-a<N>.log
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "HOROVOD_RANK", "SLURM_PROCID")

logger = logging.getLogger("bench")


def launcher_rank(environ=os.environ) -> int:
    """This process's rank as its launcher (mpirun, srun, horovodrun) says; 0 in one process."""
    for var in _RANK_VARS:
        if environ.get(var, "").isdigit():
            return int(environ[var])
    return 0


def get(name: str) -> logging.Logger:
    """The logger of a harness module (``bench.sweep``, ...): a child of ``bench``."""
    return logging.getLogger(name if name.startswith("bench") else f"bench.{name}")


class _Tqdm(logging.Handler):
    """Writes each record through ``tqdm.write`` (stdout): lines appear above the progress bar, not inside it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stdout)
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging must never end the run
            self.handleError(record)


class _File(logging.FileHandler):
    """A FileHandler that makes its folder when it opens its file (at the first record: a run refused as bad
    input before it logs anything leaves no folder behind)."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _formatter(rank: int) -> logging.Formatter:
    return logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")


def _threshold(rank: int, level: int) -> int:
    return level if rank == 0 else max(level, logging.WARNING)


_state = {"rank": 0, "level": logging.INFO}


def setup(rank: int | None = None, level: str | int | None = None, chief: bool | None = None) -> logging.Logger:
    """The ``bench`` logger with one console handler (replacing an earlier one): ``rank`` (default: the
    launcher's) at ``level`` (default: the level set before, else INFO) if it is a chief (``chief``; default:
    rank 0), else at WARNING and above. A packed sweep calls it again once its groups exist, so that the chief
    of every group shows its runs' progress."""
    rank = launcher_rank() if rank is None else rank
    level = _state["level"] if level is None else level
    level = logging.getLevelName(level) if isinstance(level, str) else level
    _state.update(rank=rank, level=level)
    for h in [h for h in logger.handlers if isinstance(h, _Tqdm)]:
        logger.removeHandler(h)
    console = _Tqdm(_threshold(0 if (rank == 0 if chief is None else chief) else 1, level))
    console.setFormatter(_formatter(rank))
    logger.addHandler(console)
    logger.setLevel(min(logging.INFO, level))  # the attempt's file keeps the chief's INFO whatever the console's
    logger.propagate = False
    return logger


def path(results_dir: str | Path, run_id: str, attempt: int) -> Path:
    """The log file of one run attempt."""
    return Path(results_dir) / DIR / f"{run_id}-a{attempt}.log"


@contextlib.contextmanager
def attempt_log(results_dir: str | Path, run_id: str, attempt: int, rank: int):
    """Within: the ``bench`` logger's records also go to the attempt's log file (appended; the chief's INFO and
    above, another rank's WARNING and above). A file that cannot be opened is reported by ``logging`` on stderr
    (its handleError), and the run goes on."""
    if not logger.handlers:
        setup(rank)
    file = path(results_dir, run_id, attempt)
    handler = _File(file, mode="a", encoding="utf-8", delay=True)  # nothing written before a first record
    handler.setLevel(_threshold(rank, logging.INFO))
    handler.setFormatter(_formatter(rank))
    logger.addHandler(handler)
    try:
        with _warnings_logged():
            yield file
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _warnings_logged():
    """Within: each warning shown (the filters still decide which, and how often) is a WARNING record of
    ``bench.warnings``: "Category: message (file:line)". The previous ``warnings.showwarning`` comes back after."""
    previous = warnings.showwarning
    out = get("bench.warnings")

    def show(message, category, filename, lineno, file=None, line=None):
        out.warning("%s: %s (%s:%s)", category.__name__, message, filename, lineno)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
