"""imagenet: ILSVRC-2012 streamed from the TFRecord shards of tensorflow/models' build_imagenet_data.py
(<dir>/train-NNNNN-of-MMMMM, <dir>/validation-NNNNN-of-MMMMM; tf.train.Example with image/encoded JPEG bytes
and image/class/label 1..1000).

Training: files are sharded per worker (files[rank::workers]) and permuted per epoch from (seed, rank,
epoch), records shuffled in a buffer (Dataset.shuffle(seed + rank): this one also follows the global seed),
then random-resized-crop + flip from (seed, rank, record count), or resize-256 centre-crop-224 without
augmentation. Evaluation and precise BN: resize-256 centre-crop-224. Normalised by the ImageNet mean/std.
Its global batches do depend on the number of workers. Images float32 [b, 224, 224, 3], labels int32 [b]
in 0..999.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench.config import RunConfig
from bench.data.common import (
    AUTOTUNE,
    IMAGENET_CROPS,
    IMAGENET_FILES,
    DataError,
    DatasetInfo,
    base_dir,
    check_split,
    existing_folder,
    key,
    stamp,
)
from bench.datasets import SPECS

SPEC = SPECS["imagenet"]
IMAGENET_SIZE, IMAGENET_RESIZE = SPEC.image_shape[0], 256  # pixels: the crop, the shorter side before it
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_SHUFFLE = 10_000  # records (about 1.1 GB of JPEG bytes per worker)
_READ_AT_ONCE, _READ_BUFFER = 8, 8 << 20  # files read in parallel, bytes of read buffer per file
_RESUME_SHUFFLE = 7919  # times the images already seen, in the shuffle seed: a resumed run shuffles afresh
_HOW = ("TFRecords built from ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
        "(https://image-net.org/download) by tensorflow/models' build_imagenet_data.py")


def files(cfg: RunConfig, split: str) -> list[Path]:
    """Sorted shards <dir>/{train,validation}-NNNNN-of-MMMMM; all M of them must be there."""
    prefix = "train" if split == "train" else "validation"
    base = existing_folder(base_dir(cfg, SPEC.data_variable, f"the folder of the {_HOW}"), "imagenet",
                           f"train-NNNNN-of-MMMMM and validation-NNNNN-of-MMMMM shards ({_HOW}; data_dir or "
                           f"${SPEC.data_variable})")
    pattern = re.compile(rf"{prefix}-(\d+)-of-(\d+)")
    shards = sorted(p for p in base.glob(f"{prefix}-*-of-*") if pattern.fullmatch(p.name))
    if not shards:
        raise DataError(f"imagenet: no {base}/{prefix}-XXXXX-of-YYYYY files; put the {_HOW} in {base} "
                        "(data_dir or $IMAGENET_DIR)")
    totals = {pattern.fullmatch(p.name).group(2) for p in shards}
    total = totals.pop()
    names = {p.name for p in shards}
    missing = [f"{prefix}-{i:0{len(total)}d}-of-{total}" for i in range(int(total))]
    missing = [m for m in missing if m not in names]
    if totals or missing or len(shards) != int(total):
        raise DataError(f"imagenet: {base} has {len(shards)} {prefix} shards but their names say {total}"
                        f" (e.g. missing {missing[:1] or 'none'}, or mixed -of- counts)")
    return shards


_FEATURES = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
             "image/class/label": tf.io.FixedLenFeature([], tf.int64)}
LABEL_RECORDS = 10_000  # records whose labels ``ImageNet.check`` reads, spread over every shard of both splits
_CHECKED: set = set()  # (the shards' stamp, LABEL_RECORDS) that ``ImageNet.check`` passed, for the process
_BAD_LABEL = (f"imagenet: image/class/label outside 1..{SPEC.num_classes} (build_imagenet_data writes 1-based "
              "labels; a 0-based set would train its class 0 on an all-zero one-hot row); the label:")


def parse(record):
    """tf.train.Example of build_imagenet_data -> (JPEG bytes, label int32 0..999). A label outside 1..1000 fails
    the pipeline (InvalidArgumentError naming the label and the valid range), whichever stream reads it: the
    one-hot of label - 1 would be all zeros for 0 (and an error nowhere), so the run would train on no target."""
    f = tf.io.parse_single_example(record, _FEATURES)
    label = f["image/class/label"]
    valid = tf.logical_and(label >= 1, label <= SPEC.num_classes)
    with tf.control_dependencies([tf.debugging.Assert(valid, [_BAD_LABEL, label], summarize=1)]):
        label = tf.identity(label)
    return f["image/encoded"], tf.cast(label - 1, tf.int32)  # 1-based in the files


def normalise(image):
    """float32 pixels 0..255 [H, W, 3] -> (x / 255 - mean) / std per channel."""
    return (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def random_resized_crop(encoded, seed):
    """Crop of 8%..100% of the area, aspect 3/4..4/3, decoded only inside the crop, resized to 224, flipped
    with probability 1/2: float32 [224, 224, 3] in 0..255. Stateless, so the result depends only on (seed,
    record)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(encoded), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.resize(image, [IMAGENET_SIZE, IMAGENET_SIZE])
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def center_crop(encoded):
    """Resize the shorter side to 256 (aspect kept), then the central 224 x 224: float32 [224, 224, 3]."""
    image = tf.io.decode_jpeg(encoded, channels=3)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new = tf.cast(tf.round(hw * IMAGENET_RESIZE / tf.reduce_min(hw)), tf.int32)
    image = tf.image.resize(image, new)
    top, left = (new[0] - IMAGENET_SIZE) // 2, (new[1] - IMAGENET_SIZE) // 2
    image = image[top:top + IMAGENET_SIZE, left:left + IMAGENET_SIZE]
    return tf.ensure_shape(image, [IMAGENET_SIZE, IMAGENET_SIZE, 3])


def _interleave(names: tf.data.Dataset, count: int) -> tf.data.Dataset:
    """Dataset of the names of ``count`` files -> dataset of their serialised records, reading up to 8 files
    at once (deterministic: the same order for every run)."""
    return names.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=_READ_BUFFER),
                            cycle_length=min(_READ_AT_ONCE, count), num_parallel_calls=AUTOTUNE, deterministic=True)


def _read(shards: list[Path]) -> tf.data.Dataset:
    """The serialised records of ``shards``, in file order."""
    return _interleave(tf.data.Dataset.from_tensor_slices([str(p) for p in shards]), len(shards))


def _evaluation_batches(records: tf.data.Dataset, batch: int) -> tf.data.Dataset:
    """Records -> (centre crops, normalised, float32 [<=batch, 224, 224, 3], labels int32 [<=batch])."""
    def preprocess(record):
        encoded, label = parse(record)
        return normalise(center_crop(encoded)), label

    return records.map(preprocess, num_parallel_calls=AUTOTUNE).batch(batch).prefetch(AUTOTUNE)


def _header(path: Path) -> None:
    """DataError unless ``path`` is a readable file that starts with one whole TFRecord (uint64 length, uint32
    crc, data, uint32 crc)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a file; valid: a TFRecord shard ({_HOW})")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        size = os.path.getsize(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or type(e).__name__}); valid: a readable TFRecord "
                        "shard") from None
    if len(head) < 8 or size < 16 + struct.unpack("<Q", head)[0]:
        raise DataError(f"{path}: truncated or not a TFRecord file ({size} bytes); valid: a TFRecord shard ({_HOW})")


def _first_image(path: Path) -> None:
    """DataError unless the first record of ``path`` is a tf.train.Example with a JPEG that decodes."""
    try:
        record = next(iter(tf.data.TFRecordDataset(str(path)).take(1)))
        f = tf.io.parse_single_example(record, _FEATURES)
        tf.io.decode_jpeg(f["image/encoded"], channels=3)
    except (tf.errors.OpError, StopIteration) as e:
        raise DataError(f"{path}: cannot read a tf.train.Example with a JPEG image/encoded and an image/class/label "
                        f"from its first record ({type(e).__name__}); valid: {_HOW}") from None


def _bad_label(path: Path, values: np.ndarray) -> None:
    bad = values[(values < 1) | (values > SPEC.num_classes)]
    if len(bad):
        hint = " (0-based labels?)" if bad.min() == 0 else ""
        raise DataError(f"{path}: image/class/label {int(bad[0])}{hint}; valid: 1..{SPEC.num_classes}, as "
                        "build_imagenet_data writes them (a 0-based set trains its class 0 on an all-zero one-hot row)")


def labels(shards: list[Path], per_shard: int) -> None:
    """DataError naming the shard and the label when a label of the first ``per_shard`` records of a shard is
    outside 1..1000, or a record is not a tf.train.Example with both features. One pipeline over every shard;
    only after an error does it read shard by shard, to name the file."""
    def first(name):
        return tf.data.TFRecordDataset(name).take(per_shard).map(lambda r: (name, r))

    names = tf.data.Dataset.from_tensor_slices([str(p) for p in shards])
    batches = names.flat_map(first).batch(1024).map(lambda n, r: (n, tf.io.parse_example(r, _FEATURES)))
    try:
        for name, features in batches:
            values = features["image/class/label"].numpy()
            bad = (values < 1) | (values > SPEC.num_classes)
            if bad.any():
                _bad_label(Path(name.numpy()[bad.argmax()].decode()), values[bad])
        return
    except tf.errors.OpError:
        pass
    for p in shards:  # name the shard that cannot be read
        try:
            for record in tf.data.TFRecordDataset(str(p)).take(per_shard).batch(1024):
                tf.io.parse_example(record, _FEATURES)
        except tf.errors.OpError as e:
            raise DataError(f"{p}: a record of its first {per_shard} is not a tf.train.Example with image/encoded and "
                            f"image/class/label, or is corrupt ({type(e).__name__}); valid: {_HOW}") from None
    raise DataError(f"imagenet: the shards of {shards[0].parent} cannot be read together; valid: {_HOW}")


class ImageNet:
    """The Reader interface (bench.data.common.Reader) of the streamed data set."""

    name = "imagenet"

    def info(self, cfg: RunConfig) -> DatasetInfo:
        """The standard ILSVRC-2012 counts (bench.datasets); the shards are not counted."""
        return DatasetInfo(self.name, SPEC.image_shape, SPEC.num_classes, SPEC.train_size, SPEC.test_size)

    def check(self, cfg: RunConfig) -> None:
        """Before anything trains: every shard of both splits is a readable file starting with a whole TFRecord,
        the first record of each split holds a decodable JPEG, and the labels of the first ceil(LABEL_RECORDS /
        shards) records of every shard are in 1..1000 (``labels``).

        What it costs: on ILSVRC-2012's 1,152 shards, 9 records each, 10,368 records: about 1.1 GB read at ~110 KB
        a record (an estimate, not measured on the real set: seconds from a local disk, a minute at 20 MB/s),
        against the 140 GB an epoch reads; the pipeline itself adds 0.5 s (measured: 1,152 shards of 9 small
        records on this 2-core machine), once per process and state of the files (a sweep checks every run's
        config). Why that many: build_imagenet_data shuffles the images before sharding, so class 0 of a 0-based
        set is 1 record in 1000; 10,000 miss it with probability 0.999^10,000 = 5e-5, and a class-sorted set has
        class 0 at the head of its first shard. What slips through fails the run at the first batch holding it
        (``parse``)."""
        shards = {split: files(cfg, split) for split in ("train", "validation")}
        for paths in shards.values():
            for p in paths:
                _header(p)
        everything = shards["train"] + shards["validation"]
        seen = (stamp(everything), LABEL_RECORDS)
        if seen in _CHECKED:
            return
        for paths in shards.values():
            _first_image(paths[0])
        labels(everything, -(-LABEL_RECORDS // len(everything)))
        _CHECKED.add(seen)

    def arrays(self, cfg: RunConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Never: ImageNet does not fit in memory (ValueError)."""
        check_split(cfg, split)
        raise ValueError(f"load_arrays: {self.name} is streamed from files, not held in memory")

    def train(self, cfg: RunConfig, *, workers: int, rank: int, micro_batch: int, accumulation: int,
              start_step: int) -> tf.data.Dataset:
        """Infinite (images, labels) micro-batches of this rank; any consecutive ``accumulation`` of them make
        its share of a step. A resumed run (``start_step`` > 0) starts at the start of that epoch's file order
        with a fresh shuffle (re-reading the files would cost an epoch)."""
        images_done = start_step * workers * micro_batch * accumulation
        shards = files(cfg, "train")
        if len(shards) < workers:
            raise DataError(f"imagenet: {len(shards)} train shards for {workers} workers; each worker needs one")
        mine = tf.constant([str(p) for p in shards[rank::workers]])
        fold = tf.random.experimental.stateless_fold_in
        files_key, crops_key = fold(key(cfg.seed, IMAGENET_FILES), rank), fold(key(cfg.seed, IMAGENET_CROPS), rank)
        # file order: a stateless permutation per epoch keyed by (seed, rank, epoch)
        first_epoch = images_done // SPEC.train_size  # a resumed run: that epoch's file order, fresh shuffle
        order = tf.data.Dataset.counter(start=first_epoch).map(
            lambda e: tf.random.experimental.stateless_shuffle(mine, seed=fold(files_key, e))).unbatch()

        def preprocess(i, record):
            encoded, label = parse(record)
            seed = fold(crops_key, i)
            image = random_resized_crop(encoded, seed) if cfg.augment else center_crop(encoded)
            return normalise(image), label

        ds = _interleave(order, len(shards[rank::workers]))
        ds = ds.shuffle(IMAGENET_SHUFFLE, seed=cfg.seed + rank + _RESUME_SHUFFLE * images_done)
        ds = ds.enumerate(start=images_done).map(preprocess, num_parallel_calls=AUTOTUNE)
        return ds.batch(micro_batch, drop_remainder=True).prefetch(AUTOTUNE)

    def eval(self, cfg: RunConfig, *, workers: int, rank: int, batch: int, split: str) -> tf.data.Dataset:
        """One pass over this rank's share of the validation shards (whatever ``split``: ImageNet's test split
        is its validation set): whole files per rank when there are enough of them; otherwise every rank reads
        all and keeps every workers-th record."""
        shards = files(cfg, "validation")
        if len(shards) >= workers:
            records = _read(shards[rank::workers])
        else:
            records = _read(shards).shard(workers, rank)
        return _evaluation_batches(records, batch)

    def precise_bn(self, cfg: RunConfig, *, workers: int, rank: int, batch: int) -> tf.data.Dataset:
        """The first ``precise_bn_images // workers`` records of this rank's training shards, centre-cropped."""
        records = _read(files(cfg, "train")[rank::workers]).take(cfg.precise_bn_images // workers)
        return _evaluation_batches(records, batch)


READER = ImageNet()
