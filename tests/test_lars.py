"""optimizers/lars.py against a NumPy float64 re-derivation of LARS (You et al. 2017) with momentum."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import optimizers
from optimizers.lars import LARS

KERAS_COMMON = {
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
}


def reference_lars(weights, grads_seq, lr, momentum=0.9, eta=0.001, wd=0.0, eps=1e-9):
    """float64 LARS; rank >= 2 arrays adapted (wd inside the trust ratio), rank <= 1 plain momentum SGD."""
    w = [np.array(x, np.float64) for x in weights]
    v = [np.zeros_like(x) for x in w]
    for grads in grads_seq:
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            if w[i].ndim >= 2:
                w_norm, g_norm = np.linalg.norm(w[i]), np.linalg.norm(g)
                trust = eta * w_norm / (g_norm + wd * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0
                v[i] = momentum * v[i] + lr * trust * (g + wd * w[i])
            else:
                v[i] = momentum * v[i] + lr * g
            w[i] = w[i] - v[i]
    return w


def _variables(seed=0, zero_kernel=False):
    rng = np.random.default_rng(seed)
    kernel = np.zeros((4, 3), np.float32) if zero_kernel else rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    return [keras.Variable(kernel, name="kernel"), keras.Variable(bias, name="bias")]


def _grads(steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=s).astype(np.float32) for s in ((4, 3), (3,))] for _ in range(steps)]


@pytest.mark.parametrize("weight_decay", [0.0, 5e-3])
def test_matches_numpy_reference(weight_decay):
    """6 steps, kernel adapted and bias excluded. Tolerance: a few float32 roundings (6e-8 each) per step,
    plus the norms' summation, over 6 steps: rtol 1e-5 is ~10x that; a wrong trust ratio is off by >1%."""
    variables = _variables()
    w0 = [v.numpy() for v in variables]
    grads = _grads(6)
    opt = optimizers.get("lars", 2.0, weight_decay=weight_decay)  # eta 0.001: the kernel's trust ratio ~1e-3
    for g in grads:
        opt.apply(g, variables, loss=123.0)  # the loss is ignored
    expected = reference_lars(w0, grads, lr=2.0, wd=weight_decay)
    for v, e, start in zip(variables, expected, w0, strict=True):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-5 * np.max(np.abs(e - start)))
    # the kernel moved by lr * ~1e-3 per step, the bias by lr per step: adaptation really happened
    assert np.max(np.abs(variables[0].numpy() - w0[0])) < 0.1 < np.max(np.abs(variables[1].numpy() - w0[1]))


def test_trust_ratio_one_is_keras_momentum_sgd():
    """1-D variables (biases, BN gamma/beta) take trust ratio 1: bit-for-bit keras SGD(momentum=0.9)."""
    rng = np.random.default_rng(2)
    init = [rng.normal(size=5).astype(np.float32), rng.normal(size=2).astype(np.float32)]
    grads = [[rng.normal(size=s).astype(np.float32) for s in (5, 2)] for _ in range(10)]
    runs = []
    for opt in (optimizers.get("lars", 0.3, weight_decay=1e-2), keras.optimizers.SGD(0.3, momentum=0.9)):
        variables = [keras.Variable(w) for w in init]
        for g in grads:
            opt.apply(g, variables)
        runs.append([v.numpy() for v in variables])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_zero_norm_falls_back_to_trust_ratio_one():
    wd = 1e-2
    variables = _variables(zero_kernel=True)
    g = _grads(1)[0]
    opt = optimizers.get("lars", 0.5, weight_decay=wd)
    opt.apply(g, variables)  # ||w|| = 0: v = lr * g
    np.testing.assert_allclose(variables[0].numpy(), -0.5 * g[0], rtol=1e-6)
    w1 = variables[0].numpy().copy()
    opt.apply([np.zeros((4, 3), np.float32), g[1]], variables)  # ||g|| = 0: v = m v + lr (0 + wd w)
    np.testing.assert_allclose(variables[0].numpy(), w1 - (0.9 * 0.5 * g[0] + 0.5 * wd * w1), rtol=1e-6)


def test_tf_function_matches_eager():
    grads = _grads(4)
    results = []
    for use_function in (False, True):
        variables = _variables()
        opt = optimizers.get("lars", 1.0, weight_decay=1e-3)
        step = lambda g: opt.apply(g, variables)  # noqa: E731, B023
        step = tf.function(step, jit_compile=False) if use_function else step
        for g in grads:
            step([tf.constant(x) for x in g])
        results.append([v.numpy() for v in variables])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_registry_and_config():
    opt = optimizers.get("lars", 0.1)
    assert isinstance(opt, LARS)
    config = opt.get_config()
    assert (config["momentum"], config["eta"], config["weight_decay"]) == (0.9, 0.001, 0.0)
    assert LARS.from_config(config).get_config() == config
    assert optimizers.valid_hparams("lars") == {"momentum", "eta", "weight_decay", "epsilon"} | KERAS_COMMON
    assert opt.diagnostics() == {}
    with pytest.raises(ValueError, match="valid: a number >= 0"):
        optimizers.get("lars", 0.1, eta=-1.0)
    with pytest.raises(ValueError, match="valid: .*eta"):
        optimizers.get("lars", 0.1, trust=0.01)
