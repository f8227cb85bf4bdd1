"""Evaluation measures the weights: PreciseBN statistics against a NumPy reference, the same on every rank,
and independent of BatchNorm's moving averages (bn_momentum), which only the "moving" mode depends on."""

import gzip
import re
import struct
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from bench import config, data, evaluate, train
from bench.distributed import World
from conftest import PYTHON, ROOT, mpirun, requires_horovod

WORKER = str(ROOT / "tests" / "mpi_precise_bn_worker.py")


def _tiny_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn")(x)
    outputs = keras.layers.Dense(4)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_precise_statistics_are_the_population_moments_of_the_layer_input():
    model = _tiny_model()
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(50, 6, 6, 2)).astype(np.float32)
    batches = tf.data.Dataset.from_tensor_slices((x, np.zeros(50, np.int32))).batch(16)  # last batch short
    mean, var = evaluate.make_precise_bn(model, World())(batches)
    # independent reference: the conv's output over all 50 images at once, moments in float64 NumPy
    conv = keras.Model(model.inputs, model.get_layer("conv").output)(x).numpy().astype(np.float64)
    np.testing.assert_allclose(mean, conv.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, conv.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def _run(tmp_path, **kw):
    cfg = config.make({"dataset": "synthetic", "synthetic_image_size": 16, "synthetic_train_size": 1024,
                       "synthetic_test_size": 256, "width": 8, "global_batch": 64, "per_worker_batch": 64,
                       "steps": 40, "base_lr": 0.2, "init_lr": 0.2, "augment": False, "eval_every_epochs": 0,
                       "precise_bn_images": 512, "output_dir": str(tmp_path), **kw})
    return train.run(cfg, World())


@pytest.mark.slow
def test_top1_does_not_depend_on_bn_momentum_with_precise_statistics(tmp_path):
    precise = [_run(tmp_path, bn_momentum=m)["top1"] for m in (0.99, 0.5)]
    moving = [_run(tmp_path, bn_momentum=m, bn_eval="moving")["top1"] for m in (0.99, 0.5)]
    # same weights (BN's moving averages never enter training), same recomputed statistics: same top-1
    assert precise[0] == pytest.approx(precise[1], abs=1e-6), precise
    # the moving averages trail the weights: after 40 steps they evaluate differently
    assert abs(moving[0] - moving[1]) > 0.02, moving
    print(f"top-1 precise {precise}, moving {moving}")
    assert precise[0] > 0.3, precise  # and the recomputed statistics measure a model that learned


def test_evaluation_restores_the_moving_statistics(tmp_path):
    cfg = config.make({"dataset": "synthetic", "synthetic_image_size": 8, "synthetic_train_size": 256,
                       "synthetic_test_size": 64, "width": 4, "precise_bn_images": 128, "per_worker_batch": 32})
    info = data.info(cfg)
    model = train.models.build(cfg.model, info.image_shape, info.num_classes, cfg.width, cfg.bn_momentum)
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    out = evaluate.make_evaluator(cfg, model, World(), info.num_classes)()
    assert 0 <= out["top1"] <= 1
    for a, b in zip(before, model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


@requires_horovod
@pytest.mark.mpi
def test_every_rank_evaluates_with_the_same_statistics_as_one_rank(tmp_path):
    one = subprocess.run([PYTHON, WORKER, str(tmp_path / "one")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(mpirun(2, WORKER, str(tmp_path / "two")), cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    load = lambda name: [a for _, a in sorted(np.load(tmp_path / name).items(), key=lambda kv: int(kv[0][4:]))]  # noqa: E731
    single, rank0, rank1 = load("one-0.npz"), load("two-0.npz"), load("two-1.npz")
    assert len(single) == 2 * len(evaluate.batchnorm_layers(train.models.build("resnet8", (8, 8, 3), 10, 4)))
    for a, b, c in zip(rank0, rank1, single, strict=True):
        np.testing.assert_array_equal(a, b)  # the same numbers on both ranks
        # batches of 40 split 120 images per rank: the same batches as one rank over 240, so the same numbers
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


# ---- evaluate.check: configs that could only fail at the first evaluation, refused before training --------


def _small(**kw):
    return config.make({"dataset": "synthetic", "synthetic_image_size": 8, "synthetic_train_size": 64,
                        "synthetic_test_size": 16, "width": 4, "per_worker_batch": 16, "eval_batch": 16,
                        "precise_bn_images": 64, **kw})


def _write_fashion(folder, n_train, n_test):
    """Fashion-MNIST's four IDX files (random images) with these sizes."""
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        for kind, magic, array in (("images", 2051, rng.integers(0, 256, (n, 28, 28))),
                                   ("labels", 2049, rng.integers(0, 10, n))):
            with gzip.open(folder / f"{stem}-{kind}-idx{array.ndim}-ubyte.gz", "wb") as f:
                f.write(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes())
    return config.make({"dataset": "fashion_mnist", "data_dir": str(folder), "width": 4, "precise_bn_images": 32,
                        "per_worker_batch": 32})


MOVING = ', or bn_eval = "moving"$'


def test_check_refuses_fewer_precise_bn_images_than_workers():
    for images, workers in [(1, 2), (3, 4), (7, 8)]:
        with pytest.raises(config.ConfigError, match=rf"^precise_bn_images = {images} gives 0 images to each of the "
                                                     rf"{workers} workers \({images} // {workers}\); valid: >= "
                                                     rf"{workers}{MOVING}"):
            evaluate.check(_small(precise_bn_images=images), workers)
        evaluate.check(_small(precise_bn_images=workers), workers)  # the nearest valid: one image each
        evaluate.check(_small(precise_bn_images=images, bn_eval="moving"), workers)  # no PreciseBN at all
    evaluate.check(_small(precise_bn_images=1), 1)
    evaluate.check(_small(precise_bn_images=3), 2)  # no multiple of the workers: 1 image each, 2 in all


def test_check_refuses_a_training_split_smaller_than_the_workers():
    with pytest.raises(config.ConfigError, match=r"^synthetic_train_size = 1 leaves 1 training image\(s\), 0 "
                                                 rf"PreciseBN images for each of the 2 workers; valid: >= 2{MOVING}"):
        evaluate.check(_small(synthetic_train_size=1), 2)
    evaluate.check(_small(synthetic_train_size=2), 2)
    with pytest.raises(config.ConfigError, match=r"^synthetic_train_size = 3 leaves 1 training image\(s\), .*"
                                                 rf"valid: >= 6{MOVING}"):
        evaluate.check(_small(synthetic_train_size=3, validation_size=2), 4)
    with pytest.raises(config.ConfigError, match=r"^validation_size = 63 leaves 1 training image\(s\), 0 "
                                                 rf"PreciseBN images for each of the 2 workers; valid: <= 62{MOVING}"):
        evaluate.check(_small(validation_size=63), 2)
    evaluate.check(_small(validation_size=62), 2)
    evaluate.check(_small(validation_size=63, bn_eval="moving"), 2)


def test_check_refuses_an_empty_test_split(tmp_path):
    """An empty test split is refused before training: the reader's own check names the file (bench.data), and
    evaluate.check, which reads the split's size, reaches it first."""
    cfg = _write_fashion(tmp_path, 64, 0)
    file = re.escape(str(tmp_path / "t10k-images-idx3-ubyte.gz"))
    for check in (lambda: evaluate.check(cfg, 1), lambda: data.check(cfg)):
        with pytest.raises(data.DataError, match=rf"^{file}: IDX dims \(0, 28, 28\): no images; expected N >= 1$"):
            check()
    assert issubclass(data.DataError, config.ConfigError)
    _write_fashion(tmp_path, 64, 1)
    evaluate.check(cfg, 2)  # one image: rank 0's shard is empty, rank 1's holds it


def test_check_passes_splits_that_do_not_divide_over_the_workers():
    # each of these evaluates correctly (trained and evaluated on 2 ranks with mpirun: status complete)
    cfg = _small(synthetic_test_size=1, validation_size=1, eval_batch=3, precise_bn_images=5, per_worker_batch=3)
    evaluate.check(cfg, 2)
    # a rank with no test image adds zeros: the summed count is the whole split, once
    counts = [sum(len(y) for _, y in data.eval_dataset(cfg, workers=2, rank=r, batch=cfg.eval_batch)) for r in (0, 1)]
    assert counts == [0, 1]


def test_the_refused_configs_did_fail_at_evaluation(tmp_path):
    """What ``check`` refuses failed, before it, at the first evaluation, after the whole training.

    On 2 ranks (mpirun -np 2 ... bench train --set precise_bn_images=1, or synthetic_train_size=1, both
    with the rest of a tiny synthetic config) the run trained its steps and then failed with "rank 0:
    TypeError: 'NoneType' object is not iterable; rank 1: TypeError: ...". Two ranks cannot run in one
    process, but the failure happens on each rank before its allreduce, so one rank of two shows it here.
    """
    cfg = _small(precise_bn_images=1)
    model = train.models.build(cfg.model, (8, 8, 3), 10, cfg.width)
    for rank in (0, 1):
        share = data.precise_bn_dataset(cfg, workers=2, rank=rank, batch=16)
        assert sum(len(y) for _, y in share) == 0  # 1 // 2 images for every rank
        with pytest.raises(TypeError, match="'NoneType' object is not iterable"):
            evaluate.make_precise_bn(model, World(rank=rank, size=2))(share)
    # an empty test split: ZeroDivisionError after training (measured with `bench train`, 1 worker, before the
    # readers refused such a file); evaluation's own sum over the split divides by its count
    model = train.models.build(cfg.model, (8, 8, 3), 10, cfg.width)
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 8, 8, 3), np.float32), np.zeros(0, np.int32))).batch(4)
    with pytest.raises(ZeroDivisionError):
        evaluate.accuracy(evaluate.make_eval_step(model, 10), empty, World())
