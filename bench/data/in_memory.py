"""The pipelines of the data sets held in memory (fashion_mnist, cifar10/cifar100, synthetic): their readers
subclass InMemory, which turns uint8 arrays into the train, eval and precise-BN streams.

The arrays are read once (cached, read-only) and fed by a stream of example indices that depends only on
(cfg.seed, global batch): epoch e is a stateless permutation keyed by (seed, e), the epochs are concatenated
and cut into global batches of workers x micro_batch x accumulation (a global batch may span an epoch
boundary, or several epochs when it is larger than the data set). Rank r takes the contiguous slice
[r*local, (r+1)*local) of every global batch, as `accumulation` micro-batches. The crop offsets and flips are
drawn for the whole global batch from (seed, step), so one worker with accumulation 2 sees exactly the
(augmented) examples that two workers see in the same step.

Stateless ops rather than `Dataset.shuffle(seed=...)`: the latter also depends on the global seed, which
the trainer offsets by rank, and the ranks would then disagree on the global batch.
"""

from __future__ import annotations

import abc
import functools

import numpy as np
import tensorflow as tf

from bench import environment
from bench.config import RunConfig
from bench.data.common import AUGMENT, AUTOTUNE, PRECISE_BN, SHUFFLE, DataError, DatasetInfo, check_split, key

PAD = 4  # pixels of zero padding before the random crop (NLCG.md s4; TF's cifar reference pads with zeros)
VALIDATION_SEED = 20181202  # the held-out validation images are the same draw for every run seed
SUBSET_SEED = 20181203  # and so is train_subset's draw from the images left for training
_DOWNSAMPLE_CHUNK = 8192  # images resized at once (bounds the float32 copy)


def validation_indices(n: int, validation_size: int) -> np.ndarray:
    """Sorted indices int64 [validation_size] of the training images held out for validation: a fixed draw
    (VALIDATION_SEED) from range(n)."""
    if not 0 <= validation_size < n:
        raise DataError(f"validation_size = {validation_size}; valid: 0 .. {n - 1} (the training set has {n})")
    return np.sort(np.random.default_rng(VALIDATION_SEED).permutation(n)[:validation_size])


def subset_indices(n: int, train_subset: int) -> np.ndarray:
    """Sorted indices int64 [train_subset] of the ``n`` training images (validation held out) a run with
    ``train_subset`` > 0 trains on: a fixed draw (SUBSET_SEED), the same for every run seed."""
    if not 0 < train_subset < n:
        raise DataError(f"train_subset = {train_subset}; valid: 0 (all {n} training images, validation held "
                        f"out) or 1 .. {n - 1}")
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:train_subset])


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Area-average uint8 images [N, H, W, C] to [N, size, size, C] (rounded back to uint8)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = [tf.image.resize(tf.cast(images[i:i + _DOWNSAMPLE_CHUNK], tf.float32), [size, size], method="area").numpy()
           for i in range(0, len(images), _DOWNSAMPLE_CHUNK)]
    return np.clip(np.rint(np.concatenate(out)), 0, 255).astype(np.uint8)


def _frozen(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous read-only copies (or the arrays themselves): the cached arrays are shared by every caller."""
    images, labels = np.ascontiguousarray(images), np.ascontiguousarray(labels)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


@functools.lru_cache(maxsize=4)
def _cached(reader: InMemory, source: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The files' own split as the reader reads it, once per (reader, source)."""
    return _frozen(*reader.read(source))


@functools.lru_cache(maxsize=6)
def _prepared(reader: InMemory, source: tuple, split: str, validation_size: int, image_size: int,
              train_subset: int = 0):
    """``_cached`` with the validation images held out of (or kept from) the training split, the training
    split cut to its ``train_subset`` draw, downsampled."""
    images, labels = _cached(reader, source)
    if split != "test" and validation_size:
        held = np.zeros(len(labels), bool)
        held[validation_indices(len(labels), validation_size)] = True
        keep = held if split == "validation" else ~held
        images, labels = images[keep], labels[keep]
    if split == "train" and train_subset:
        keep = subset_indices(len(labels), train_subset)
        images, labels = images[keep], labels[keep]
    if image_size:
        images = downsample(images, image_size)
    return _frozen(images, labels)


def train_indices(n: int, seed: int, workers: int, rank: int, micro_batch: int,
                  accumulation: int) -> tf.data.Dataset:
    """Infinite (indices int64 [micro_batch], uniforms float32 [micro_batch, 3]) for this rank; each
    `accumulation` consecutive elements are its share of one global batch."""
    local = micro_batch * accumulation
    global_batch = workers * local
    shuffle_key, augment_key = key(seed, SHUFFLE), key(seed, AUGMENT)
    epochs = tf.data.Dataset.counter().map(lambda e: tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.random.experimental.stateless_fold_in(shuffle_key, e)))

    def share(step, indices):  # indices [global_batch] -> this rank's [accumulation, micro_batch]
        uniforms = tf.random.stateless_uniform(
            [global_batch, 3], seed=tf.random.experimental.stateless_fold_in(augment_key, step))
        mine = slice(rank * local, (rank + 1) * local)
        return (tf.reshape(indices[mine], [accumulation, micro_batch]),
                tf.reshape(uniforms[mine], [accumulation, micro_batch, 3]))

    # rebatch concatenates the epochs and cuts them into global batches with vector ops, not per example
    steps = epochs.rebatch(global_batch, drop_remainder=True).enumerate()
    return steps.map(share).unbatch()


def pad_crop_flip(images: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
    """Zero-pad PAD pixels, crop back to H x W at offsets from uniforms[:, :2], flip where uniforms[:, 2]
    < 0.5; one gather per axis for the whole batch. images [b, H, W, C] -> [b, H, W, C], same dtype."""
    h, w = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    offsets = tf.cast(uniforms[:, :2] * (2 * PAD + 1), tf.int32)  # each in 0..2*PAD
    rows = offsets[:, :1] + tf.range(h)[None]
    cols = offsets[:, 1:2] + tf.where(uniforms[:, 2:] < 0.5, tf.range(w - 1, -1, -1)[None], tf.range(w)[None])
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def _with_threads(ds: tf.data.Dataset) -> tf.data.Dataset:
    """The pipeline's own thread pool sized to this process's share of the cores (bench.distributed)."""
    n = environment.threads()
    if n <= 0:
        return ds
    options = tf.data.Options()
    options.threading.private_threadpool_size = n
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def _batches(indices: tf.data.Dataset, arrays: tuple[np.ndarray, np.ndarray], augment: bool) -> tf.data.Dataset:
    """Elements of indices int64 [b] (with uniforms float32 [b, 3] when ``augment``) -> the uint8 images
    [b, H, W, C] gathered from ``arrays``, augmented, as float32 per-image standardised, and labels int32 [b]."""
    images, labels = (tf.constant(a) for a in arrays)

    def make(i, uniforms=None):
        x = tf.gather(images, i)
        if augment:
            x = pad_crop_flip(x, uniforms)
        return tf.image.per_image_standardization(tf.cast(x, tf.float32)), tf.gather(labels, i)

    # deterministic: the order of the batches is the order of the indices, whatever the thread timing
    return _with_threads(indices.map(make, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE))


class InMemory(abc.ABC):
    """The Reader interface (bench.data.common.Reader) of a data set held in memory. A subclass says what
    identifies the arrays of a split (``source``), how to read them (``read``) and what the files hold
    (``native_info``); this class applies ``validation_size``, ``train_subset`` and ``image_size`` and builds the streams."""

    name: str

    @abc.abstractmethod
    def source(self, cfg: RunConfig, split: str) -> tuple:
        """A hashable key of the files' own "train" or "test" split: the files' stamps, or a generator's
        arguments; raises DataError for missing files."""

    @abc.abstractmethod
    def read(self, source: tuple) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 [N, H, W, C] and labels int32 [N] of a ``source``."""

    @abc.abstractmethod
    def native_info(self, cfg: RunConfig) -> DatasetInfo:
        """The files' own shapes and sizes (without reading the pixels)."""

    def info(self, cfg: RunConfig) -> DatasetInfo:
        """``native_info`` with ``image_size``, ``validation_size`` and ``train_subset`` applied (DataError if
        the latter two do not fit the training set)."""
        native = self.native_info(cfg)
        validation_indices(native.train_size, cfg.validation_size)  # raises if it does not fit
        train_size = native.train_size - cfg.validation_size
        if cfg.train_subset:
            train_size = len(subset_indices(train_size, cfg.train_subset))  # raises if it does not fit
        shape = native.image_shape
        if cfg.image_size:
            shape = (cfg.image_size, cfg.image_size, shape[2])
        return DatasetInfo(native.name, shape, native.num_classes, train_size, native.test_size)

    def check(self, cfg: RunConfig) -> None:
        """Read every split in full (and cache it for the pipelines)."""
        self.info(cfg)
        for split in ("train", "test") + (("validation",) if cfg.validation_size else ()):
            self.arrays(cfg, split)

    def arrays(self, cfg: RunConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 [N, H, W, C] and labels int32 [N]; read-only, cached (see bench.data.load_arrays)."""
        check_split(cfg, split)
        source = self.source(cfg, "test" if split == "test" else "train")
        if not cfg.validation_size and not cfg.image_size and not cfg.train_subset:
            return _cached(self, source)
        return _prepared(self, source, split, cfg.validation_size, cfg.image_size,
                         cfg.train_subset if split == "train" else 0)

    def train(self, cfg: RunConfig, *, workers: int, rank: int, micro_batch: int, accumulation: int,
              start_step: int) -> tf.data.Dataset:
        """Infinite (images float32 [micro_batch, H, W, C], labels int32 [micro_batch]) of this rank; a
        resumed run (``start_step`` > 0) skips only indices, exactly where the stream would have been."""
        arrays = self.arrays(cfg, "train")
        indices = train_indices(len(arrays[1]), cfg.seed, workers, rank, micro_batch, accumulation)
        return _batches(indices.skip(start_step * accumulation), arrays, cfg.augment)

    def eval(self, cfg: RunConfig, *, workers: int, rank: int, batch: int, split: str) -> tf.data.Dataset:
        """The contiguous shard [rank*N//workers, (rank+1)*N//workers) of ``split`` in batches of ``batch``
        (the last one short), without augmentation."""
        arrays = self.arrays(cfg, split)
        n = len(arrays[1])
        indices = tf.data.Dataset.range(rank * n // workers, (rank + 1) * n // workers).batch(batch)
        return _batches(indices, arrays, augment=False)

    def precise_bn(self, cfg: RunConfig, *, workers: int, rank: int, batch: int) -> tf.data.Dataset:
        """A fixed draw (seed, stream PRECISE_BN) of the training images, ``min(precise_bn_images, N) //
        workers`` per rank, in batches of ``batch`` (the last may be short), without augmentation."""
        arrays = self.arrays(cfg, "train")
        n = len(arrays[1])
        local = min(cfg.precise_bn_images, n) // workers
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key(cfg.seed, PRECISE_BN))
        mine = tf.data.Dataset.from_tensor_slices(order[rank * local:(rank + 1) * local]).batch(batch)
        return _batches(mine, arrays, augment=False)
