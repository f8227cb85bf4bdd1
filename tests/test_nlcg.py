"""optimizers/nlcg.py against docs/nlcg.md sections 2 and 3.

The golden test checks the optimizer against ``ReferenceNLCG``, a NumPy float64 re-derivation of the spec
written here on one flat parameter vector (so "global dot product" is just ``@``), sharing no code with the
optimizer. Both are fed the same float32 gradients and losses, computed in NumPy at the optimizer's weights.
"""

from __future__ import annotations

import json
import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import optimizers
from conftest import PYTHON, ROOT, requires_horovod
from optimizers import nlcg

EPS = 1e-8
MPI_WORKER = ROOT / "tests" / "mpi_nlcg_worker.py"
SHAPES = [(4, 3), (2, 3), (3,)]  # softmax regression split over three variables of different shapes
MODES = ["step", "online", "none", "paper"]
KERAS_COMMON = {
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
}


# ----------------------------------------------------------------------------- the reference (spec s2, s3)
def reference_table(ratio: float, alpha: float, mode: str, tau: float = 1.0) -> tuple[float, float]:
    """s3, row by row. Returns (alpha_new, r)."""
    if mode == "none":
        return alpha, 0.0
    if mode == "paper":
        if ratio > 1 + 0.02 * tau:
            return max(alpha * 0.975, 1e-4), 0.0
        if ratio < 1 + 0.01 * tau:
            return min(1.0, alpha * 1.025), 0.0
        return alpha, 0.0
    if ratio < 1 + 0.01 * tau:
        return min(1.0, alpha * (1.05 if mode == "step" else 1.02)), 0.0
    for upper, factor, r in [
        (0.025, 1.0, 0.1),
        (0.05, 0.975, 0.1),
        (0.075, 0.95, 0.2),
        (0.10, 0.9, 0.3),
        (0.125, 0.8, 0.5),
        (0.15, 0.7, 0.7),
    ]:
        if ratio <= 1 + upper * tau:
            return max(alpha * factor, 1e-4), r
    return max(alpha * 0.5, 1e-4), 0.9


class ReferenceNLCG:
    """docs/nlcg.md s2 on a flat float64 vector; ``step`` records (alpha, r, beta, bfgs_applied) per step."""

    def __init__(self, w0, rule, preconditioner, line_search, period=5, tau=1.0, fixed_beta=None):
        self.w = np.array(w0, np.float64)
        self.fixed_beta = fixed_beta
        self.rule, self.preconditioner, self.line_search, self.period, self.tau = (
            rule,
            preconditioner,
            line_search,
            period,
            tau,
        )
        self.alpha = 1.0
        self.history = []

    def step(self, t, g, loss, eta):
        r, bfgs_applied = 0.0, False
        if t == 0:
            self.B = np.ones_like(g)
            z = -g
            beta = 0.0
            self.d = z
            self.rho = g @ g
            self.ema = self.ema_ref = loss
            u = eta * self.alpha * self.d
        else:
            P = np.ones_like(g)
            if self.preconditioner == "bfgs":  # 1. diagonal BFGS, s = the previous applied step
                y, s = g - self.g_prev, self.u_prev
                ys, sBs = y @ s, s @ (self.B * s)
                if not (ys < EPS or sBs < EPS):
                    Bs = self.B * s
                    self.B = np.abs(self.B - (Bs**2 + EPS) / (sBs + EPS) + (y**2 + EPS) / (ys + EPS))
                    bfgs_applied = True
                P = 1.0 / (self.B + EPS)
            z = -P * g  # 2. direction
            rho_new = g @ (P * g)
            numerator = rho_new if self.rule == "fr" else rho_new + g @ self.z_prev
            beta = min(max(numerator / (self.rho + EPS), 0.0), 1.0) if self.fixed_beta is None else self.fixed_beta
            self.d = z + beta * self.d
            self.rho = rho_new
            self.ema = 0.7 * self.ema + 0.3 * loss  # 3. loss average
            if self.line_search == "online":  # 4. line search
                self.alpha, r = reference_table(loss / self.ema, self.alpha, "online", self.tau)
            elif self.line_search in ("step", "paper") and t % self.period == 0:
                ratio = self.ema / self.ema_ref
                self.alpha, r = reference_table(ratio, self.alpha, self.line_search, self.tau)
                self.ema_ref = self.ema
            u = (1 - r) * eta * self.alpha * self.d - r * self.u_prev  # 5. step
        self.w = self.w + u
        self.u_prev, self.g_prev, self.z_prev = u, g, z
        self.history.append((self.alpha, r, beta, bfgs_applied))
        return u


# ----------------------------------------------------------------------------- a small noisy problem
def make_problem(seed=0, n=512):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    labels = np.argmax(x @ (2.0 * rng.normal(size=(6, 3))) + rng.gumbel(size=(n, 3)), axis=1)
    return x, labels


def softmax_loss_and_grads(weights, x, labels):
    """Mean cross-entropy of logits = x[:, :4] W1 + x[:, 4:] W2 + b, and its gradients, in float64."""
    w1, w2, b = (np.asarray(w, np.float64) for w in weights)
    logits = x[:, :4] @ w1 + x[:, 4:] @ w2 + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = -np.mean(np.log(p[rows, labels]))
    dlogits = p
    dlogits[rows, labels] -= 1.0
    dlogits /= len(labels)
    return loss, [x[:, :4].T @ dlogits, x[:, 4:].T @ dlogits, dlogits.sum(axis=0)]


def make_variables(seed=1):
    rng = np.random.default_rng(seed)
    inits = [(0.1 * rng.normal(size=s)).astype(np.float32) for s in SHAPES]
    return [keras.Variable(w, name=f"w{i}") for i, w in enumerate(inits)]


def flat(arrays):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def state(opt, slot):
    """The optimizer variables of one slot (e.g. "B"), in model-variable order."""
    return [v for v in opt.variables if v.path.endswith(f"_{slot}")]


def batches(steps, batch=16, seed=2, n=512):
    rng = np.random.default_rng(seed)
    return [rng.choice(n, batch, replace=False) for _ in range(steps)]


# ----------------------------------------------------------------------------- golden test
@pytest.mark.parametrize("preconditioner", ["bfgs", "none"])
@pytest.mark.parametrize("line_search", MODES)
@pytest.mark.parametrize("rule", ["fr", "pr"])
def test_matches_numpy_reference(rule, line_search, preconditioner):
    """40 mini-batch steps: weights and alpha follow the float64 reference; the line search really acts.

    The rate (2.0, halved after step 19) is large enough that the loss rises at some checks, so alpha falls
    and backtracks happen; the halving makes s = u_prev differ from eta_t alpha d_prev.
    Tolerance: float32 has unit roundoff 6e-8; a step chains about ten roundings per element and beta <= 1
    keeps d from amplifying them, so 40 steps accumulate at most ~40 x 10 x 6e-8 = 2.4e-5 of the total
    weight change (observed: about 2e-6). A wrong formula gives errors of order 1e-2 or more.
    """
    x, labels = make_problem()
    variables = make_variables()
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([19], [2.0, 1.0])
    opt = optimizers.get(f"nlcg-{rule}", schedule, preconditioner=preconditioner, line_search=line_search)
    ref = ReferenceNLCG(flat(variables), rule, preconditioner, line_search)
    w0 = ref.w.copy()
    errors, alphas = [], []
    for t, idx in enumerate(batches(40)):
        loss, grads = softmax_loss_and_grads([v.numpy() for v in variables], x[idx], labels[idx])
        grads32, loss32 = [g.astype(np.float32) for g in grads], np.float32(loss)
        opt.apply([tf.constant(g) for g in grads32], variables, loss=tf.constant(loss32))
        ref.step(t, flat(grads32), float(loss32), float(schedule(t)))
        errors.append(np.max(np.abs(flat(variables) - ref.w)))
        alphas.append((float(opt.diagnostics()["alpha"]), ref.alpha))
    scale = np.max(np.abs(ref.w - w0))
    assert max(errors) <= 2e-5 * scale, f"max error {max(errors) / scale:.2e} of the weight change"
    np.testing.assert_allclose(*np.array(alphas).T, rtol=1e-5)
    alpha, r, _, bfgs_applied = (np.array(col) for col in zip(*ref.history, strict=True))
    if line_search in ("step", "online"):
        assert alpha.min() < 1.0 and (r > 0).any(), "no alpha decrease or backtrack: raise the rate"
    elif line_search == "paper":
        assert alpha.min() < 1.0 and (r == 0).all()
    else:
        assert (alpha == 1.0).all() and (r == 0).all()
    if preconditioner == "bfgs":
        assert bfgs_applied.any()


# ----------------------------------------------------------------------------- the line-search table
def _table(ratio, alpha, mode, tau=1.0):
    a, r = nlcg.line_search_table(tf.constant(ratio, tf.float32), tf.constant(alpha, tf.float32), mode, tau)
    return float(a), float(r)


ROWS = [(None, 0.0), (1.0, 0.1), (0.975, 0.1), (0.95, 0.2), (0.9, 0.3), (0.8, 0.5), (0.7, 0.7), (0.5, 0.9)]
BOUNDS = [1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]  # row boundaries, in units of 0.01 tau above 1


def _boundary_cases():
    cases = []
    for mode, increase in (("step", 1.05), ("online", 1.02)):
        for tau in (1.0, 2.0):
            for k, bound in enumerate(BOUNDS):
                for side, row in ((-1e-4, k), (1e-4, k + 1)):  # just below / just above bound k
                    factor, r = ROWS[row]
                    ratio = 1 + 0.01 * tau * bound + side
                    cases.append((mode, tau, ratio, 0.5, 0.5 * (factor or increase), r))
    return cases


@pytest.mark.parametrize(("mode", "tau", "ratio", "alpha", "alpha_new", "r"), _boundary_cases())
def test_table_rows(mode, tau, ratio, alpha, alpha_new, r):
    assert _table(ratio, alpha, mode, tau) == pytest.approx((alpha_new, r), rel=1e-6)


@pytest.mark.parametrize(
    ("mode", "tau", "ratio", "alpha", "expected"),
    [
        ("step", 1.0, 1.01, 0.5, (0.5, 0.1)),  # exactly at 1 + 0.01 tau: the second row [decision]
        ("step", 1.0, 1.03, 0.5, (0.4875, 0.1)),
        ("step", 1.0, 0.5, 0.99, (1.0, 0.0)),  # increase capped at 1.0
        ("online", 1.0, 0.5, 0.99, (1.0, 0.0)),
        ("step", 1.0, 2.0, 1.5e-4, (1e-4, 0.9)),  # decrease floored at 1e-4
        ("online", 1.0, 1.13, 1.2e-4, (1e-4, 0.7)),
        ("paper", 1.0, 1.0099, 0.5, (0.5125, 0.0)),  # < 1.01: +2.5%
        ("paper", 1.0, 1.0101, 0.5, (0.5, 0.0)),  # between: unchanged
        ("paper", 1.0, 1.0199, 0.5, (0.5, 0.0)),
        ("paper", 1.0, 1.0201, 0.5, (0.4875, 0.0)),  # > 1.02: -2.5%, never a backtrack
        ("paper", 1.0, 3.0, 0.5, (0.4875, 0.0)),
        ("paper", 2.0, 1.0201, 0.5, (0.5, 0.0)),  # tau scales the paper thresholds too [decision]
        ("paper", 2.0, 1.0401, 0.5, (0.4875, 0.0)),
        ("paper", 1.0, 0.5, 0.99, (1.0, 0.0)),
        ("paper", 1.0, 1.5, 1.01e-4, (1e-4, 0.0)),
        ("none", 1.0, 5.0, 0.7, (0.7, 0.0)),
    ],
)
def test_table_special_cases(mode, tau, ratio, alpha, expected):
    assert _table(ratio, alpha, mode, tau) == pytest.approx(expected, rel=1e-6)


def test_table_is_vectorised():
    ratios = np.array([0.9, 1.005, 1.02, 1.04, 1.06, 1.09, 1.11, 1.14, 1.2], np.float32)
    alpha, r = nlcg.line_search_table(ratios, 0.5, "step")
    expected = [reference_table(float(q), 0.5, "step") for q in ratios]
    np.testing.assert_allclose(np.stack([alpha, r], axis=1), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- single steps by hand
def _two_steps(rule, g0, g1, lr=0.1, preconditioner="none"):
    w = keras.Variable(np.zeros(4, np.float32), name="w")
    opt = optimizers.get(f"nlcg-{rule}", lr, preconditioner=preconditioner, line_search="none")
    opt.apply([tf.constant(g0, tf.float32)], [w], loss=1.0)
    w1 = w.numpy().copy()
    opt.apply([tf.constant(g1, tf.float32)], [w], loss=1.0)
    return opt, w1, w.numpy() - w1


@pytest.mark.parametrize("preconditioner", ["bfgs", "none"])
@pytest.mark.parametrize("line_search", MODES)
@pytest.mark.parametrize("rule", ["fr", "pr"])
def test_first_step_is_a_gradient_step(rule, line_search, preconditioner):
    variables = make_variables()
    w0 = [v.numpy() for v in variables]
    grads = [np.random.default_rng(3).normal(size=s).astype(np.float32) for s in SHAPES]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.3, 0.01])  # eta_0 = 0.3
    opt = optimizers.get(f"nlcg-{rule}", schedule, preconditioner=preconditioner, line_search=line_search)
    opt.apply(grads, variables, loss=2.5)
    for v, w, g in zip(variables, w0, grads, strict=True):
        np.testing.assert_allclose(v.numpy(), w - np.float32(0.3) * g, rtol=1e-7, atol=1e-8)
    assert int(opt.iterations) == 1
    assert float(opt.diagnostics()["beta"]) == 0.0


def test_bfgs_update_by_hand():
    """g0 = 1, g1 = 0.5, lr 0.1: s = -0.1, y = -0.5, sBs = 0.04, ys = 0.2 on 4 elements, so
    B = |1 - (0.01 + eps)/(0.04 + eps) + (0.25 + eps)/(0.2 + eps)| = 2.0 and P = 0.5."""
    opt, _, du = _two_steps("fr", np.ones(4), 0.5 * np.ones(4), preconditioner="bfgs")
    np.testing.assert_allclose(state(opt, "B")[0].numpy(), 2.0, rtol=1e-6)
    assert float(opt.diagnostics()["bfgs_skipped"]) == 0.0
    assert float(opt.diagnostics()["precond_mean"]) == pytest.approx(0.5, rel=1e-6)
    # z = -P g1 = -0.25, rho_new = 0.5, rho = 4, beta = 0.125, d = -0.25 - 0.125 = -0.375, u = 0.1 d
    np.testing.assert_allclose(du, -0.0375, rtol=1e-6)


def test_bfgs_update_takes_the_absolute_value():
    """With B = (1, 1e-3), s = (2e-4, 0), y = (1, 0): the second element's update is
    1e-3 - eps / (4e-8 + eps) + eps / (2e-4 + eps) = -0.19895 before the absolute value."""
    w = keras.Variable(np.zeros(2, np.float32), name="w")
    opt = optimizers.get("nlcg-fr", 1.0, line_search="none")
    g0 = np.array([-2e-4, 0.0], np.float32)
    opt.apply([g0], [w], loss=1.0)  # u_0 = -g_0 = s
    state(opt, "B")[0].assign(np.array([1.0, 1e-3], np.float32))
    opt.apply([g0 + np.array([1.0, 0.0], np.float32)], [w], loss=1.0)
    s, y, B = np.array([2e-4, 0.0]), np.array([1.0, 0.0]), np.array([1.0, 1e-3])
    ys, sBs = y @ s, s @ (B * s)
    expected = np.abs(B - ((B * s) ** 2 + EPS) / (sBs + EPS) + (y**2 + EPS) / (ys + EPS))
    assert expected[1] == pytest.approx(0.19895, rel=1e-3)
    np.testing.assert_allclose(state(opt, "B")[0].numpy(), expected, rtol=1e-4)


@pytest.mark.parametrize(
    ("g0", "g1", "lr", "why"),
    [
        (np.ones(4), np.ones(4), 0.1, "y = 0, so ys = 0 < eps"),
        (np.ones(4), 2.0 * np.ones(4), 0.1, "ys = -0.4 < eps (negative curvature)"),
        (1e-3 * np.ones(4), -10.0 * np.ones(4), 1e-5, "sBs = 4e-16 < eps while ys = 4e-7 >= eps"),
    ],
)
def test_bfgs_skip_leaves_B_unchanged(g0, g1, lr, why):
    opt, _, _ = _two_steps("pr", g0, g1, lr=lr, preconditioner="bfgs")
    np.testing.assert_array_equal(state(opt, "B")[0].numpy(), np.ones(4), err_msg=why)
    assert float(opt.diagnostics()["bfgs_skipped"]) == 1.0


@pytest.mark.parametrize(
    ("rule", "factor", "beta"),
    [
        ("fr", 2.0, 1.0),  # rho_new / rho = 16 / 4: capped at 1
        ("fr", 0.5, 0.25),
        ("pr", 0.5, 0.0),  # (1 - 2) / 4 < 0: clipped at 0 (PR+)
        ("pr", 1.5, 0.75),  # (9 - 6) / 4
        ("pr", 2.0, 1.0),  # (16 - 8) / 4 = 2: capped at 1
    ],
)
def test_beta_is_clipped_to_0_1(rule, factor, beta):
    g0 = np.ones(4)
    opt, _, du = _two_steps(rule, g0, factor * g0)
    assert float(opt.diagnostics()["beta"]) == pytest.approx(beta, rel=1e-6)
    np.testing.assert_allclose(du, -0.1 * (factor + beta) * g0, rtol=1e-6)  # u = lr (-g1 + beta d0), d0 = -g0


@pytest.mark.parametrize(
    ("rule", "preconditioner", "buffers"),
    [("pr", "bfgs", 5), ("fr", "bfgs", 4), ("pr", "none", 4), ("fr", "none", 3)],
)
def test_state_buffers(rule, preconditioner, buffers):
    variables = make_variables()
    opt = optimizers.get(f"nlcg-{rule}", 0.1, preconditioner=preconditioner)
    opt.build(variables)
    for v in variables:
        assert sum(tuple(o.shape) == tuple(v.shape) for o in opt.variables) == buffers
    scalars = [o for o in opt.variables if tuple(o.shape) == ()]
    # iteration, learning_rate, rho, alpha, ema, ema_ref and 7 diagnostics
    assert len(scalars) == 13
    n = sum(int(np.prod(s)) for s in SHAPES)
    assert sum(int(np.prod(o.shape)) for o in opt.variables) == buffers * n + 13


def test_beta_zero_no_preconditioner_no_line_search_is_sgd(monkeypatch):
    """With beta forced to 0, P = 1 and alpha = 1, u_t = -eta g_t: bit-for-bit Keras SGD."""
    x, labels = make_problem()

    def run(opt, patch_beta):
        with monkeypatch.context() as m:
            if patch_beta:
                m.setattr(nlcg, "conjugate_beta", lambda *args: tf.constant(0.0))
            variables = make_variables()
            for idx in batches(10):
                loss, grads = softmax_loss_and_grads([v.numpy() for v in variables], x[idx], labels[idx])
                opt.apply([tf.constant(g, tf.float32) for g in grads], variables, loss=np.float32(loss))
            return flat(variables)

    sgd = run(optimizers.get("sgd", 0.5), False)
    nlcg_beta0 = run(optimizers.get("nlcg-pr", 0.5, preconditioner="none", line_search="none"), True)
    np.testing.assert_array_equal(nlcg_beta0, sgd)
    nlcg_free = run(optimizers.get("nlcg-pr", 0.5, preconditioner="none", line_search="none"), False)
    assert np.max(np.abs(nlcg_free - sgd)) > 1e-3  # beta matters, so the patch above was doing something


@pytest.mark.parametrize("rule", ["fr", "pr"])
def test_converges_on_an_ill_conditioned_quadratic(rule):
    """f(w) = 0.5 sum a_i w_i^2 with curvatures 0.1 .. 10 over two variables, exact gradients."""
    a = [np.geomspace(0.1, 10.0, 6).reshape(2, 3).astype(np.float32), np.array([0.3, 3.0], np.float32)]
    variables = [keras.Variable(np.ones_like(ai), name=f"q{i}") for i, ai in enumerate(a)]
    opt = optimizers.get(f"nlcg-{rule}", 0.05)

    def f():
        return sum(0.5 * float(np.sum(ai * v.numpy() ** 2)) for ai, v in zip(a, variables, strict=True))

    f0 = f()
    for _ in range(150):
        grads = [ai * v.numpy() for ai, v in zip(a, variables, strict=True)]
        opt.apply(grads, variables, loss=f())
    assert f() < 1e-6 * f0


# ----------------------------------------------------------------------------- state, graphs, registry
def _softmax_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(3)])


def _keras_step(model, opt, xb, yb):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, model(xb), from_logits=True))
    opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables, loss=loss)


def test_checkpoint_round_trip(tmp_path):
    """Save after 7 steps (past the t = 5 check), restore into a fresh model and optimizer: the next 8 steps
    (through the t = 10 check) are identical to the uninterrupted run."""
    x, labels = make_problem()
    x = x.astype(np.float32)
    steps = batches(15)

    def fresh():
        model = _softmax_model()
        opt = optimizers.get("nlcg-pr", 3.0)
        opt.build(model.trainable_variables)
        return model, opt

    model, opt = fresh()
    for idx in steps[:7]:
        _keras_step(model, opt, x[idx], labels[idx])
    assert float(opt.diagnostics()["alpha"]) != 1.0  # the line search has acted, so alpha must be restored
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ckpt"))
    for idx in steps[7:]:
        _keras_step(model, opt, x[idx], labels[idx])

    model2, opt2 = fresh()
    tf.train.Checkpoint(model=model2, optimizer=opt2).restore(path).assert_consumed()
    assert int(opt2.iterations) == 7
    for idx in steps[7:]:
        _keras_step(model2, opt2, x[idx], labels[idx])
    for a, b in zip(model.variables + opt.variables, model2.variables + opt2.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_tf_function_matches_eager():
    """A jit-free tf.function around apply gives the eager result; iterations, schedule advance in-graph."""
    rng = np.random.default_rng(4)
    grads = [[rng.normal(size=s).astype(np.float32) for s in SHAPES] for _ in range(12)]
    losses = np.float32(1.0 + 0.05 * np.arange(12) * rng.uniform(size=12))  # rising: the line search acts
    schedule = keras.optimizers.schedules.ExponentialDecay(0.2, decay_steps=4, decay_rate=0.5)

    def run(use_function):
        variables = make_variables()
        opt = optimizers.get("nlcg-pr", schedule)
        opt.build(variables)
        step = lambda g, loss: opt.apply(g, variables, loss=loss)  # noqa: E731
        if use_function:
            step = tf.function(step, jit_compile=False)
        for g, loss in zip(grads, losses, strict=True):
            step([tf.constant(gi) for gi in g], tf.constant(loss))
        return variables, opt

    (v_eager, o_eager), (v_graph, o_graph) = run(False), run(True)
    assert int(o_graph.iterations) == 12
    assert float(o_eager.diagnostics()["alpha"]) < 1.0
    for a, b in zip(v_eager + o_eager.variables, v_graph + o_graph.variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)


def test_build_before_apply_and_one_iteration_per_step():
    variables = make_variables()
    opt = optimizers.get("nlcg-fr", 0.1)
    opt.build(variables)  # as the harness does before broadcasting opt.variables
    n_vars = len(opt.variables)
    grads = [np.ones(s, np.float32) for s in SHAPES]
    for k in range(1, 4):
        opt.apply(grads, loss=1.0) if k == 2 else opt.apply(grads, variables, loss=1.0)
        assert int(opt.iterations) == k
    assert len(opt.variables) == n_vars  # apply built nothing new


def test_diagnostics():
    x, labels = make_problem()
    variables = make_variables()
    opt = optimizers.get("nlcg-pr", 2.0)
    with pytest.raises(ValueError, match="built"):
        opt.diagnostics()
    for idx in batches(6):
        loss, grads = softmax_loss_and_grads([v.numpy() for v in variables], x[idx], labels[idx])
        opt.apply([g.astype(np.float32) for g in grads], variables, loss=np.float32(loss))
    diag = opt.diagnostics()
    assert set(diag) == {
        "beta",
        "alpha",
        "backtrack",
        "cos_neg_g_d",
        "bfgs_skipped",
        "precond_mean",
        "precond_min",
        "precond_max",
    }
    assert all(np.isfinite(float(v)) and np.ndim(v) == 0 for v in diag.values())
    assert -1.0 <= float(diag["cos_neg_g_d"]) <= 1.0
    assert 0.0 < float(diag["precond_min"]) <= float(diag["precond_mean"]) <= float(diag["precond_max"])


@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        ("nlcg-fr", {"preconditioner": "diag"}, "valid: bfgs, none"),
        ("nlcg-pr", {"line_search": "armijo"}, "valid: step, online, none, paper"),
        ("nlcg-fr", {"line_search_threshold": 0.0}, "valid: a number > 0"),
        ("nlcg-fr", {"line_search_threshold": -1}, "valid: a number > 0"),
        ("nlcg-fr", {"line_search_period": 0}, "valid: an integer >= 1"),
        ("nlcg-fr", {"line_search_period": 2.5}, "valid: an integer >= 1"),
        ("nlcg-fr", {"weight_decay": 1e-4}, "weight_decay"),
        ("nlcg-fr", {"rule": "pr"}, "valid: .*line_search"),  # the registry name fixes the rule
        ("nlcg-pr", {"momentum": 0.9}, "valid: .*preconditioner"),
    ],
)
def test_bad_hyperparameters_raise(name, hparams, match):
    with pytest.raises(ValueError, match=match):
        optimizers.get(name, 0.1, **hparams)


def test_bad_rule_and_missing_loss_raise():
    with pytest.raises(ValueError, match="valid: fr, pr"):
        nlcg.NLCG(0.1, rule="hs")
    with pytest.raises(ValueError, match="loss"):
        w = keras.Variable(np.ones(3, np.float32))
        optimizers.get("nlcg-fr", 0.1).apply([np.ones(3, np.float32)], [w])


def test_registry_and_config_round_trip():
    assert (
        optimizers.valid_hparams("nlcg-fr")
        == {"preconditioner", "line_search", "line_search_period", "line_search_threshold", "fixed_beta"}
        | KERAS_COMMON
    )
    assert optimizers.valid_hparams("nlcg-pr") == optimizers.valid_hparams("nlcg-fr")
    for rule in ("fr", "pr"):
        opt = optimizers.get(f"nlcg-{rule}", 0.1)
        assert isinstance(opt, nlcg.NLCG) and isinstance(opt, keras.optimizers.Optimizer)
        config = opt.get_config()
        assert {
            k: config[k]
            for k in ("rule", "preconditioner", "line_search", "line_search_period", "line_search_threshold")
        } == {
            "rule": rule,
            "preconditioner": "bfgs",
            "line_search": "step",
            "line_search_period": 5,
            "line_search_threshold": 1.0,
        }
        assert nlcg.NLCG.from_config(config).get_config() == config


def test_keras_clipping_and_weight_ema():
    """global_clipnorm acts on g before the step; use_ema keeps Keras's moving average of the weights."""
    w = keras.Variable(np.zeros(4, np.float32), name="w")
    opt = optimizers.get("nlcg-fr", 0.1, global_clipnorm=1.0, use_ema=True, ema_momentum=0.5)
    opt.apply([np.full(4, 3.0, np.float32)], [w], loss=1.0)  # |g| = 6, clipped to 1: g = 0.5
    w1 = w.numpy().copy()
    np.testing.assert_allclose(w1, -0.05, rtol=1e-6)
    opt.apply([np.full(4, 3.0, np.float32)], [w], loss=1.0)
    w2 = w.numpy().copy()
    opt.finalize_variable_values([w])  # average: w1 at the first step, then 0.5 w1 + 0.5 w2
    np.testing.assert_allclose(w.numpy(), 0.5 * w1 + 0.5 * w2, rtol=1e-6)


# ----------------------------------------------------------------------------- Horovod
@pytest.mark.mpi
@requires_horovod
def test_two_horovod_workers_keep_identical_state(tmp_path):
    """mpirun -np 2 tests/mpi_nlcg_worker.py: different initial weights and different data on each rank;
    after the broadcast and 12 allreduced NLCG-PR steps, weights and optimizer state agree bit for bit, and
    match one process on the union of the data. Tolerance for the latter: the two-rank average of half-batch
    means and the one-process mean differ by float32 reassociation (~1e-7), amplified over 12 steps through
    the BFGS and line-search arithmetic; 1e-4 of the total weight change (observed ~2e-6)."""
    out = tmp_path / "result.json"
    env = {
        **os.environ,
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    cmd = [
        "mpirun",
        "-np",
        "2",
        "--oversubscribe",
        "--bind-to",
        "none",
        "-x",
        "OMPI_ALLOW_RUN_AS_ROOT=1",
        "-x",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
        "-x",
        "TF_CPP_MIN_LOG_LEVEL=2",
        PYTHON,
        str(MPI_WORKER),
        str(out),
    ]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["size"] == 2 and r["iterations"] == 12
    assert r["initial_weight_spread"] > 0.1  # the ranks really started apart: the broadcast mattered
    assert r["first_local_loss_spread"] > 1e-3  # the ranks really saw different data: the allreduce mattered
    assert r["weight_spread"] == 0.0 and r["state_spread"] == 0.0
    assert min(r["alphas"]) < 1.0 and max(r["backtracks"]) > 0.0  # the line-search state was exercised
    assert r["single_process_max_abs_diff"] <= 1e-4 * r["total_weight_change"]
    assert r["single_process_alpha"] == pytest.approx(r["alphas"][-1], rel=1e-6)
