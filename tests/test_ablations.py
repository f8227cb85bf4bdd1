"""NLCG taken apart (issue 28): NLCG with beta held fixed, and momentum with NLCG's diagonal BFGS preconditioner,
each against a float64 NumPy re-derivation on the noisy softmax problem of tests/test_nlcg.py; the
preconditioner is NLCG's own code, not a copy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_nlcg import EPS, ReferenceNLCG, batches, flat, make_problem, make_variables, softmax_loss_and_grads

import optimizers
from optimizers import nlcg, preconditioned


def _run(opt, reference_step, steps=40, schedule=None):
    x, labels = make_problem()
    variables = make_variables()
    w0 = flat(variables)
    ref_w = w0.copy()
    errors, diags = [], []
    for t, idx in enumerate(batches(steps)):
        loss, grads = softmax_loss_and_grads([v.numpy() for v in variables], x[idx], labels[idx])
        grads32 = [g.astype(np.float32) for g in grads]
        opt.apply([tf.constant(g) for g in grads32], variables, loss=tf.constant(np.float32(loss)))
        ref_w = reference_step(t, flat(grads32), float(np.float32(loss)), float(schedule(t)), ref_w)
        errors.append(np.max(np.abs(flat(variables) - ref_w)))
        diags.append({k: float(v) for k, v in opt.diagnostics().items()})
    return max(errors) / np.max(np.abs(ref_w - w0)), diags


@pytest.mark.parametrize("preconditioner", ["bfgs", "none"])
@pytest.mark.parametrize("line_search", ["step", "none"])
@pytest.mark.parametrize("fixed_beta", [0.9, 0.0])
def test_nlcg_with_a_fixed_beta_follows_the_reference(preconditioner, line_search, fixed_beta):
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([19], [2.0, 1.0])
    opt = optimizers.get("nlcg-fr", schedule, preconditioner=preconditioner, line_search=line_search,
                         fixed_beta=fixed_beta)
    ref = ReferenceNLCG(flat(make_variables()), "fr", preconditioner, line_search, fixed_beta=fixed_beta)

    def step(t, g, loss, eta, _w):
        ref.step(t, g, loss, eta)
        return ref.w

    error, diags = _run(opt, step, schedule=schedule)
    assert error <= 2e-5, f"max error {error:.2e} of the weight change"
    assert diags[0]["beta"] == 0.0 and all(d["beta"] == pytest.approx(fixed_beta) for d in diags[1:])
    assert [h[2] for h in ref.history[1:]] == [fixed_beta] * 39


def test_a_fixed_beta_changes_the_direction_and_none_keeps_the_rule():
    g0, g1 = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)

    def two(**hp):
        v = keras.Variable(np.zeros(2, np.float32))
        opt = optimizers.get("nlcg-fr", 0.1, preconditioner="none", line_search="none", **hp)
        for g in (g0, g1):
            opt.apply([tf.constant(g)], [v], loss=tf.constant(1.0))
        return float(opt.diagnostics()["beta"])

    assert two() == pytest.approx((g1 @ g1) / (g0 @ g0), rel=1e-6)  # FR: 0.5 / 5
    assert two(fixed_beta=0.9) == pytest.approx(0.9) and two(fixed_beta=None) == two()
    for bad in (1.5, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="fixed_beta"):
            optimizers.get("nlcg-fr", 0.1, fixed_beta=bad)


class ReferenceMomentumBFGS:
    """v = mu v - eta P g, w += v; B: diagonal BFGS from y = g - g_prev, s = v_prev (skipped at t = 0 and when
    y.s or s.B s < eps), P = 1 / (B + eps); float64, on a flat vector."""

    def __init__(self, n, mu):
        self.mu, self.B, self.v, self.g_prev = mu, np.ones(n), np.zeros(n), np.zeros(n)
        self.applied = []

    def step(self, t, g, eta, w):
        applied = False
        if t > 0:
            y, s = g - self.g_prev, self.v
            ys, sBs = y @ s, s @ (self.B * s)
            if not (ys < EPS or sBs < EPS):
                Bs = self.B * s
                self.B = np.abs(self.B - (Bs ** 2 + EPS) / (sBs + EPS) + (y ** 2 + EPS) / (ys + EPS))
                applied = True
        P = 1.0 / (self.B + EPS)
        self.v = self.mu * self.v - eta * P * g
        self.g_prev = g
        self.applied.append(applied)
        return w + self.v, P


def test_momentum_with_nlcgs_preconditioner_follows_the_reference():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([19], [0.5, 0.25])
    opt = optimizers.get("momentum-bfgs", schedule, momentum=0.8)
    ref = ReferenceMomentumBFGS(len(flat(make_variables())), 0.8)
    spreads = []

    def step(t, g, _loss, eta, w):
        w, P = ref.step(t, g, eta, w)
        spreads.append((P.mean(), P.min(), P.max()))
        return w

    error, diags = _run(opt, step, schedule=schedule)
    assert error <= 2e-5, f"max error {error:.2e} of the weight change"
    assert any(ref.applied) and not ref.applied[0]
    assert [d["bfgs_skipped"] for d in diags] == [0.0 if a else 1.0 for a in ref.applied]
    np.testing.assert_allclose([[d["precond_mean"], d["precond_min"], d["precond_max"]] for d in diags], spreads,
                               rtol=1e-4)
    assert min(s[1] for s in spreads) < 0.9 * max(s[2] for s in spreads)  # the preconditioner really acts


def test_momentum_bfgs_first_step_is_keras_momentum_and_the_preconditioner_is_nlcgs_code():
    g = np.array([0.3, -1.0, 2.0], np.float32)
    a, b = keras.Variable(np.ones(3, np.float32)), keras.Variable(np.ones(3, np.float32))
    optimizers.get("momentum-bfgs", 0.1).apply([tf.constant(g)], [a], loss=tf.constant(0.0))
    optimizers.get("momentum", 0.1).apply([tf.constant(g)], [b], loss=tf.constant(0.0))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)  # B = 1 at t = 0: v = -eta g
    assert preconditioned.diagonal_bfgs is nlcg.diagonal_bfgs and preconditioned.spread is nlcg.spread
    with pytest.raises(ValueError, match="momentum-bfgs: momentum = 1.0 is out of range"):
        optimizers.get("momentum-bfgs", 0.1, momentum=1.0)
    assert optimizers.role("momentum-bfgs") == "method"
