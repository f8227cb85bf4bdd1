"""The in-process comparisons of ``bench perf --json``: things timed in interleaved rounds in one process
(one worker, every core): the harness's train step in its variants (float32, mixed_bfloat16, XLA), a bare
training loop, the input pipeline alone, and a large matmul (the machine's fp32 peak). Each round times one
block of each, so machine noise hits all of them. Also the machine's memory copy bandwidth, for
bench.json's ``machine`` block, and ``optimizer_apply``: each optimizer's ``apply`` on ResNet-50's variables.

- harness: ``bench.train.make_train_step`` (world size 1) fed by ``bench.data.train_dataset``, momentum
  (bench.perf.timing.setup), float32 without XLA; the variants (``VARIANTS``) are the same step with
  ``precision = "mixed_bfloat16"`` or ``jit_compile = true`` (a model of their own, same seed).
- bare: the same model (``bench.models.build``, same seed), batch, loss (cross-entropy + L2 on the same
  weights) and optimizer (Keras SGD with momentum 0.9), written here as a plain tf.function on one fixed
  batch already in memory: no tf.data, no Horovod, no schedule, no diagnostics.
- pipeline: ``train_dataset`` for the same config, iterated by a tf.function that only pulls micro-batches.
- matmul: ``MATMUL_N`` x ``MATMUL_N`` float32 tf.matmul (2 N^3 FLOPs), best of ``MATMUL_BEST_OF`` per round.
"""

from __future__ import annotations

import math
from dataclasses import replace

import keras
import numpy as np
import tensorflow as tf

from bench import data, distributed, models, schedule
from bench.config import RunConfig
from bench.perf.flops import train_flops_per_image
from bench.perf.timing import WARMUP_STEPS, gc_off, one_worker_split, rotated, setup, timed

# the harness step's variants: run-config fields over the workload's (the key is the side's name); "harness" is
# float32 without XLA whatever the workload says, as the bare loop is, so that every ratio has one baseline
VARIANTS = {"harness": {"precision": "float32", "jit_compile": False},
            "harness_bf16": {"precision": "mixed_bfloat16", "jit_compile": False},
            "harness_xla": {"precision": "float32", "jit_compile": True}}
MATMUL_N = 2048
MATMUL_BEST_OF = 3
PIPELINE_BATCHES = 200  # micro-batches of a pipeline block (at least): it runs much faster than a step
PIPELINE_DRAIN = 64  # untimed pulls before a pipeline block: what it prefetched while the others ran


def _block(fn, n: int) -> float:
    """Seconds for ``n`` calls of ``fn``, each waited for."""
    return math.fsum(timed(fn, n))


def _bare_step(cfg: RunConfig, info, micro: int, accumulation: int, batch):
    """The bare loop's step: a tf.function() -> loss on one fixed micro-batch, accumulated like the harness."""
    model = models.seeded(cfg, info)
    variables, decayed = model.trainable_variables, models.decayed_weights(model)
    opt = keras.optimizers.SGD(learning_rate=schedule.peak_lr(cfg.base_lr, cfg.global_batch, cfg.reference_batch),
                               momentum=0.9)
    opt.build(variables)
    images, labels = batch

    def grads_of():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            loss += 0.5 * cfg.weight_decay * tf.add_n([tf.reduce_sum(tf.square(w)) for w in decayed])
        return loss, tape.gradient(loss, variables)

    @tf.function
    def step():
        loss, grads = grads_of()
        if accumulation > 1:
            for _ in tf.range(accumulation - 1):
                tf.autograph.experimental.set_loop_options(
                    shape_invariants=[(g, tf.TensorShape(g.shape)) for g in grads])
                micro_loss, micro_grads = grads_of()
                loss += micro_loss
                grads = [g + mg for g, mg in zip(grads, micro_grads, strict=True)]
            loss, grads = loss / accumulation, [g / accumulation for g in grads]
        opt.apply(grads, variables)
        return loss

    return step, model


def _pipeline(cfg: RunConfig, micro: int, accumulation: int):
    it = iter(data.train_dataset(cfg, workers=1, rank=0, micro_batch=micro, accumulation=accumulation))

    @tf.function
    def pull(iterator):
        images, _ = next(iterator)
        return images[0, 0, 0, 0]

    return lambda: pull(it)


def _matmul(n: int):
    a = tf.random.normal([n, n], seed=1)
    b = tf.random.normal([n, n], seed=2)

    @tf.function
    def mm():
        return tf.reduce_sum(tf.matmul(a, b))  # the sum adds n^2 FLOPs to 2 n^3: not counted

    return mm


def run(cfg: RunConfig, rounds: int, steps: int, warmup: int = WARMUP_STEPS, matmul_n: int = MATMUL_N,
        matmul_best_of: int = MATMUL_BEST_OF, variants=tuple(VARIANTS), split: tuple[int, int] | None = None,
        extras: bool = True) -> dict:
    """Time the harness step's ``variants`` (keys of VARIANTS), the bare loop and, with ``extras``, the
    pipeline and the matmul in ``rounds`` interleaved rounds of ``steps`` steps (the pipeline: at least
    ``PIPELINE_BATCHES`` micro-batches). ``split``: (micro_batch, accumulation) of the one worker (default
    ``one_worker_split``). Returns per-round samples: images/s of each variant, bare and pipeline, FLOP/s
    of the matmul (best of the round), the model's training FLOPs per image, and the split used."""
    # momentum: the bare loop's own optimizer (Keras SGD, momentum 0.9, _bare_step), so both sides step alike;
    # not a set of optimizers to time (those are the registry's, optimizers.perf_set)
    cfg = replace(cfg, optimizer="momentum", hparams={}, precision="float32", jit_compile=False)
    data.check(cfg)
    info = data.info(cfg)
    micro, accumulation = split or one_worker_split(cfg)
    images_per_step = micro * accumulation
    steps_of = {name: setup(replace(cfg, **VARIANTS[name]), distributed.World(), micro, accumulation, info)
                for name in variants}  # one worker: no collective
    model = steps_of["harness"].model
    batch = next(iter(data.train_dataset(cfg, workers=1, rank=0, micro_batch=micro, accumulation=1)))
    batch = (tf.identity(batch[0]), tf.identity(batch[1]))
    bare, _ = _bare_step(cfg, info, micro, accumulation, batch)
    sides = {**{name: t.step for name, t in steps_of.items()}, "bare": bare}
    pull, mm = (_pipeline(cfg, micro, accumulation), _matmul(matmul_n)) if extras else (None, None)
    pipeline_n = max(PIPELINE_BATCHES, steps * accumulation)
    for fn in [*sides.values(), *((pull, mm) if extras else ())]:  # compile and warm up
        timed(fn, warmup)
    out = {name: [] for name in [*sides, *(("pipeline", "matmul") if extras else ())]}
    with gc_off():
        for r in range(rounds):
            for name in rotated(list(sides), r):  # alternate which goes first
                out[name].append(images_per_step * steps / _block(sides[name], steps))
            if extras:
                timed(pull, PIPELINE_DRAIN)  # empty what the pipeline prefetched while the others ran
                out["pipeline"].append(micro * pipeline_n / _block(pull, pipeline_n))
                out["matmul"].append(2 * matmul_n**3 / min(timed(mm, matmul_best_of)))
    return {**out, "train_flops_per_image": train_flops_per_image(model),
            "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
            "micro_batch": micro, "accumulation": accumulation, "images_per_step": images_per_step,
            "steps_per_round": steps, "pipeline_micro_batches_per_round": pipeline_n, "matmul_n": matmul_n}


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Copy bandwidth of this machine (GB/s): best of ``repeats`` numpy copies of ``megabytes`` MiB, counting
    read + write bytes. The per-parameter optimizer cost scales with it in ``bench project``."""
    src = np.ones(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    return 2 * src.nbytes / min(timed(lambda: np.copyto(dst, src), repeats)) / 1e9


def optimizer_apply(names=None, rounds: int = 5, steps: int = 3, warmup: int = 2) -> dict:
    """Milliseconds of ``opt.apply`` per optimizer on ResNet-50's trainable variables (keras.applications,
    1000 classes: 25.6 M parameters in 214 variables), on fixed float32 gradients, in interleaved rounds of
    ``steps`` calls: the optimizer's own cost at the size ``bench project`` projects, measured rather than
    scaled from the small model. ``names``: by default the registry's perf set ``table`` (optimizers.perf_set:
    the projection's optimizers and the baselines the paper compares). Returns {"parameters", "variables",
    "round_ms": {name: [ms per round]}}."""
    import optimizers

    names = optimizers.perf_set("table") if names is None else list(names)
    model = models.build("resnet50", (224, 224, 3), 1000)
    variables = model.trainable_variables
    grads = [tf.random.normal(v.shape, stddev=1e-3, seed=i) for i, v in enumerate(variables)]
    loss = tf.constant(1.0)
    fns = {}
    for name in names:
        opt = optimizers.get(name, 1e-3)
        opt.build(variables)

        @tf.function
        def apply_only(opt=opt):
            opt.apply(grads, variables, loss=loss)
            return loss

        fns[name] = apply_only
        timed(apply_only, warmup)
    out = {name: [] for name in names}
    with gc_off():
        for r in range(rounds):
            for name in rotated(list(names), r):
                out[name].append(1e3 * math.fsum(timed(fns[name], steps)) / steps)
    return {"parameters": int(sum(np.prod(v.shape) for v in variables)), "variables": len(variables),
            "round_ms": out, "steps_per_round": steps}
