"""bench.data: real file formats written byte-exactly into tmp_path, and the pipelines' batch invariants."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bench import data, datasets
from bench.config import RunConfig
from bench.data import in_memory

RNG = np.random.default_rng(0)


def cfg_for(**kw) -> RunConfig:
    return dataclasses.replace(RunConfig(), **kw)


def test_every_dataset_has_one_reader_with_the_same_interface():
    assert list(data.READERS) == list(datasets.NAMES)
    for name, reader in data.READERS.items():
        assert reader.name == name and data.reader(cfg_for(dataset=name)) is reader
        for method in ("check", "info", "arrays", "train", "eval", "precise_bn"):
            assert callable(getattr(reader, method)), (name, method)
    assert (data.READERS["cifar100"].label_bytes, data.READERS["cifar100"].label_byte) == (2, 1)  # coarse, fine
    with pytest.raises(ValueError, match="streamed"):
        data.load_arrays(cfg_for(dataset="imagenet"), "train")


def standardise(x: np.ndarray) -> np.ndarray:
    """NumPy reference of tf.image.per_image_standardization for one image [H, W, C]."""
    x = x.astype(np.float64)
    return (x - x.mean()) / max(x.std(), 1 / np.sqrt(x.size))


def match(outputs: np.ndarray, raw: np.ndarray) -> list[int]:
    """Index into raw (uint8 [N, H, W, C]) of each standardised output image; asserts an exact match."""
    ref = np.stack([standardise(r) for r in raw]).reshape(len(raw), -1)
    found = []
    for out in outputs.reshape(len(outputs), -1):
        i = int(np.argmin(((ref - out) ** 2).sum(1)))
        np.testing.assert_allclose(out, ref[i], atol=1e-4)
        found.append(i)
    return found


# ------------------------------------------------------------------------------------------ fashion_mnist
def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion(folder: Path, n_train: int = 7, n_test: int = 3) -> dict:
    arrays = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images, labels = RNG.integers(0, 256, (n, 28, 28)), RNG.integers(0, 10, n)
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images, 2051)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels, 2049)
        arrays[stem] = images, labels
    return arrays


def test_idx_files_round_trip(tmp_path):
    arrays = write_fashion(tmp_path)
    cfg = cfg_for(dataset="fashion_mnist", data_dir=str(tmp_path))
    data.check(cfg)
    for split, stem in (("train", "train"), ("test", "t10k")):
        images, labels = data.load_arrays(cfg, split)
        assert images.dtype == np.uint8 and images.shape == (len(arrays[stem][0]), 28, 28, 1)
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(images[..., 0], arrays[stem][0])
        np.testing.assert_array_equal(labels, arrays[stem][1])
    assert data.info(cfg) == data.DatasetInfo("fashion_mnist", (28, 28, 1), 10, 7, 3)


def test_debian_fashion_mnist():
    # never a skip: `make install` installs Debian's dataset-fashion-mnist, which the smoke run and mini need
    assert Path(data.FASHION_DIR, "train-images-idx3-ubyte.gz").is_file(), f"{data.FASHION_DIR}: make install"
    cfg = cfg_for(dataset="fashion_mnist")
    train, test = data.load_arrays(cfg, "train"), data.load_arrays(cfg, "test")
    assert train[0].shape == (60000, 28, 28, 1) and test[0].shape == (10000, 28, 28, 1)
    assert sorted(np.unique(train[1])) == list(range(10)) and np.bincount(test[1]).tolist() == [1000] * 10
    assert data.info(cfg).train_size == 60000


@pytest.mark.parametrize("damage, message", [
    ("magic", "IDX magic 2049; expected 2051"),
    ("short", "data bytes"),
    ("truncated_gzip", "not a readable gzip"),
])
def test_corrupt_idx_names_the_file(tmp_path, damage, message):
    write_fashion(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    images = RNG.integers(0, 256, (7, 28, 28))
    if damage == "magic":
        write_idx(bad, images, 2049)
    elif damage == "short":
        with gzip.open(bad, "wb") as f:
            f.write(struct.pack(">4I", 2051, 7, 28, 28) + images.astype(np.uint8).tobytes()[:-5])
    else:
        bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(data.DataError, match=message) as e:
        data.check(cfg_for(dataset="fashion_mnist", data_dir=str(tmp_path)))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ cifar
def write_cifar(folder: Path, name: str, counts: dict) -> dict:
    """Records of label byte(s) + 3072 CHW pixel bytes; returns {file: (images CHW, fine labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for file, n in counts.items():
        chw = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine = RNG.integers(0, 10 if name == "cifar10" else 100, n, dtype=np.uint8)
        labels = fine[:, None] if name == "cifar10" else np.stack([fine // 5, fine], 1)  # coarse, fine
        (folder / file).write_bytes(np.concatenate([labels, chw.reshape(n, -1)], 1).tobytes())
        written[file] = chw, fine
    return written


CIFAR10_FILES = {f"data_batch_{i}.bin": i + 1 for i in range(1, 6)} | {"test_batch.bin": 4}


def test_cifar10_binary_is_read_as_hwc(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-bin", "cifar10", CIFAR10_FILES)
    cfg = cfg_for(dataset="cifar10", data_dir=str(tmp_path))
    data.check(cfg)
    images, labels = data.load_arrays(cfg, "train")
    chw = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    assert images.shape == (20, 32, 32, 3)
    assert images[3, 5, 7, 2] == chw[3, 2, 5, 7]  # [n, y, x, c] <- [n, c, y, x]
    np.testing.assert_array_equal(images, chw.transpose(0, 2, 3, 1))
    train_labels = [written[f"data_batch_{i}.bin"][1] for i in range(1, 6)]
    np.testing.assert_array_equal(labels, np.concatenate(train_labels))
    test_images, test_labels = data.load_arrays(cfg, "test")
    np.testing.assert_array_equal(test_images, written["test_batch.bin"][0].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(test_labels, written["test_batch.bin"][1])
    assert data.info(cfg) == data.DatasetInfo("cifar10", (32, 32, 3), 10, 20, 4)


def test_cifar100_uses_fine_labels(tmp_path):
    written = write_cifar(tmp_path / "cifar-100-binary", "cifar100", {"train.bin": 50, "test.bin": 6})
    cfg = cfg_for(dataset="cifar100", data_dir=str(tmp_path))
    images, labels = data.load_arrays(cfg, "train")
    np.testing.assert_array_equal(labels, written["train.bin"][1])
    assert labels.max() >= 20  # coarse labels stop at 19
    np.testing.assert_array_equal(images, written["train.bin"][0].transpose(0, 2, 3, 1))
    assert data.info(cfg).num_classes == 100 and data.info(cfg).test_size == 6


def test_cifar_dir_from_env_or_extracted_folder(tmp_path, monkeypatch):
    written = write_cifar(tmp_path / "cifar-100-binary", "cifar100", {"train.bin": 3, "test.bin": 2})
    monkeypatch.setenv("CIFAR_DIR", str(tmp_path))
    _, labels = data.load_arrays(cfg_for(dataset="cifar100"), "test")
    np.testing.assert_array_equal(labels, written["test.bin"][1])
    monkeypatch.delenv("CIFAR_DIR")
    direct = cfg_for(dataset="cifar100", data_dir=str(tmp_path / "cifar-100-binary"))
    np.testing.assert_array_equal(data.load_arrays(direct, "test")[1], written["test.bin"][1])


@pytest.mark.parametrize("name, archive, expected", [
    ("cifar10", "cifar-10-binary.tar.gz", "cifar-10-batches-bin/data_batch_1.bin"),
    ("cifar100", "cifar-100-binary.tar.gz", "cifar-100-binary/train.bin"),
])
def test_missing_cifar_says_what_to_download(tmp_path, monkeypatch, name, archive, expected):
    monkeypatch.delenv("CIFAR_DIR", raising=False)
    with pytest.raises(data.DataError) as e:
        data.check(cfg_for(dataset=name, data_dir=str(tmp_path)))
    msg = str(e.value)
    assert archive in msg and data.CIFAR_URL in msg and str(tmp_path / expected) in msg and "\n" not in msg
    with pytest.raises(data.DataError, match="CIFAR_DIR"):
        data.check(cfg_for(dataset=name))


def test_truncated_cifar_batch_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar(folder, "cifar10", CIFAR10_FILES)
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(data.DataError, match="multiple of 3073") as e:
        data.check(cfg_for(dataset="cifar10", data_dir=str(tmp_path)))
    assert str(bad) in str(e.value)


# ------------------------------------------------------------------------------------------ imagenet
def write_shard(path: Path, images: list[np.ndarray], labels: list[int]) -> None:
    with tf.io.TFRecordWriter(str(path)) as w:
        for image, label in zip(images, labels, strict=True):
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.encode_jpeg(image, quality=100).numpy()])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def constant(colour, h=40, w=60) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


@pytest.fixture()
def imagenet_dir(tmp_path):
    # train shard 0 holds labels 1..3, shard 1 labels 501..503 (1-based as build_imagenet_data writes them)
    for shard, labels in enumerate(([1, 2, 3], [501, 502, 503])):
        write_shard(tmp_path / f"train-{shard:05d}-of-00002", [constant((255, 255, 255))] * 3, labels)
    mean = [round(255 * m) for m in data.IMAGENET_MEAN]
    left_third_black = constant((255, 255, 255), 300, 600)
    left_third_black[:, :200] = 0
    write_shard(tmp_path / "validation-00000-of-00001", [constant(mean), left_third_black, constant(mean)],
                [1000, 7, 8])
    return tmp_path


def test_imagenet_train_and_eval(imagenet_dir):
    cfg = cfg_for(dataset="imagenet", data_dir=str(imagenet_dir))
    data.check(cfg)
    images, labels = next(iter(data.train_dataset(cfg, workers=1, rank=0, micro_batch=4, accumulation=1)))
    assert images.shape == (4, 224, 224, 3) and images.dtype == tf.float32 and labels.dtype == tf.int32
    assert set(labels.numpy()) <= {0, 1, 2, 500, 501, 502}
    white = (1 - np.array(data.IMAGENET_MEAN)) / np.array(data.IMAGENET_STD)  # 2.25, 2.43, 2.64
    np.testing.assert_allclose(images.numpy(), np.broadcast_to(white, images.shape), atol=0.03)
    for rank, expect in ((0, {0, 1, 2}), (1, {500, 501, 502})):  # files[rank::workers]
        ds = data.train_dataset(cfg, workers=2, rank=rank, micro_batch=2, accumulation=2).take(6)
        assert set(np.concatenate([y.numpy() for _, y in ds])) == expect
    with pytest.raises(data.DataError, match="2 train shards for 3 workers"):
        data.train_dataset(cfg, workers=3, rank=0, micro_batch=2, accumulation=1)

    images, labels = next(iter(data.eval_dataset(cfg, workers=1, rank=0, batch=8)))
    assert images.shape == (3, 224, 224, 3) and labels.numpy().tolist() == [999, 6, 7]
    np.testing.assert_allclose(images.numpy()[0], 0, atol=0.03)  # the mean colour normalises to 0
    # 300 x 600 -> 256 x 512 (aspect kept), centre crop: columns 144..367, black ends at 200 * 512/600 = 171
    row = images.numpy()[1, 112, :, 0]
    assert row[:20].max() < -1.5 and row[40:].min() > 2.0
    shards = [data.eval_dataset(cfg, workers=2, rank=r, batch=2) for r in (0, 1)]
    assert sorted(int(y) for ds in shards for _, ys in ds for y in ys) == [6, 7, 999]


def test_imagenet_missing_or_incomplete(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    with pytest.raises(data.DataError, match="ILSVRC2012_img_train.tar") as e:
        data.check(cfg_for(dataset="imagenet", data_dir=str(tmp_path)))
    assert f"{tmp_path}/train-XXXXX-of-YYYYY" in str(e.value)
    write_shard(tmp_path / "train-00000-of-00002", [constant((0, 0, 0))], [1])
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match="train-00001-of-00002"):
        data.check(cfg_for(dataset="imagenet"))


# ----------------------------------------------------------------------------------------- in-memory pipeline
def synthetic(**kw) -> RunConfig:
    base = dict(dataset="synthetic", synthetic_image_size=12, synthetic_train_size=100,
                synthetic_test_size=37, augment=False, seed=3)
    return cfg_for(**base | kw)


def steps(cfg, k, *, workers, micro_batch, accumulation):
    """The first k global batches as (images, labels), concatenating ranks then micro-batches."""
    per_rank = [list(data.train_dataset(cfg, workers=workers, rank=r, micro_batch=micro_batch,
                                        accumulation=accumulation).take(k * accumulation))
                for r in range(workers)]
    step = lambda r, s: r[s * accumulation:(s + 1) * accumulation]
    return [tuple(np.concatenate([e[i].numpy() for r in per_rank for e in step(r, s)]) for i in (0, 1))
            for s in range(k)]


@pytest.mark.parametrize("augment", [False, True])
def test_global_batch_is_independent_of_workers(augment):
    cfg = synthetic(augment=augment)
    one = steps(cfg, 4, workers=1, micro_batch=8, accumulation=2)
    two = steps(cfg, 4, workers=2, micro_batch=8, accumulation=1)
    four = steps(cfg, 4, workers=4, micro_batch=2, accumulation=2)
    for a, b, c in zip(one, two, four, strict=True):
        assert a[0].shape == (16, 12, 12, 3)
        for i in (0, 1):
            np.testing.assert_array_equal(a[i], b[i])
            np.testing.assert_array_equal(a[i], c[i])
    assert not np.array_equal(one[0][1], one[1][1])  # steps differ
    other_seed = steps(synthetic(augment=augment, seed=4), 1, workers=1, micro_batch=8, accumulation=2)
    assert not np.array_equal(one[0][1], other_seed[0][1])


def test_epochs_are_permutations_and_batches_span_them():
    raw, _ = data.load_arrays(synthetic(), "train")
    (images, _), = steps(synthetic(), 1, workers=2, micro_batch=50, accumulation=3)  # 300 = 3 epochs
    order = match(images, raw)
    epochs = [sorted(order[e * 100:(e + 1) * 100]) for e in range(3)]
    assert epochs == [list(range(100))] * 3 and order[:100] != order[100:200]


def test_global_batch_larger_than_dataset():
    cfg = synthetic(synthetic_train_size=8192, synthetic_image_size=4)  # 98304 = 12 epochs per step
    counts = np.zeros(8192, int)
    for rank in range(8):  # the 8 ranks' shares of step 0: every example exactly 12 times
        for indices, _ in in_memory.train_indices(8192, 0, 8, rank, 4096, 3).take(3):
            counts += np.bincount(indices.numpy(), minlength=8192)
    assert counts.min() == counts.max() == 12
    ds = data.train_dataset(cfg, workers=1, rank=0, micro_batch=4096, accumulation=24)
    images, labels = next(iter(ds))
    assert images.shape == (4096, 4, 4, 3) and labels.shape == (4096,)


def test_eval_shards_cover_the_test_set_once():
    cfg = synthetic()
    raw, raw_labels = data.load_arrays(cfg, "test")
    seen, labels = [], []
    for rank in range(3):
        batches = list(data.eval_dataset(cfg, workers=3, rank=rank, batch=5))
        assert [len(y) for _, y in batches][:-1] == [5] * (len(batches) - 1)
        seen += match(np.concatenate([x.numpy() for x, _ in batches]), raw)
        labels += [y.numpy() for _, y in batches]
    assert sorted(seen) == list(range(37))
    np.testing.assert_array_equal(np.concatenate(labels), raw_labels[seen])


def test_augmentation_is_pad_crop_flip_then_standardisation():
    raw, _ = data.load_arrays(synthetic(), "train")
    plain, = steps(synthetic(), 1, workers=1, micro_batch=32, accumulation=1)
    augmented, = steps(synthetic(augment=True), 1, workers=1, micro_batch=32, accumulation=1)
    x = augmented[0]
    assert x.shape == (32, 12, 12, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-4)
    np.testing.assert_array_equal(plain[1], augmented[1])  # same examples in the same order
    p = data.PAD
    transforms = []
    for out, i in zip(x, match(plain[0], raw), strict=True):
        padded = np.pad(raw[i], [(p, p), (p, p), (0, 0)])
        found = [(dy, dx, flip) for dy in range(2 * p + 1) for dx in range(2 * p + 1) for flip in (0, 1)
                 if np.allclose(out, standardise(padded[dy:dy + 12, dx:dx + 12][:, ::-1 if flip else 1]),
                                atol=1e-4)]
        assert found, "an augmented image is not a padded crop (or its mirror) of its source"
        transforms.append(found[0])
    assert len(set(transforms)) > 10 and {t[2] for t in transforms} == {0, 1}


def test_synthetic_is_deterministic_and_learnable():
    cfg = synthetic(synthetic_train_size=2000, synthetic_test_size=500, synthetic_image_size=16,
                    synthetic_channels=1)
    train_x, train_y = data.load_arrays(cfg, "train")
    test_x, test_y = data.load_arrays(cfg, "test")
    assert train_x.shape == (2000, 16, 16, 1) and set(np.unique(train_y)) == set(range(10))
    fresh = data.synthetic.make(16, 1, 10, 2000, "train")
    np.testing.assert_array_equal(fresh[0], train_x)
    # nearest class mean on standardised images, a stand-in for "a small model beats chance (10%)"
    std = lambda a: np.stack([standardise(i) for i in a]).reshape(len(a), -1)
    means = np.stack([std(train_x)[train_y == k].mean(0) for k in range(10)])
    accuracy = np.mean(np.argmax(std(test_x) @ means.T, 1) == test_y)
    assert accuracy > 0.9


def test_validation_split_is_held_out_of_training_and_the_same_for_every_seed():
    cfg = synthetic(validation_size=30)
    train_x, train_y = data.load_arrays(cfg, "train")
    val_x, val_y = data.load_arrays(cfg, "validation")
    all_x, _ = data.load_arrays(synthetic(), "train")
    assert len(val_y) == 30 and len(train_y) == len(all_x) - 30 == data.info(cfg).train_size
    # together they are the training set, each image once
    rows = lambda a: {r.tobytes() for r in a}  # noqa: E731
    assert rows(train_x) | rows(val_x) == rows(all_x) and not rows(train_x) & rows(val_x)
    np.testing.assert_array_equal(data.load_arrays(synthetic(validation_size=30, seed=5), "validation")[0], val_x)
    with pytest.raises(data.DataError, match="validation_size = 4096"):
        data.info(synthetic(validation_size=4096, synthetic_train_size=4096))


def test_train_subset_is_a_fixed_draw_of_the_training_images_left_after_validation():
    cfg = synthetic(validation_size=30, train_subset=40)
    sub_x, sub_y = data.load_arrays(cfg, "train")
    train_x, _ = data.load_arrays(synthetic(validation_size=30), "train")
    rows = lambda a: [r.tobytes() for r in a]  # noqa: E731
    # the subset is the draw subset_indices makes of the training images left after validation (a NumPy
    # re-derivation of the draw), in their order; validation and test are unchanged
    from bench.data.in_memory import SUBSET_SEED
    ref = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(train_x))[:40])
    assert rows(sub_x) == rows(train_x[ref]) and len(sub_y) == 40 == data.info(cfg).train_size
    np.testing.assert_array_equal(data.load_arrays(cfg, "validation")[0],
                                  data.load_arrays(synthetic(validation_size=30), "validation")[0])
    np.testing.assert_array_equal(data.load_arrays(cfg, "test")[0], data.load_arrays(synthetic(), "test")[0])
    # the same images for every run seed; the stream draws its batches from them alone
    np.testing.assert_array_equal(data.load_arrays(synthetic(validation_size=30, train_subset=40, seed=7),
                                                   "train")[0], sub_x)
    plain = dataclasses.replace(cfg, augment=False)
    images, _ = next(iter(data.train_dataset(plain, workers=1, rank=0, micro_batch=40, accumulation=1)))
    assert sorted(match(images.numpy(), sub_x)) == list(range(40))  # one epoch: each subset image once
    # the field enters the run id only when it draws a subset: every id written before it existed stays
    ids = {k: synthetic(validation_size=30, train_subset=k).run_id(1) for k in (0, 40, 41)}
    assert ids[0] == synthetic(validation_size=30).run_id(1) and len(set(ids.values())) == 3
    n = len(train_x)
    for bad in (n, n + 1):
        with pytest.raises(data.DataError, match=rf"train_subset = {bad}; valid: 0 \(all {n} training images, "
                                                 rf"validation held out\) or 1 \.\. {n - 1}"):
            data.info(synthetic(validation_size=30, train_subset=bad))


def test_image_size_area_downsamples():
    cfg = synthetic(synthetic_image_size=16, image_size=8)
    small, _ = data.load_arrays(cfg, "train")
    big, _ = data.load_arrays(synthetic(synthetic_image_size=16), "train")
    # halving: each pixel is the mean of a 2 x 2 block (NumPy reference), rounded to uint8
    ref = big.reshape(-1, 8, 2, 8, 2, 3).astype(np.float64).mean(axis=(2, 4))
    assert small.shape == (len(big), 8, 8, 3) and data.info(cfg).image_shape == (8, 8, 3)
    assert np.abs(small.astype(np.float64) - ref).max() <= 0.5 + 1e-6


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        data.load_arrays(synthetic(), "valid")
    with pytest.raises(ValueError, match="validation_size"):
        data.load_arrays(synthetic(), "validation")
    with pytest.raises(ValueError, match="rank=2"):
        data.train_dataset(synthetic(), workers=2, rank=2, micro_batch=4, accumulation=1)


def test_imagenet_random_resized_crop_and_flip(tmp_path):
    ramp = np.broadcast_to(np.linspace(0, 255, 200).astype(np.uint8)[None, :, None], (150, 200, 3)).copy()
    write_shard(tmp_path / "train-00000-of-00001", [ramp] * 16, [5] * 16)
    cfg = cfg_for(dataset="imagenet", data_dir=str(tmp_path))
    images, labels = next(iter(data.train_dataset(cfg, workers=1, rank=0, micro_batch=16, accumulation=1)))
    left, right = images.numpy()[:, 112, 0, 0], images.numpy()[:, 112, -1, 0]
    assert set(labels.numpy()) == {4}
    assert 0 < np.sum(left > right) < 16  # some flipped, some not
    assert np.ptp(np.abs(right - left)) > 0.5  # crops of different widths of the ramp
    plain, _ = next(iter(data.train_dataset(dataclasses.replace(cfg, augment=False), workers=1, rank=0,
                                            micro_batch=2, accumulation=1)))
    np.testing.assert_allclose(plain.numpy()[0], plain.numpy()[1])  # resize-256 centre-crop-224
    assert plain.numpy()[0, 112, 0, 0] < plain.numpy()[0, 112, -1, 0]


@pytest.mark.parametrize("augment", [False, True])
def test_start_step_continues_the_stream_exactly(augment):
    # 100 images, global batch 16: step 9 starts in the second epoch, so the skip crosses an epoch boundary
    cfg = synthetic(augment=augment)
    whole = list(data.train_dataset(cfg, workers=2, rank=1, micro_batch=4, accumulation=2).take(2 * 12))
    resumed = list(data.train_dataset(cfg, workers=2, rank=1, micro_batch=4, accumulation=2,
                                      start_step=9).take(2 * 3))
    for a, b in zip(whole[2 * 9:], resumed, strict=True):
        for i in (0, 1):
            np.testing.assert_array_equal(a[i].numpy(), b[i].numpy())
    with pytest.raises(ValueError, match="start_step = -1"):
        data.train_dataset(cfg, workers=1, rank=0, micro_batch=4, accumulation=1, start_step=-1)
