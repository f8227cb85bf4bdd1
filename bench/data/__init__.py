"""tf.data pipelines of the benchmark's data sets: fashion_mnist (IDX files), cifar10/cifar100 (binary
batches) and synthetic are held in memory (bench.data.in_memory: one index stream per (seed, global batch),
independent of the number of workers); imagenet is streamed from TFRecords (bench.data.imagenet).

READERS picks each data set's reader, all with one interface (bench.data.common.Reader); the functions here
check their arguments and call it:
- ``check(cfg)``: DataError for missing or corrupt files, before anything trains.
- ``info(cfg)``: DatasetInfo, the shapes and sizes the model and the schedule see.
- ``load_arrays(cfg, split)``: images uint8 [N, H, W, C] and labels int32 [N] of an in-memory data set.
- ``train_dataset``, ``eval_dataset``, ``precise_bn_dataset``: (images float32 [b, H, W, C], labels int32 [b]).

Layout: common (DataError, DatasetInfo, Reader, random streams), in_memory (the in-memory pipelines, the
validation split, downsampling), one module per source: fashion_mnist, cifar, synthetic, imagenet.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from bench.config import RunConfig
from bench.data import cifar, fashion_mnist, imagenet, synthetic
from bench.data.cifar import CIFAR_URL
from bench.data.common import AUTOTUNE, DataError, DatasetInfo, Reader, check_args
from bench.data.fashion_mnist import FASHION_DIR
from bench.data.imagenet import IMAGENET_MEAN, IMAGENET_RESIZE, IMAGENET_SHUFFLE, IMAGENET_SIZE, IMAGENET_STD
from bench.data.in_memory import PAD, VALIDATION_SEED, downsample, validation_indices
from bench.data.synthetic import SYNTHETIC_SEED

__all__ = [
    "AUTOTUNE", "CIFAR_URL", "FASHION_DIR", "IMAGENET_MEAN", "IMAGENET_RESIZE", "IMAGENET_SHUFFLE", "IMAGENET_SIZE",
    "IMAGENET_STD", "PAD", "READERS", "SYNTHETIC_SEED", "VALIDATION_SEED", "DataError", "DatasetInfo", "Reader",
    "check", "downsample", "eval_dataset", "info", "load_arrays", "precise_bn_dataset", "reader", "train_dataset",
    "validation_indices",
]

READERS: dict[str, Reader] = {
    "fashion_mnist": fashion_mnist.READER,
    "cifar10": cifar.CIFAR10,
    "cifar100": cifar.CIFAR100,
    "imagenet": imagenet.READER,
    "synthetic": synthetic.READER,
}


def reader(cfg: RunConfig) -> Reader:
    """The reader of ``cfg.dataset``: a built-in's (READERS), else a plug-in's (bench.data.plugin: its
    ``load(data_dir)`` behind the in-memory pipelines; bench.components names it, ConfigError if it is none)."""
    if cfg.dataset in READERS:
        return READERS[cfg.dataset]
    from bench import components
    from bench.data import plugin

    components.load("dataset", cfg.dataset, builtin=tuple(READERS))  # ConfigError naming the valid ones
    return plugin.reader(cfg.dataset)


def check(cfg: RunConfig) -> None:
    """Raise DataError (one line naming the path and what is valid) for a missing or misplaced folder, missing,
    unreadable, truncated or garbled files, wrong shapes, labels out of range and empty splits, before anything
    trains. In-memory datasets are read in full (and cached for the pipelines); for imagenet every shard's
    header is checked, the first record of each split decoded and the labels of 10,000 records spread over the
    shards read (bench.data.imagenet.ImageNet.check: what it reads and costs)."""
    reader(cfg).check(cfg)


def info(cfg: RunConfig) -> DatasetInfo:
    """Shapes and sizes (``image_size`` and ``validation_size`` applied); reads file headers (not the data)
    of fashion_mnist and cifar, so it can raise DataError; imagenet returns the standard ILSVRC2012 counts."""
    return reader(cfg).info(cfg)


def load_arrays(cfg: RunConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, H, W, C] and labels int32 [N] of an in-memory dataset; read-only, cached.

    ``split``: "train" (without the ``validation_size`` held-out images), "validation" (those images) or
    "test". With ``image_size`` set, images are area-downsampled to image_size x image_size. ValueError for
    another split, or for imagenet."""
    return reader(cfg).arrays(cfg, split)


def train_dataset(cfg: RunConfig, *, workers: int, rank: int, micro_batch: int,
                  accumulation: int, start_step: int = 0) -> tf.data.Dataset:
    """Infinite (images float32 [micro_batch, H, W, C], labels int32 [micro_batch]); every `accumulation`
    consecutive elements are this rank's share of one optimizer step (imagenet, being a stream, only needs
    `accumulation` for that grouping; any consecutive micro-batches serve).

    `start_step` > 0 (a resumed run) starts after that many optimizer steps: exactly where the stream
    would have been for in-memory datasets (only indices are skipped, no image is made); for imagenet at
    the start of that epoch's file order with a fresh shuffle (re-reading the files would cost an epoch)."""
    check_args(workers, rank, micro_batch, accumulation)
    if start_step < 0:
        raise ValueError(f"start_step = {start_step} must be >= 0")
    return reader(cfg).train(cfg, workers=workers, rank=rank, micro_batch=micro_batch, accumulation=accumulation,
                             start_step=start_step)


def eval_dataset(cfg: RunConfig, *, workers: int, rank: int, batch: int, split: str = "test") -> tf.data.Dataset:
    """One pass over this rank's shard of the test (or validation) split: (images float32 [<=batch, H, W, C],
    labels int32). In-memory shards are contiguous ranges [rank*N//workers, (rank+1)*N//workers); the last
    batch is short. For imagenet, whatever ``split``, its validation files."""
    check_args(workers, rank, batch)
    return reader(cfg).eval(cfg, workers=workers, rank=rank, batch=batch, split=split)


def precise_bn_dataset(cfg: RunConfig, *, workers: int, rank: int, batch: int) -> tf.data.Dataset:
    """This rank's share of the ``precise_bn_images`` training images that evaluation recomputes BatchNorm's
    statistics from, with evaluation's preprocessing: in-memory, a fixed draw (seed, stream PRECISE_BN),
    ``precise_bn_images // workers`` per rank (capped by the training set); imagenet, the first records of
    the rank's shards. In batches of ``batch`` (the last may be short): images float32 [b, H, W, C], labels
    int32 [b]."""
    check_args(workers, rank, batch)
    return reader(cfg).precise_bn(cfg, workers=workers, rank=rank, batch=batch)
