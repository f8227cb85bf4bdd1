"""What every reader of bench.data shares: the error it raises, the DatasetInfo it reports, the Reader
interface of the READERS table, the argument checks of the public functions, the data-folder and file-stamp
helpers, and the numbers of the stateless random streams (in one place, so no two uses of a run's seed
draw the same numbers)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf

from bench import environment
from bench.config import ConfigError, RunConfig

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation", "test")
# Streams of the stateless random keys [seed, stream]; each is folded with an epoch, step or rank.
SHUFFLE, AUGMENT, IMAGENET_FILES, IMAGENET_CROPS, PRECISE_BN = 0, 1, 2, 3, 4


class DataError(ConfigError):
    """Missing or corrupt data files; the one-line message names the file and what was expected."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    image_shape: tuple[int, int, int]  # H, W, C of the model input
    num_classes: int
    train_size: int  # examples
    test_size: int


class Reader(Protocol):
    """One data set's reader, as bench.data.READERS holds it; the public functions of bench.data check their
    arguments and call these. Images are float32 [b, H, W, C], labels int32 [b], in every stream."""

    name: str  # the config's dataset

    def check(self, cfg: RunConfig) -> None:
        """Raise DataError for missing or corrupt files."""

    def info(self, cfg: RunConfig) -> DatasetInfo:
        """Shapes and sizes as the model and the schedule see them."""

    def arrays(self, cfg: RunConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 [N, H, W, C] and labels int32 [N] (ValueError for a streamed data set)."""

    def train(self, cfg: RunConfig, *, workers: int, rank: int, micro_batch: int, accumulation: int,
              start_step: int) -> tf.data.Dataset:
        """Infinite micro-batches of this rank, from optimizer step ``start_step`` on."""

    def eval(self, cfg: RunConfig, *, workers: int, rank: int, batch: int, split: str) -> tf.data.Dataset:
        """One pass over this rank's shard of ``split``."""

    def precise_bn(self, cfg: RunConfig, *, workers: int, rank: int, batch: int) -> tf.data.Dataset:
        """This rank's share of the training images that precise BatchNorm statistics are computed from."""


def check_args(workers: int, rank: int, *sizes: int) -> None:
    """ValueError unless 0 <= rank < workers and every size (batch, accumulation) is >= 1."""
    if not 0 <= rank < workers or min(sizes) < 1:
        raise ValueError(f"bad pipeline arguments workers={workers} rank={rank} sizes={sizes}")


def check_split(cfg: RunConfig, split: str) -> None:
    """ValueError unless ``split`` is one of SPLITS, and "validation" only with validation_size > 0."""
    if split not in SPLITS:
        raise ValueError(f"split = {split!r}; valid: {', '.join(SPLITS)}")
    if split == "validation" and not cfg.validation_size:
        raise ValueError("split = 'validation' needs validation_size > 0; valid splits here: train, test")


def key(seed: int, stream: int) -> tf.Tensor:
    """The stateless random key int64 [2] of one stream of a run's seed."""
    return tf.constant([seed, stream], tf.int64)


def base_dir(cfg: RunConfig, variable: str, what: str) -> Path:
    """The data folder: the config's data_dir, else the environment variable ``variable`` (``what`` tells the
    user what belongs there when neither is set)."""
    base = cfg.data_dir or environment.get(variable)
    if not base:
        raise DataError(f"{cfg.dataset}: no data folder; set data_dir in the config or ${variable} ({what})")
    return Path(base)


def existing_folder(path: Path, dataset: str, holds: str) -> Path:
    """``path`` if it is a folder, else DataError naming it (missing, or a file where a folder belongs) and what
    belongs there (``holds``). os.path, not pathlib: a folder the user may not enter is "not a folder" here, not
    a PermissionError traceback."""
    if os.path.isdir(path):
        return path
    what = "is a file, not a folder" if os.path.lexists(path) else "does not exist"
    raise DataError(f"{dataset}: data folder {path} {what}; valid: a folder holding {holds}")


def read_bytes(path: Path, what: str) -> np.ndarray:
    """The bytes of ``path`` as uint8 [n]; DataError naming it when the system refuses (permission, a folder)."""
    try:
        return np.fromfile(path, np.uint8)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise DataError(f"{path}: cannot be read ({reason}); valid: a readable {what}") from None


def stamp(paths) -> tuple:
    """Cache key ((path, bytes, mtime ns), ...): a file that changes on disk is read again."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def stamped_paths(source: tuple) -> list[Path]:
    """The paths of a ``stamp``, in its order."""
    return [Path(s[0]) for s in source]
