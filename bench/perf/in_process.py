"""The in-process comparisons of ``bench perf --json``: four things timed in interleaved rounds in one
process (one worker, every core): the harness's train step, a bare training loop, the input pipeline
alone, and a large matmul (the machine's fp32 peak). Each round times one block of each, so machine noise
hits all four. Also the machine's memory copy bandwidth, for bench.json's ``machine`` block.

- harness: ``bench.train.make_train_step`` (world size 1) fed by ``bench.data.train_dataset``, momentum
  (bench.perf.timing.setup).
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
        matmul_best_of: int = MATMUL_BEST_OF) -> dict:
    """Time harness, bare loop, pipeline and matmul in ``rounds`` interleaved rounds of ``steps`` steps
    (the pipeline: at least ``PIPELINE_BATCHES`` micro-batches). Returns per-round samples:
    images/s of harness, bare and pipeline, FLOP/s of the matmul (best of the round), the model's
    training FLOPs per image, and the split used."""
    cfg = replace(cfg, optimizer="momentum", hparams={})
    data.check(cfg)
    info = data.info(cfg)
    micro, accumulation = one_worker_split(cfg)
    images_per_step = micro * accumulation
    harness = setup(cfg, distributed.World(), micro, accumulation, info)  # one worker: no collective
    model = harness.model
    batch = next(iter(data.train_dataset(cfg, workers=1, rank=0, micro_batch=micro, accumulation=1)))
    batch = (tf.identity(batch[0]), tf.identity(batch[1]))
    bare, _ = _bare_step(cfg, info, micro, accumulation, batch)
    pull = _pipeline(cfg, micro, accumulation)
    mm = _matmul(matmul_n)
    pipeline_n = max(PIPELINE_BATCHES, steps * accumulation)
    for fn in (harness.step, bare, pull, mm):  # compile and warm up
        timed(fn, warmup)
    sides = {"harness": harness.step, "bare": bare}
    out = {"harness": [], "bare": [], "pipeline": [], "matmul": []}
    with gc_off():
        for r in range(rounds):
            for name in rotated(list(sides), r):  # alternate which goes first
                out[name].append(images_per_step * steps / _block(sides[name], steps))
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
