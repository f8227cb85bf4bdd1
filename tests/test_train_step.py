"""Data parallelism is exact: 2 workers = 1 worker with accumulation 2 = one big batch."""

import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import optimizers
from bench import config, evaluate, schedule, train
from bench.distributed import World
from conftest import PYTHON, ROOT, mpirun, requires_horovod

WORKER = str(ROOT / "tests" / "mpi_train_step_worker.py")


def _weights(path):
    with np.load(path) as f:
        return f["losses"], [f[k] for k in sorted(f.files) if k.startswith("arr_")]


def _run(model_seed, micro, accumulation, x, y, steps, opt_name="momentum"):
    keras.utils.set_random_seed(model_seed)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="tanh"),
                              keras.layers.Flatten(), keras.layers.Dense(5)])
    lr = schedule.WarmupStepDecay(peak=0.3, init=0.3, warmup_steps=0, boundaries=[])
    opt = optimizers.get(opt_name, lr)
    cfg = config.make({"weight_decay": 1e-2, "optimizer": opt_name})
    step = train.make_train_step(model, opt, lr, cfg, World(), accumulation, num_classes=5)
    it = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(micro))
    losses = [float(step(it)[0]) for _ in range(steps)]
    return np.array(losses), [w.numpy() for w in model.trainable_weights]


@pytest.mark.parametrize("opt_name", ["momentum", "rmsprop"])
def test_accumulation_k_equals_one_big_batch(opt_name):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4 * 24, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 5, 4 * 24).astype(np.int32)
    big_losses, big = _run(0, 24, 1, x, y, steps=4, opt_name=opt_name)
    acc_losses, acc = _run(0, 6, 4, x, y, steps=4, opt_name=opt_name)
    # float32: a mean of 4 means vs one mean of 24 differs by a few ulps per step.
    np.testing.assert_allclose(acc_losses, big_losses, rtol=1e-5)
    for a, b in zip(acc, big, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert big_losses[-1] != big_losses[0]  # it trained


def test_accumulation_differs_from_a_single_micro_batch():
    # Guards the test above: taking only the first micro-batch of each step must give other weights.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(96, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 5, 96).astype(np.int32)
    _, big = _run(0, 24, 1, x, y, steps=1)
    _, first = _run(0, 6, 1, x, y, steps=1)
    assert max(np.abs(a - b).max() for a, b in zip(big, first, strict=True)) > 1e-3


@pytest.mark.mpi
@requires_horovod
@pytest.mark.parametrize("opt_name", ["momentum", "lamb"])
def test_two_workers_equal_one_worker_with_accumulation_two(tmp_path, opt_name):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    procs = [subprocess.Popen([PYTHON, WORKER, str(one), opt_name], cwd=ROOT),
             subprocess.Popen(mpirun(2, WORKER, str(two), opt_name), cwd=ROOT)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    (l1, w1), (l2, w2) = _weights(one), _weights(two)
    # Same examples per step; the only difference is where the float32 sums happen (tolerance: ulps
    # amplified over 3 steps by the optimizer, far below the ~1e-2 changes a step makes).
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    for a, b in zip(w2, w1, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_weight_ema_follows_tf1_formula_and_swaps_back():
    v = keras.Variable(np.zeros(3, np.float32))
    shadow, update = evaluate.make_weight_ema([v], decay=0.9)
    want = np.zeros(3)
    for t in range(1, 30):  # update(t) runs after the t-th step, with the new weights
        v.assign(np.full(3, float(t), np.float32))
        update(t)
        d = min(0.9, (1 + t) / (10 + t))
        want = d * want + (1 - d) * t
    np.testing.assert_allclose(shadow[0].numpy(), want, rtol=1e-5)
    with evaluate.swapped_in([v], shadow):
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-5)
    np.testing.assert_array_equal(v.numpy(), np.full(3, 29.0))
