"""Mixed precision and XLA in the train step (issue 20): float32 weights and optimizer state under every
policy, the loss scale kept out of the loss the optimizer and the logs see, skipped steps under float16,
the run identity, the config check, XLA's step against the plain one, and NLCG's update under bfloat16
against its float32 update on the fidelity tests' problem (tests/test_nlcg.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_nlcg import ReferenceNLCG, batches, flat, make_problem

import optimizers
from bench import config, models, schedule, train
from bench.config import ConfigError, RunConfig
from bench.distributed import World

MIXED = ["mixed_bfloat16", "mixed_float16"]


def _data(n=48, seed=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)


def _setup(precision, opt_name="momentum", jit_compile=False, accumulation=2, seed=0):
    """A resnet8 of width 4 on 8x8 images under ``precision``, its optimizer and the harness's train step."""
    keras.utils.set_random_seed(seed)
    cfg = config.make({"precision": precision, "jit_compile": jit_compile, "optimizer": opt_name, "width": 4})
    model = models.build("resnet8", (8, 8, 3), 10, width=4, precision=precision)
    lr = schedule.WarmupStepDecay(peak=0.1, init=0.1, warmup_steps=0, boundaries=[])
    opt = optimizers.get(opt_name, lr)
    opt.build(model.trainable_variables)
    step = train.make_train_step(model, opt, lr, cfg, World(), accumulation, num_classes=10)
    return model, opt, step


def _stream(x, y, micro=12):
    return iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(micro).repeat())


@pytest.mark.parametrize("precision", MIXED)
def test_mixed_run_keeps_float32_weights_and_slots_and_computes_in_16_bits(precision, tmp_path):
    model, opt, step = _setup(precision, "nlcg-pr")
    x, y = _data()
    it = _stream(x, y)
    for _ in range(3):
        loss, _, _ = step(it)
    assert np.isfinite(float(loss))
    half = precision.split("_")[1]
    assert model.get_layer("stem_conv").compute_dtype == half  # really mixed
    assert model.get_layer("logits").compute_dtype == "float32" and model.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy restored after the build
    assert {v.dtype for v in model.variables} == {"float32"}
    assert {v.dtype for v in opt.variables} == {"float32", "int64"}  # iterations is the int64
    assert int(opt.iterations) == 3  # every step applied
    # what a checkpoint writes (bench.checkpoint uses tf.train.Checkpoint of model and optimizer)
    path = tf.train.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "ckpt"))
    dtypes = tf.train.load_checkpoint(path).get_variable_to_dtype_map()
    stored = {k: d for k, d in dtypes.items() if "VARIABLE_VALUE" in k}
    assert len(stored) >= len(model.variables) + len(opt.variables) - 1
    assert {d for k, d in stored.items() if "iteration" not in k} == {tf.float32}


def _float32_loss(model16, images, labels, weight_decay=2e-4):
    """The loss of ``model16``'s weights on one batch, recomputed in a float32 copy of the model."""
    model32 = models.build("resnet8", (8, 8, 3), 10, width=4)
    model32.set_weights(model16.get_weights())
    logits = model32(images, training=True)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    l2 = sum(float(tf.reduce_sum(w**2)) for w in models.decayed_weights(model32))
    return float(ce) + 0.5 * weight_decay * l2


def test_the_loss_scale_never_reaches_the_logged_loss():
    model, opt, step = _setup("mixed_float16", accumulation=1)
    x, y = _data(12)
    want = _float32_loss(model, x, y)
    loss, _, diag = step(_stream(x, y))
    assert float(diag["loss_scale"]) == 2.0**15 and float(diag["step_skipped"]) == 0.0  # the scale was on
    # float16 activations: ~1e-3 relative; the scaled loss would be 32768 times larger
    assert float(loss) == pytest.approx(want, rel=1e-2)
    # the gradients the optimizer applied were unscaled: one momentum step of lr 0.1 moves no weight by more
    # than lr x |g|, and |g| of a 2.3 cross-entropy is far below 1e3 (scaled ones would be ~1e4 times larger)
    assert max(float(tf.reduce_max(tf.abs(m))) for m in opt.variables[1:]) < 1e3


def test_a_step_with_overflowing_gradients_is_skipped_and_leaves_nlcg_untouched():
    model, opt, step = _setup("mixed_float16", "nlcg-fr", accumulation=1)
    x, y = _data(24)
    it = _stream(x, y)
    step(it)  # one applied step: NLCG's state is no longer its initial state
    before_w = [w.numpy() for w in model.trainable_variables]
    before_opt = [v.numpy() for v in opt.variables]
    step.loss_scale.scale.assign(2.0**40)  # float16's range ends at 65504: the backward pass overflows
    loss, _, diag = step(it)
    assert float(diag["step_skipped"]) == 1.0 and float(diag["loss_scale"]) == 2.0**39  # halved
    assert np.isfinite(float(loss))  # the loss itself is float32 and unscaled
    for a, b in zip(before_w, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    for a, b in zip(before_opt, opt.variables, strict=True):  # iterations, B, g_prev, d, u_prev, alpha, ...
        np.testing.assert_array_equal(a, b.numpy())
    step.loss_scale.scale.assign(2.0**10)
    _, _, diag = step(it)
    assert float(diag["step_skipped"]) == 0.0 and int(opt.iterations) == 2


def test_loss_scale_grows_after_its_interval_of_finite_steps():
    from bench.precision import DynamicLossScale

    s = DynamicLossScale(initial=8.0, growth_interval=3)
    ok, bad = [tf.ones(2)], [tf.constant([1.0, np.inf])]
    assert [bool(s.update(ok)) for _ in range(3)] == [True] * 3 and float(s.scale) == 16.0
    assert not bool(s.update(bad)) and float(s.scale) == 8.0 and int(s.good_steps) == 0
    for _ in range(10):
        s.update(bad)
    assert float(s.scale) == 1.0  # the floor


def test_precision_jit_and_compression_change_the_run_id():
    base = RunConfig()
    ids = {RunConfig(**kw).run_id(1) for kw in ({}, {"precision": "mixed_bfloat16"}, {"precision": "mixed_float16"},
                                                 {"jit_compile": True}, {"allreduce_compression": "fp16"})}
    assert len(ids) == 5 and base.run_id(1) in ids
    bf16 = RunConfig(precision="mixed_bfloat16")
    assert RunConfig(precision="mixed_bfloat16", seed=1).config_id(1) == bf16.config_id(1)


@pytest.mark.parametrize("key,value", [("precision", "bfloat16"), ("precision", "fp16"),
                                       ("allreduce_compression", "bf16")])
def test_a_bad_precision_or_compression_is_one_line_naming_the_valid_ones(key, value):
    with pytest.raises(ConfigError) as e:
        config.make({key: value})
    text = str(e.value)
    assert "\n" not in text and repr(value) in text
    valid = config.PRECISIONS if key == "precision" else config.COMPRESSIONS
    assert all(v in text for v in valid)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_xla_step_gives_the_plain_step_update(precision):
    x, y = _data()
    runs = {}
    for jit in (False, True):
        model, _, step = _setup(precision, "nlcg-pr", jit_compile=jit)
        w0 = [w.numpy() for w in model.trainable_variables]
        it = _stream(x, y)
        losses = [float(step(it)[0]) for _ in range(3)]
        runs[jit] = losses, [w.numpy() - a for w, a in zip(model.trainable_variables, w0, strict=True)]
    (l_plain, u_plain), (l_xla, u_xla) = runs[False], runs[True]
    # XLA fuses and reorders float sums: float32 differs in the last bits, bfloat16 (8-bit mantissa) in the
    # third digit; a wrong step (another batch, no BN update, a missing L2) moves the weights by ~100 %
    rtol = 1e-4 if precision == "float32" else 3e-2
    np.testing.assert_allclose(l_xla, l_plain, rtol=rtol)
    change = max(np.abs(u).max() for u in u_plain)
    assert max(np.abs(a - b).max() for a, b in zip(u_xla, u_plain, strict=True)) <= 10 * rtol * change


# ------------------------------------------------------------------ NLCG under bfloat16 on the fidelity problem
class _Softmax(keras.layers.Layer):
    """tests/test_nlcg.py's softmax regression (logits = x[:, :4] W1 + x[:, 4:] W2 + b) as a Keras layer, so
    that it computes in the dtype policy's compute dtype; float32 weights."""

    def __init__(self, weights, **kw):
        super().__init__(**kw)
        self.w = [self.add_weight(shape=w.shape, initializer=keras.initializers.Constant(w), name=f"w{i}")
                  for i, w in enumerate(weights)]

    def call(self, x):
        w1, w2, b = (tf.cast(w, self.compute_dtype) for w in self.w)
        return x[:, :4] @ w1 + x[:, 4:] @ w2 + b


def _nlcg_run(policy, steps=30):
    """NLCG-PR (BFGS, the step line search) on the fidelity problem with the model under ``policy``; the
    update of every step, the gradients and losses it was given, and its alphas."""
    x, labels = make_problem()
    rng = np.random.default_rng(1)
    inits = [(0.1 * rng.normal(size=s)).astype(np.float32) for s in [(4, 3), (2, 3), (3,)]]
    with models.dtype_policy(policy):
        layer = _Softmax(inits)
        layer.build((None, 6))
    opt = optimizers.get("nlcg-pr", keras.optimizers.schedules.PiecewiseConstantDecay([19], [2.0, 1.0]))
    fed, updates, alphas = [], [], []
    for idx in batches(steps):
        with tf.GradientTape() as tape:
            logits = tf.cast(layer(tf.constant(x[idx], tf.float32)), tf.float32)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[idx], logits))
        grads = [tf.cast(g, tf.float32) for g in tape.gradient(loss, layer.w)]
        before = flat([w.numpy() for w in layer.w])
        opt.apply(grads, layer.w, loss=loss)
        fed.append(([g.numpy() for g in grads], float(loss)))
        updates.append(flat([w.numpy() for w in layer.w]) - before)
        alphas.append(float(opt.diagnostics()["alpha"]))
    return inits, fed, np.array(updates), alphas


def test_nlcg_under_bfloat16_is_exact_on_its_inputs_and_close_to_its_float32_update():
    inits, fed, u16, alphas16 = _nlcg_run("mixed_bfloat16")
    # 1. the optimizer's arithmetic is float32 whatever the model's: on the gradients and losses the bfloat16
    #    model gave it, it matches the float64 reference as closely as the golden test (2e-5 of the change)
    ref = ReferenceNLCG(flat(inits), "pr", "bfgs", "step")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([19], [2.0, 1.0])
    u_ref = np.array([ref.step(t, flat(g), loss, float(schedule(t))) for t, (g, loss) in enumerate(fed)])
    assert np.abs(u16 - u_ref).max() <= 2e-5 * np.abs(u_ref).max()
    # 2. against the float32 model: bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2 %) of x,
    #    W and the logits, so the first gradient and update differ by about that (measured 0.26 %); 30 steps
    #    of drift in the weights grow it to 0.7 % of the total change (bounds: 1 % and 2 %), and the line
    #    search takes the same decisions (the losses it compares differ by ~0.1 %, its table's rows by 1 %).
    #    A model that computed in float32 anyway would give 0 here: the first check shows it does not.
    _, fed32, u32, alphas32 = _nlcg_run("float32")
    g16, g32 = flat(fed[0][0]), flat(fed32[0][0])
    assert 1e-4 < np.linalg.norm(g16 - g32) / np.linalg.norm(g32) <= 1e-2
    assert np.linalg.norm(u16[0] - u32[0]) <= 1e-2 * np.linalg.norm(u32[0])
    total16, total32 = u16.sum(axis=0), u32.sum(axis=0)
    assert np.linalg.norm(total16 - total32) <= 2e-2 * np.linalg.norm(total32)
    assert alphas16 == alphas32 and min(alphas16) < 1.0  # the same decisions, and the line search acted
