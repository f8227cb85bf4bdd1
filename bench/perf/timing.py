"""How the speed study times anything, in one place: a clock that waits for TensorFlow's result, Python's
garbage collector held off while timing (as ``timeit`` does), the rotation of who goes first in a round,
and the set-up of the harness's train step that every timed side shares.

- ``call(fn)``: ``fn()`` and its seconds (``time.perf_counter``), the host waiting for the result (``wait``:
  TensorFlow runs ops asynchronously, so a call returns before its work is done).
- ``timed(fn, n)``: the seconds of each of ``n`` calls.
- ``gc_off()``: a collection first, then none until the block ends: a collection of the graphs built during
  set-up would otherwise land in a timed call. Every measurement's timed rounds run inside it.
- ``rotated(order, r)``: round ``r`` starts ``r`` places later, so that every side goes first as often as
  the others (the first after a switch pays one-off costs).
- ``setup``: the harness's own train step (``bench.train.make_train_step`` fed by ``bench.data.train_dataset``)
  with ``opt.apply`` alone and the gradient allreduce alone; ``one_worker_split``: the strongest one worker.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

import optimizers
from bench import data, distributed, models, schedule, train
from bench.config import RunConfig

WARMUP_STEPS = 3  # untimed calls that compile (the first) and fill the input pipeline's buffers


def wait(out) -> None:
    """Block until ``out`` (a tensor, or a tuple whose first item is one) is computed: the host reads its
    value. Anything else (None, numbers, arrays: computed on the host) is already there."""
    first = out[0] if isinstance(out, tuple) else out
    if isinstance(first, tf.Tensor):
        float(np.asarray(first))


def call(fn, *args, **kwargs) -> tuple[object, float]:
    """``fn(*args, **kwargs)`` and the seconds it took, its result waited for (``wait``)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    wait(out)
    return out, time.perf_counter() - t0


def timed(fn, n: int) -> list[float]:
    """Seconds of each of ``n`` calls of ``fn()``, each waited for (``call``). Timing for a result runs
    inside ``gc_off()``; warm-up calls need not."""
    return [call(fn)[1] for _ in range(n)]


@contextlib.contextmanager
def gc_off():
    """Collect now, then hold Python's garbage collector off until the block ends (as ``timeit`` does).
    Nested use is one block: the inner one neither collects nor turns the collector back on."""
    if not gc.isenabled():
        yield
        return
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def rotated(order, r: int) -> tuple:
    """``order`` started ``r`` places later (round ``r`` of an interleaved measurement), so that every item
    goes first as often as the others."""
    k = r % len(order)
    return (*order[k:], *order[:k])


def one_worker_split(cfg: RunConfig) -> tuple[int, int]:
    """(micro_batch, accumulation) of ONE worker doing the global batch: twice the micro-batch of each of
    two workers, the same accumulation (for batch 256: one pass of 256). It is the best one worker can do
    with the memory two use, so the scaling entry compares two workers with the strongest one.
    Raises ConfigError when the batch does not split over two workers."""
    micro2, accumulation = distributed.split_batch(cfg.global_batch, 2, cfg.per_worker_batch)
    return 2 * micro2, accumulation


class TrainStep(NamedTuple):
    """The timed functions of one set-up (``setup``): no argument, each returns a tensor to wait for."""

    step: Callable  # the harness's train step on the next batch of its input pipeline
    apply: Callable  # opt.apply alone on fixed gradients: the optimizer's own cost
    allreduce: Callable  # the gradient allreduce alone (one worker: returns at once, nothing to reduce)
    model: keras.Model


def setup(cfg: RunConfig, world, micro: int, accumulation: int, info) -> TrainStep:
    """The harness's train step on ``cfg`` (model and optimizer built from ``cfg.seed``, state broadcast over
    ``world``, micro-batches of ``micro`` accumulated ``accumulation`` times, data from train_dataset), with
    ``opt.apply`` alone on fixed gradients and the gradient allreduce alone (one grouped Horovod allreduce of
    the model's gradient shapes)."""
    model = models.seeded(cfg, info)
    lr = schedule.from_config(cfg, 1000)
    opt = optimizers.get(cfg.optimizer, lr, **cfg.hparams)
    opt.build(model.trainable_variables)
    if world.size > 1:
        distributed.broadcast_state(model, opt)
    it = iter(data.train_dataset(cfg, workers=world.size, rank=world.rank, micro_batch=micro,
                                 accumulation=accumulation))
    step = train.make_train_step(model, opt, lr, cfg, world, accumulation, info.num_classes)
    variables = model.trainable_variables
    grads = [tf.random.normal(v.shape, stddev=1e-3, seed=i) for i, v in enumerate(variables)]
    loss = tf.constant(1.0)

    @tf.function
    def apply_only():
        opt.apply(grads, variables, loss=loss)
        return loss

    if world.size == 1:  # the train step has no collective: nothing to time
        return TrainStep(lambda: step(it), apply_only, lambda: loss, model)

    @tf.function
    def allreduce_only():
        # tf.identity: graph tensors (Horovod names its ops after them); returning the result keeps it run
        reduced, mean_loss = distributed.mean_over_workers([tf.identity(g) for g in grads], loss, world,
                                                           cfg.allreduce_compression)
        return mean_loss, reduced

    return TrainStep(lambda: step(it), apply_only, allreduce_only, model)
