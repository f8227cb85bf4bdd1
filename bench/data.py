"""tf.data pipelines: fashion_mnist, cifar10/cifar100 (binary files), imagenet (TFRecords) and synthetic.

In-memory datasets (everything but imagenet) are read once into uint8 arrays and fed by a stream of example
indices that depends only on (cfg.seed, global batch): epoch e is a stateless permutation keyed by
(seed, e), the epochs are concatenated and cut into global batches of workers x micro_batch x accumulation
(a global batch may span an epoch boundary, or several epochs when it is larger than the dataset). Rank r
takes the contiguous slice [r*local, (r+1)*local) of every global batch, as `accumulation` micro-batches.
The crop offsets and flips are drawn for the whole global batch from (seed, step), so one worker with
accumulation 2 sees exactly the (augmented) examples that two workers see in the same step.

Stateless ops rather than `Dataset.shuffle(seed=...)`: the latter also depends on the global seed, which
the trainer offsets by rank, and the ranks would then disagree on the global batch.

ImageNet is streamed: files are sharded per worker (files[rank::workers]) and permuted per epoch from
(seed, rank, epoch), records shuffled in a buffer (Dataset.shuffle(seed + rank): this one also follows the
global seed), then random-resized-crop + flip from (seed, rank, record count), or resize-256 centre-crop-224;
normalised by the ImageNet mean/std. Its global batches do depend on the number of workers.
"""

from __future__ import annotations

import functools
import gzip
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench import environment
from bench.config import ConfigError, RunConfig
from bench.datasets import SPECS

AUTOTUNE = tf.data.AUTOTUNE
FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
PAD = 4  # pixels of zero padding before the random crop (NLCG.md s4; TF's cifar reference pads with zeros)
SYNTHETIC_SEED = 20180101  # the synthetic data is the same for every run seed
IMAGENET_SIZE, IMAGENET_RESIZE = 224, 256
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_SHUFFLE = 10_000  # records (about 1.1 GB of JPEG bytes per worker)
# (sub-folder, train files, test files, archive, label bytes per record, which label byte, classes)
CIFAR = {
    "cifar10": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"],
                "cifar-10-binary.tar.gz", 1, 0, 10),
    "cifar100": ("cifar-100-binary", ["train.bin"], ["test.bin"], "cifar-100-binary.tar.gz", 2, 1, 100),
}
# Streams of the stateless random keys [seed, stream]; each is folded with an epoch, step or rank.
_SHUFFLE, _AUGMENT, _IMAGENET_FILES, _IMAGENET_CROPS, _PRECISE_BN = 0, 1, 2, 3, 4
VALIDATION_SEED = 20181202  # the held-out validation images are the same draw for every run seed


class DataError(ConfigError):
    """Missing or corrupt data files; the one-line message names the file and what was expected."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    image_shape: tuple[int, int, int]  # H, W, C of the model input
    num_classes: int
    train_size: int  # examples
    test_size: int


# ------------------------------------------------------------------------------------------ files
def _base_dir(cfg: RunConfig, env: str, what: str) -> Path:
    base = cfg.data_dir or environment.get(env)
    if not base:
        raise DataError(f"{cfg.dataset}: no data folder; set data_dir in the config or ${env} ({what})")
    return Path(base)


def _fashion_files(cfg: RunConfig, split: str) -> tuple[Path, Path]:
    folder = Path(cfg.data_dir or FASHION_DIR)
    stem = "train" if split == "train" else "t10k"
    files = (folder / f"{stem}-images-idx3-ubyte.gz", folder / f"{stem}-labels-idx1-ubyte.gz")
    for f in files:
        if not f.is_file():
            raise DataError(f"fashion_mnist: missing {f}; apt-get install dataset-fashion-mnist (files in "
                            f"{FASHION_DIR}) or put the four *-ubyte.gz files of "
                            "https://github.com/zalandoresearch/fashion-mnist in data_dir")
    return files


def _cifar_files(cfg: RunConfig, split: str) -> list[Path]:
    sub, train, test, archive = CIFAR[cfg.dataset][:4]
    hint = f"download {archive} from {CIFAR_URL} and extract it there"
    base = _base_dir(cfg, SPECS[cfg.dataset].data_variable, hint)
    # data_dir may name the folder that holds the extracted archive or the extracted folder itself
    folder = base if base.name == sub or (base / train[0]).is_file() else base / sub
    missing = [str(folder / f) for f in train + test if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{cfg.dataset}: missing {', '.join(missing)}; download {archive} from {CIFAR_URL} "
                        f"and extract it in {base} (data_dir or $CIFAR_DIR)")
    return [folder / f for f in (train if split == "train" else test)]


def _imagenet_files(cfg: RunConfig, split: str) -> list[Path]:
    """Sorted shards <dir>/{train,validation}-NNNNN-of-MMMMM; all M of them must be there."""
    prefix = "train" if split == "train" else "validation"
    how = ("TFRecords built from ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
           "(https://image-net.org/download) by tensorflow/models' build_imagenet_data.py")
    base = _base_dir(cfg, SPECS["imagenet"].data_variable, f"the folder of the {how}")
    pattern = re.compile(rf"{prefix}-(\d+)-of-(\d+)")
    files = sorted(p for p in base.glob(f"{prefix}-*-of-*") if pattern.fullmatch(p.name))
    if not files:
        raise DataError(f"imagenet: no {base}/{prefix}-XXXXX-of-YYYYY files; put the {how} in {base} "
                        "(data_dir or $IMAGENET_DIR)")
    totals = {pattern.fullmatch(p.name).group(2) for p in files}
    total = totals.pop()
    names = {p.name for p in files}
    missing = [f"{prefix}-{i:0{len(total)}d}-of-{total}" for i in range(int(total))]
    missing = [m for m in missing if m not in names]
    if totals or missing or len(files) != int(total):
        raise DataError(f"imagenet: {base} has {len(files)} {prefix} shards but their names say {total}"
                        f" (e.g. missing {missing[:1] or 'none'}, or mixed -of- counts)")
    return files


def _stamp(paths) -> tuple:
    """Cache key: a file that changes on disk is read again."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


# ------------------------------------------------------------------------------------------ readers
def _idx_header(path: Path, head: bytes, magic: int, tail: tuple) -> tuple:
    """Check an IDX header (magic 2051: images N x 28 x 28, 2049: labels N); return its dims."""
    ndim = magic & 0xFF
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(head)} bytes); expected {4 + 4 * ndim}")
    got = int.from_bytes(head[:4], "big")
    if got != magic:
        raise DataError(f"{path}: IDX magic {got}; expected {magic} ({'images' if ndim == 3 else 'labels'})")
    dims = struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim])
    if dims[1:] != tail:
        raise DataError(f"{path}: IDX dims {dims}; expected (N, {', '.join(map(str, tail))})")
    return dims


def _read_idx(path: Path, magic: int, tail: tuple) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); expected a gzipped IDX file") from None
    dims = _idx_header(path, raw, magic, tail)
    start, need = 4 + 4 * len(dims), int(np.prod(dims))
    if len(raw) - start != need:
        raise DataError(f"{path}: {len(raw) - start} data bytes; the IDX header {dims} needs {need}")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _read_fashion(image_file: Path, label_file: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(image_file, 2051, (28, 28))[..., None]
    labels = _read_idx(label_file, 2049, ()).astype(np.int32)
    if len(images) != len(labels):
        raise DataError(f"{label_file}: {len(labels)} labels for {len(images)} images in {image_file}")
    if len(labels) and labels.max() >= 10:
        raise DataError(f"{label_file}: label {labels.max()}; expected 0..9")
    return images, labels


def _cifar_records(path: Path, label_bytes: int) -> int:
    size, record = path.stat().st_size, label_bytes + 3072
    if size == 0 or size % record:
        raise DataError(f"{path}: {size} bytes; expected a positive multiple of {record} "
                        f"({label_bytes} label byte(s) + 3072 pixel bytes per record)")
    return size // record


def _read_cifar(paths: list[Path], label_bytes: int, which: int, classes: int):
    """Records: label byte(s) then 3072 bytes of pixels, channel-major (CHW); returns HWC images."""
    images, labels = [], []
    for p in paths:
        n = _cifar_records(p, label_bytes)
        recs = np.fromfile(p, np.uint8).reshape(n, label_bytes + 3072)
        if recs[:, which].max() >= classes:
            raise DataError(f"{p}: label {recs[:, which].max()}; expected 0..{classes - 1}")
        labels.append(recs[:, which].astype(np.int32))
        images.append(recs[:, label_bytes:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


def _synthetic(size: int, channels: int, classes: int, n: int, split: str):
    """Noise plus a per-class pattern of 4 x 4 coarse cells (survives per-image standardisation and a
    4-pixel shift), so a small model beats chance; images uint8 [n, size, size, channels]."""
    coarse = np.random.default_rng([SYNTHETIC_SEED, 0]).integers(0, 256, (classes, 4, 4, channels), np.uint16)
    cell = -(-size // 4)
    templates = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, :size, :size]
    rng = np.random.default_rng([SYNTHETIC_SEED, 1 if split == "train" else 2])
    labels = rng.integers(0, classes, n).astype(np.int32)
    noise = rng.integers(0, 256, (n, size, size, channels), np.uint16)
    return ((templates[labels] + noise) // 2).astype(np.uint8), labels


@functools.lru_cache(maxsize=4)
def _cached(dataset: str, stamp: tuple, args: tuple):
    if dataset == "fashion_mnist":
        images, labels = _read_fashion(*(Path(s[0]) for s in stamp))
    elif dataset in CIFAR:
        images, labels = _read_cifar([Path(s[0]) for s in stamp], *args)
    else:
        images, labels = _synthetic(*args)
    images, labels = np.ascontiguousarray(images), np.ascontiguousarray(labels)
    images.flags.writeable = labels.flags.writeable = False  # shared by every caller
    return images, labels


def _source(cfg: RunConfig, split: str) -> tuple:
    """The cache key (dataset, file stamps, reader arguments) of the files' own train or test split."""
    if cfg.dataset == "fashion_mnist":
        return cfg.dataset, _stamp(_fashion_files(cfg, split)), ()
    if cfg.dataset in CIFAR:
        return cfg.dataset, _stamp(_cifar_files(cfg, split)), CIFAR[cfg.dataset][4:]
    if cfg.dataset == "synthetic":
        n = cfg.synthetic_train_size if split == "train" else cfg.synthetic_test_size
        return cfg.dataset, (), (cfg.synthetic_image_size, cfg.synthetic_channels, cfg.synthetic_classes, n, split)
    raise ValueError(f"load_arrays: {cfg.dataset} is streamed from files, not held in memory")


def validation_indices(n: int, validation_size: int) -> np.ndarray:
    """Sorted indices of the training images held out for validation: a fixed draw (VALIDATION_SEED)."""
    if not 0 <= validation_size < n:
        raise DataError(f"validation_size = {validation_size}; valid: 0 .. {n - 1} (the training set has {n})")
    return np.sort(np.random.default_rng(VALIDATION_SEED).permutation(n)[:validation_size])


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Area-average uint8 images [N, H, W, C] to [N, size, size, C] (rounded back to uint8)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = [tf.image.resize(tf.cast(images[i:i + 8192], tf.float32), [size, size], method="area").numpy()
           for i in range(0, len(images), 8192)]
    return np.clip(np.rint(np.concatenate(out)), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=6)
def _prepared(source: tuple, split: str, validation_size: int, image_size: int):
    images, labels = _cached(*source)
    if split != "test" and validation_size:
        held = np.zeros(len(labels), bool)
        held[validation_indices(len(labels), validation_size)] = True
        keep = held if split == "validation" else ~held
        images, labels = images[keep], labels[keep]
    if image_size:
        images = downsample(images, image_size)
    images, labels = np.ascontiguousarray(images), np.ascontiguousarray(labels)
    images.flags.writeable = labels.flags.writeable = False  # shared by every caller
    return images, labels


def load_arrays(cfg: RunConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, H, W, C] and labels int32 [N] of an in-memory dataset; read-only, cached.

    ``split``: "train" (without the ``validation_size`` held-out images), "validation" (those images) or
    "test". With ``image_size`` set, images are area-downsampled to image_size x image_size."""
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split = {split!r}; valid: train, validation, test")
    if split == "validation" and not cfg.validation_size:
        raise ValueError("split = 'validation' needs validation_size > 0; valid splits here: train, test")
    source = _source(cfg, "test" if split == "test" else "train")
    if not cfg.validation_size and not cfg.image_size:
        return _cached(*source)
    return _prepared(source, split, cfg.validation_size, cfg.image_size)


def info(cfg: RunConfig) -> DatasetInfo:
    """Shapes and sizes (``image_size`` and ``validation_size`` applied); reads file headers (not the data)
    of fashion_mnist and cifar, so it can raise DataError; imagenet returns the standard ILSVRC2012 counts."""
    native = _native_info(cfg)
    if cfg.dataset == "imagenet":
        return native
    validation_indices(native.train_size, cfg.validation_size)  # raises if it does not fit
    shape = native.image_shape
    if cfg.image_size:
        shape = (cfg.image_size, cfg.image_size, shape[2])
    return DatasetInfo(native.name, shape, native.num_classes, native.train_size - cfg.validation_size,
                       native.test_size)


def _native_info(cfg: RunConfig) -> DatasetInfo:
    if cfg.dataset == "fashion_mnist":
        sizes = []
        for split in ("train", "test"):
            image_file = _fashion_files(cfg, split)[0]
            try:
                with gzip.open(image_file, "rb") as f:
                    head = f.read(16)
            except (OSError, EOFError, zlib.error) as e:
                raise DataError(f"{image_file}: not a readable gzip file ({e})") from None
            sizes.append(_idx_header(image_file, head, 2051, (28, 28))[0])
        return DatasetInfo(cfg.dataset, (28, 28, 1), 10, *sizes)
    if cfg.dataset in CIFAR:
        label_bytes, classes = CIFAR[cfg.dataset][4], CIFAR[cfg.dataset][6]
        sizes = [sum(_cifar_records(p, label_bytes) for p in _cifar_files(cfg, s)) for s in ("train", "test")]
        return DatasetInfo(cfg.dataset, (32, 32, 3), classes, *sizes)
    if cfg.dataset == "imagenet":
        spec = SPECS[cfg.dataset]
        return DatasetInfo(cfg.dataset, spec.image_shape, spec.num_classes, spec.train_size, spec.test_size)
    s = cfg.synthetic_image_size
    return DatasetInfo(cfg.dataset, (s, s, cfg.synthetic_channels), cfg.synthetic_classes,
                       cfg.synthetic_train_size, cfg.synthetic_test_size)


def check(cfg: RunConfig) -> None:
    """Raise DataError for missing or corrupt files before anything trains. In-memory datasets are read
    in full (and cached for the pipelines); for imagenet every shard's first record header is checked
    and the first record of each split is parsed."""
    if cfg.dataset != "imagenet":
        info(cfg)
        for split in ("train", "test") + (("validation",) if cfg.validation_size else ()):
            load_arrays(cfg, split)
        return
    for split in ("train", "validation"):
        files = _imagenet_files(cfg, split)
        for p in files:
            with open(p, "rb") as f:
                head = f.read(8)
            # TFRecord: uint64 length, uint32 crc, data, uint32 crc
            if len(head) < 8 or p.stat().st_size < 16 + struct.unpack("<Q", head)[0]:
                raise DataError(f"{p}: truncated or not a TFRecord file ({p.stat().st_size} bytes)")
        try:
            record = next(iter(tf.data.TFRecordDataset(str(files[0])).take(1)))
            label = int(_parse(record)[1]) + 1
        except (tf.errors.OpError, StopIteration) as e:
            raise DataError(f"{files[0]}: cannot read a tf.train.Example with image/encoded and "
                            f"image/class/label from it ({type(e).__name__})") from None
        if not 1 <= label <= 1000:
            raise DataError(f"{files[0]}: image/class/label {label}; expected 1..1000 (build_imagenet_data)")


# ------------------------------------------------------------------------------------------ in-memory
def _check_args(workers: int, rank: int, *sizes: int) -> None:
    if not 0 <= rank < workers or min(sizes) < 1:
        raise ValueError(f"bad pipeline arguments workers={workers} rank={rank} sizes={sizes}")


def _key(seed: int, stream: int) -> tf.Tensor:
    return tf.constant([seed, stream], tf.int64)


def _train_indices(n: int, seed: int, workers: int, rank: int, micro_batch: int,
                   accumulation: int) -> tf.data.Dataset:
    """Infinite (indices int64 [micro_batch], uniforms float32 [micro_batch, 3]) for this rank; each
    `accumulation` consecutive elements are its share of one global batch."""
    local = micro_batch * accumulation
    global_batch = workers * local
    shuffle_key, augment_key = _key(seed, _SHUFFLE), _key(seed, _AUGMENT)
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


def _pad_crop_flip(images: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
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


def _make_batch(images, labels, indices, uniforms, augment: bool):
    """Gather uint8 images [b, H, W, C] by index, augment, then float32 per-image standardisation."""
    x = tf.gather(images, indices)
    if augment:
        x = _pad_crop_flip(x, uniforms)
    return tf.image.per_image_standardization(tf.cast(x, tf.float32)), tf.gather(labels, indices)


def train_dataset(cfg: RunConfig, *, workers: int, rank: int, micro_batch: int,
                  accumulation: int, start_step: int = 0) -> tf.data.Dataset:
    """Infinite (images float32 [micro_batch, H, W, C], labels int32 [micro_batch]); every `accumulation`
    consecutive elements are this rank's share of one optimizer step (imagenet, being a stream, only needs
    `accumulation` for that grouping; any consecutive micro-batches serve).

    `start_step` > 0 (a resumed run) starts after that many optimizer steps: exactly where the stream
    would have been for in-memory datasets (only indices are skipped, no image is made); for imagenet at
    the start of that epoch's file order with a fresh shuffle (re-reading the files would cost an epoch)."""
    _check_args(workers, rank, micro_batch, accumulation)
    if start_step < 0:
        raise ValueError(f"start_step = {start_step} must be >= 0")
    if cfg.dataset == "imagenet":
        return _imagenet_train(cfg, workers, rank, micro_batch, start_step * workers * micro_batch * accumulation)
    images, labels = (tf.constant(a) for a in load_arrays(cfg, "train"))
    indices = _train_indices(int(labels.shape[0]), cfg.seed, workers, rank, micro_batch, accumulation)
    indices = indices.skip(start_step * accumulation)
    return _with_threads(indices.map(lambda i, u: _make_batch(images, labels, i, u, cfg.augment),
                                     num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE))


def eval_dataset(cfg: RunConfig, *, workers: int, rank: int, batch: int, split: str = "test") -> tf.data.Dataset:
    """One pass over this rank's shard of the test (or validation) split: (images float32 [<=batch, H, W, C],
    labels int32). In-memory shards are contiguous ranges [rank*N//workers, (rank+1)*N//workers); the last
    batch is short."""
    _check_args(workers, rank, batch)
    if cfg.dataset == "imagenet":
        return _imagenet_eval(cfg, workers, rank, batch)
    images, labels = (tf.constant(a) for a in load_arrays(cfg, split))
    n = int(labels.shape[0])
    indices = tf.data.Dataset.range(rank * n // workers, (rank + 1) * n // workers).batch(batch)
    return _with_threads(indices.map(lambda i: _make_batch(images, labels, i, None, False),
                                     num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE))


def precise_bn_dataset(cfg: RunConfig, *, workers: int, rank: int, batch: int) -> tf.data.Dataset:
    """This rank's share of the ``precise_bn_images`` training images that evaluation recomputes BatchNorm's
    statistics from: a fixed draw (seed, stream _PRECISE_BN) without augmentation (evaluation's
    preprocessing), ``precise_bn_images // workers`` per rank (capped by the training set), in batches of
    ``batch`` (the last may be short). Images float32 [b, H, W, C], labels int32 [b]."""
    _check_args(workers, rank, batch)
    if cfg.dataset == "imagenet":
        files = _imagenet_files(cfg, "train")
        ds = tf.data.Dataset.from_tensor_slices([str(p) for p in files[rank::workers]])
        ds = ds.apply(_records(files[rank::workers])).take(cfg.precise_bn_images // workers)
        return ds.map(lambda r: (_normalise(_center_crop(_parse(r)[0])), _parse(r)[1]),
                      num_parallel_calls=AUTOTUNE).batch(batch).prefetch(AUTOTUNE)
    images, labels = (tf.constant(a) for a in load_arrays(cfg, "train"))
    n = int(labels.shape[0])
    local = min(cfg.precise_bn_images, n) // workers
    order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=_key(cfg.seed, _PRECISE_BN))
    mine = tf.data.Dataset.from_tensor_slices(order[rank * local:(rank + 1) * local]).batch(batch)
    return _with_threads(mine.map(lambda i: _make_batch(images, labels, i, None, False),
                                  num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE))


# ------------------------------------------------------------------------------------------ imagenet
def _parse(record):
    """tf.train.Example of build_imagenet_data -> (JPEG bytes, label int32 0..999)."""
    f = tf.io.parse_single_example(record, {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                                            "image/class/label": tf.io.FixedLenFeature([], tf.int64)})
    return f["image/encoded"], tf.cast(f["image/class/label"] - 1, tf.int32)  # 1-based in the files


def _normalise(image):
    """float32 pixels 0..255 [H, W, 3] -> (x / 255 - mean) / std per channel."""
    return (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _random_resized_crop(encoded, seed):
    """Crop of 8%..100% of the area, aspect 3/4..4/3, decoded only inside the crop, resized to 224, flipped
    with probability 1/2. Stateless, so the result depends only on (seed, record)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(encoded), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.resize(image, [IMAGENET_SIZE, IMAGENET_SIZE])
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _center_crop(encoded):
    """Resize the shorter side to 256 (aspect kept), then the central 224 x 224."""
    image = tf.io.decode_jpeg(encoded, channels=3)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new = tf.cast(tf.round(hw * IMAGENET_RESIZE / tf.reduce_min(hw)), tf.int32)
    image = tf.image.resize(image, new)
    top, left = (new[0] - IMAGENET_SIZE) // 2, (new[1] - IMAGENET_SIZE) // 2
    image = image[top:top + IMAGENET_SIZE, left:left + IMAGENET_SIZE]
    return tf.ensure_shape(image, [IMAGENET_SIZE, IMAGENET_SIZE, 3])


def _records(files: list[Path]):
    """Dataset of file names -> dataset of serialised records, reading up to 8 files at once."""
    return lambda ds: ds.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
                                    cycle_length=min(8, len(files)), num_parallel_calls=AUTOTUNE,
                                    deterministic=True)


def _imagenet_train(cfg: RunConfig, workers: int, rank: int, micro_batch: int,
                    images_done: int = 0) -> tf.data.Dataset:
    files = _imagenet_files(cfg, "train")
    if len(files) < workers:
        raise DataError(f"imagenet: {len(files)} train shards for {workers} workers; each worker needs one")
    mine = tf.constant([str(p) for p in files[rank::workers]])
    fold = tf.random.experimental.stateless_fold_in
    files_key, key = fold(_key(cfg.seed, _IMAGENET_FILES), rank), fold(_key(cfg.seed, _IMAGENET_CROPS), rank)
    # file order: a stateless permutation per epoch keyed by (seed, rank, epoch)
    first_epoch = images_done // SPECS["imagenet"].train_size  # a resumed run: that epoch's file order, fresh shuffle
    order = tf.data.Dataset.counter(start=first_epoch).map(
        lambda e: tf.random.experimental.stateless_shuffle(mine, seed=fold(files_key, e))).unbatch()

    def preprocess(i, record):
        encoded, label = _parse(record)
        seed = fold(key, i)
        image = _random_resized_crop(encoded, seed) if cfg.augment else _center_crop(encoded)
        return _normalise(image), label

    ds = order.apply(_records(files[rank::workers]))
    ds = ds.shuffle(IMAGENET_SHUFFLE, seed=cfg.seed + rank + 7919 * images_done).enumerate(start=images_done)
    ds = ds.map(preprocess, num_parallel_calls=AUTOTUNE)
    return ds.batch(micro_batch, drop_remainder=True).prefetch(AUTOTUNE)


def _imagenet_eval(cfg: RunConfig, workers: int, rank: int, batch: int) -> tf.data.Dataset:
    files = _imagenet_files(cfg, "validation")
    # whole files per rank when there are enough of them; otherwise every rank reads all and keeps 1/workers
    if len(files) >= workers:
        ds = tf.data.Dataset.from_tensor_slices([str(p) for p in files[rank::workers]])
        ds = ds.apply(_records(files[rank::workers]))
    else:
        ds = tf.data.Dataset.from_tensor_slices([str(p) for p in files]).apply(_records(files))
        ds = ds.shard(workers, rank)
    def preprocess(record):
        encoded, label = _parse(record)
        return _normalise(_center_crop(encoded)), label

    return ds.map(preprocess, num_parallel_calls=AUTOTUNE).batch(batch).prefetch(AUTOTUNE)
