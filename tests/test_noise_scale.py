"""The gradient noise scale (bench.noise_scale, bench.train's step): the estimators against a problem whose
gradient covariance is known exactly, the smoothing, the step's squared norms against an independent
computation, the same numbers however the global batch is split (1 worker x 2 micro-batches = 2 workers),
and the history and runs columns of a real run."""

import math
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import optimizers
from bench import config, models, noise_scale, results, schedule, train
from bench.distributed import World
from bench.noise_scale import Smoothed
from conftest import PYTHON, ROOT, mpirun, requires_horovod

WORKER = str(ROOT / "tests" / "mpi_train_step_worker.py")


# ---- the estimators on least squares: exact |G|^2 and tr(Sigma) -------------------------------------------


def _least_squares(n=64, d=5, seed=0):
    """Per-example gradients g_i = x_i (x_i . w - y_i) of 0.5 (x.w - y)^2 on a fixed design, at a w away
    from the optimum; the full data set's true gradient and covariance trace (population: divided by n)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + rng.normal(size=n)
    w = rng.normal(size=d)
    g = x * (x @ w - y)[:, None]
    mean = g.mean(axis=0)
    return g, float(mean @ mean), float(((g - mean) ** 2).sum(axis=1).mean())


def _draws(g, b_small, k, draws, replace, seed=1):
    """(|G_small|^2, |G_big|^2) of ``draws`` steps of k micro-batches of b_small examples, as the train step
    forms them: micro-batch means, the mean of their squared norms, the squared norm of their mean."""
    rng = np.random.default_rng(seed)
    n, b_big = len(g), b_small * k
    if replace:
        idx = rng.integers(0, n, size=(draws, b_big))
    else:  # a global batch without repetition, split into micro-batches (the harness's sampling)
        idx = np.argsort(rng.random((draws, n)), axis=1)[:, :b_big]
    micro = g[idx].reshape(draws, k, b_small, -1).mean(axis=2)
    return (micro ** 2).sum(axis=2).mean(axis=1), (micro.mean(axis=1) ** 2).sum(axis=1)


def _unbiased(values, truth, z=4.5):
    """Is the mean of ``values`` within z standard errors (their sampling spread over the draws) of ``truth``?"""
    se = values.std(ddof=1) / math.sqrt(len(values))
    return abs(values.mean() - truth) < z * se, (values.mean(), truth, se)


@pytest.mark.parametrize("b_small,k", [(1, 8), (4, 8), (8, 2)])
def test_estimators_are_unbiased_for_draws_with_replacement(b_small, k):
    g, g2_true, trace_true = _least_squares()
    sq_small, sq_big = _draws(g, b_small, k, draws=40000, replace=True)
    g2, trace = noise_scale.estimates(sq_small, sq_big, b_small, b_small * k)
    ok, why = _unbiased(g2, g2_true)
    assert ok, why
    ok, why = _unbiased(trace, trace_true)
    assert ok, why
    # the tolerance can fail: the big batch's squared norm alone is |G|^2 + tr(Sigma) / B_big
    assert not _unbiased(sq_big, g2_true)[0]


def test_estimators_without_replacement_see_the_finite_population():
    # A global batch of half the data, without repetition: tr(Sigma) comes out with the n / (n - 1) correction
    # and |G|^2 low by tr(Sigma) / (n - 1) (bench.noise_scale's docstring).
    g, g2_true, trace_true = _least_squares(n=64)
    n = len(g)
    sq_small, sq_big = _draws(g, 4, 8, draws=40000, replace=False)
    g2, trace = noise_scale.estimates(sq_small, sq_big, 4, 32)
    ok, why = _unbiased(trace, trace_true * n / (n - 1))
    assert ok, why
    ok, why = _unbiased(g2, g2_true - trace_true / (n - 1))
    assert ok, why


def test_a_gradient_shared_by_every_example_cancels_in_the_trace_only():
    # The L2 term's gradient is the same in every micro-batch: tr(Sigma) is the data term's, draw by draw, and
    # |G|^2 becomes that of the total gradient (what docs/architecture.md says the columns measure).
    g, g2_true, _ = _least_squares()
    shared = np.full(g.shape[1], 0.7)
    data = _draws(g, 4, 8, draws=40000, replace=True)
    total = _draws(g + shared, 4, 8, draws=40000, replace=True)
    (_, tr_d), (g2_t, tr_t) = noise_scale.estimates(*data, 4, 32), noise_scale.estimates(*total, 4, 32)
    np.testing.assert_allclose(tr_t, tr_d, rtol=1e-9, atol=1e-9)
    mean = g.mean(axis=0)
    ok, why = _unbiased(g2_t, float((mean + shared) @ (mean + shared)))
    assert ok, why
    assert not _unbiased(g2_t, g2_true)[0]


def test_estimates_solve_the_two_batch_equations():
    # exact inputs E|G_B|^2 = |G|^2 + tr / B give back |G|^2 and tr exactly, on arrays too
    g2, tr = np.array([2.0, 0.5]), np.array([30.0, 100.0])
    got = noise_scale.estimates(g2 + tr / 16, g2 + tr / 256, 16, 256)
    np.testing.assert_allclose(got, [g2, tr], rtol=1e-12)
    assert all(math.isnan(v) for v in noise_scale.estimates(1.0, 1.0, 32, 32))  # one batch size: no estimate


# ---- smoothing -------------------------------------------------------------------------------------------


def test_smoothed_is_the_ratio_of_bias_corrected_averages():
    rng = np.random.default_rng(2)
    rows = [{"grad_sq_small": float(s), "grad_sq_big": float(b)} for s, b in rng.uniform(1, 3, size=(12, 2))]
    s = Smoothed(decay=0.8)
    got = [s.log(dict(r), 8, 64) for r in rows]
    g2s, trs = noise_scale.estimates([r["grad_sq_small"] for r in rows], [r["grad_sq_big"] for r in rows], 8, 64)
    for n in range(1, 13):  # explicit weighted sums: weights 0.2 * 0.8^(n - t), normalised by 1 - 0.8^n
        w = 0.2 * 0.8 ** np.arange(n - 1, -1, -1) / (1 - 0.8 ** n)
        g2, tr = w @ g2s[:n], w @ trs[:n]
        assert got[n - 1] == (pytest.approx(tr / g2, rel=1e-12) if g2 > 0 else pytest.approx(math.nan, nan_ok=True))
    assert s.g2 == pytest.approx(w @ g2s) and s.trace == pytest.approx(w @ trs)


def test_smoothed_constant_input_is_returned_unbiased_and_one_batch_size_is_nan():
    s = Smoothed()
    for _ in range(3):
        s.update(2.0 + 30 / 16, 2.0 + 30 / 256, 16, 256)
    assert s.g2 == pytest.approx(2.0) and s.trace == pytest.approx(30.0) and s.value == pytest.approx(15.0)
    one = Smoothed()
    assert math.isnan(one.update(1.0, 1.0, 64, 64)) and math.isnan(one.value)
    before = s.value
    assert s.update(math.nan, math.inf, 16, 256) == before  # a diverging step leaves the averages alone
    assert math.isnan(noise_scale.simple_noise_scale(-1.0, 5.0))  # no positive signal: no noise scale


def test_replay_of_a_history_continues_exactly():
    s, history = Smoothed(), []
    rng = np.random.default_rng(4)
    for step, (a, b) in enumerate(rng.uniform(1, 2, size=(7, 2))):
        history.append({"step": step, "grad_sq_small": a + 1, "grad_sq_big": b})
        s.log(history[-1], 4, 32)
        history.append({"step": step, "top1": 0.5})  # an evaluation row: skipped
    again = Smoothed.replay(history)
    assert (again.g2, again.trace, again.value) == (s.g2, s.trace, s.value)
    assert history[-2]["noise_scale"] == s.value and history[-2]["b_small"] == 4 and history[-2]["b_big"] == 32


# ---- the train step's squared norms ----------------------------------------------------------------------


def _model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="tanh"),
                             keras.layers.Flatten(), keras.layers.Dense(5)])


def test_train_step_squared_norms_match_per_micro_batch_gradients():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(24, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 5, 24).astype(np.int32)
    wd, micro, accumulation = 1e-2, 6, 4
    model = _model(0)
    # reference, before the step changes the weights: each micro-batch's gradient of CE + L2, by Keras' loss
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    decayed = models.decayed_weights(model)
    per_micro = []
    for a in range(accumulation):
        with tf.GradientTape() as tape:
            sl = slice(a * micro, (a + 1) * micro)
            loss = ce(y[sl], model(x[sl], training=True))
            loss += 0.5 * wd * sum(tf.reduce_sum(w ** 2) for w in decayed)
        per_micro.append(np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, model.trainable_variables)]))
    per_micro = np.array(per_micro, dtype=np.float64)
    want_small, want_big = (per_micro ** 2).sum(axis=1).mean(), (per_micro.mean(axis=0) ** 2).sum()

    lr = schedule.WarmupStepDecay(peak=0.1, init=0.1, warmup_steps=0, boundaries=[])
    opt = optimizers.get("momentum", lr)
    cfg = config.make({"weight_decay": wd, "optimizer": "momentum"})
    step = train.make_train_step(model, opt, lr, cfg, World(), accumulation, num_classes=5)
    _, _, diag = step(iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(micro)))
    assert float(diag["grad_sq_small"]) == pytest.approx(want_small, rel=1e-5)
    assert float(diag["grad_sq_big"]) == pytest.approx(want_big, rel=1e-5)
    assert want_small > want_big * 1.05  # micro-batches differ: the two batch sizes measure different things


@pytest.mark.mpi
@requires_horovod
def test_two_workers_measure_what_one_worker_with_accumulation_measures(tmp_path):
    # The same global batch of 32 as 2 micro-batches of 16: on one worker (accumulation 2) and on 2 workers.
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    procs = [subprocess.Popen([PYTHON, WORKER, str(one)], cwd=ROOT),
             subprocess.Popen(mpirun(2, WORKER, str(two)), cwd=ROOT)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    with np.load(one) as a, np.load(two) as b:
        for key in ("grad_sq_small", "grad_sq_big"):
            # float32 sums in another order, amplified over 3 steps by the optimizer (as test_train_step)
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4)
        g2, trace = noise_scale.estimates(a["grad_sq_small"], a["grad_sq_big"], 16, 32)
        assert np.all(a["grad_sq_small"] > a["grad_sq_big"]) and np.all(np.isfinite(g2 + trace))


# ---- the history and runs columns of a run -----------------------------------------------------------------


@pytest.mark.slow
def test_a_run_logs_the_noise_scale_and_old_folders_still_load(tmp_path):
    folder = tmp_path / "s"
    old = {"run_id": "old-run", "config_id": "c", "status": "complete", "optimizer": "momentum", "top1": 0.5}
    results.append_run(folder, old, [{"step": 1, "epoch": 0.5, "loss": 2.0, "lr": 0.1}])
    cfg = config.make({"dataset": "synthetic", "synthetic_image_size": 8, "synthetic_train_size": 256,
                       "synthetic_test_size": 64, "width": 4, "global_batch": 64, "per_worker_batch": 16,
                       "steps": 6, "log_every_steps": 2, "eval_every_epochs": 0, "augment": False,
                       "output_dir": str(tmp_path), "sweep": "s"})
    row = train.run(cfg, World())
    runs, hist = results.load_runs(folder), results.load_history(folder)
    mine = hist[(hist.run_id == row["run_id"]) & hist.loss.notna()]
    assert list(mine.step) == [1, 2, 4, 6]
    assert set(mine.b_small) == {16} and set(mine.b_big) == {64}
    assert (mine.grad_sq_small > mine.grad_sq_big).all()
    want = Smoothed.replay(mine.to_dict("records"))
    assert mine.noise_scale.iloc[-1] == pytest.approx(want.value)
    by_id = runs.set_index("run_id")
    assert by_id.noise_scale[row["run_id"]] == pytest.approx(want.value)
    assert (mine.noise_scale > 0).all()  # the synthetic data's noise is resolved from the first logged step
    assert math.isnan(by_id.noise_scale["old-run"])  # written before the column existed
    assert hist[hist.run_id == "old-run"].noise_scale.isna().all()
