"""Evaluation measures the weights: PreciseBN statistics against a NumPy reference, the same on every rank,
and independent of BatchNorm's moving averages (bn_momentum), which only the "moving" mode depends on."""

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
