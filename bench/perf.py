"""Step-time benchmark: every optimizer's train step, timed in one process, reported as ratios.

``python -m bench perf --config experiments/smoke.toml --optimizers momentum,nlcg-fr,nlcg-pr``
(under mpirun for several workers). For each optimizer it builds the same model from the same seed and
compiles the harness's own train step; then it times them in interleaved rounds (machine noise hits all
of them alike), after warm-up steps that compile and one untimed interleaved round, with Python's garbage
collector held off while timing (as ``timeit`` does: a collection of the graphs built during setup would
otherwise land in the first timed step). It also times ``opt.apply`` alone on fixed gradients:
the optimizer's own cost, which is what NLCG adds over Momentum; and the gradient allreduce alone (one
grouped Horovod allreduce of the model's gradients; 0 on one worker, whose step has none).
``compute_ms`` is the rest of the step: step - apply - allreduce (forward, backward, input pipeline; an
estimate, as the parts overlap).
Reported: mean +- 1.96 sd of the step time, images/s (global), and each optimizer's ratio to the first
one (the baseline).
"""

from __future__ import annotations

import gc
import time
from dataclasses import replace

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import optimizers
from bench import data, distributed, models, schedule, train
from bench.config import ConfigError, RunConfig

WARMUP_STEPS = 3


def _timed(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        float(np.asarray(out[0] if isinstance(out, tuple) else out))  # wait for the result
        times.append(time.perf_counter() - t0)
    return times


def _setup(cfg: RunConfig, world, micro: int, accumulation: int, info):
    keras.utils.set_random_seed(cfg.seed)
    model = models.build(cfg.model, info.image_shape, info.num_classes, cfg.width, cfg.bn_momentum)
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
        return (lambda: step(it)), apply_only, (lambda: loss)

    @tf.function
    def allreduce_only():
        # tf.identity: graph tensors (Horovod names its ops after them); returning the result keeps it run
        reduced, mean_loss = distributed.mean_over_workers([tf.identity(g) for g in grads], loss, world)
        return mean_loss, reduced

    return (lambda: step(it)), apply_only, allreduce_only


def run(cfg: RunConfig, names: list[str], steps: int, rounds: int, world=None) -> pd.DataFrame:
    """Time ``names`` on the workload of ``cfg``; one row per optimizer (the first is the baseline)."""
    world = world or distributed.init()
    for name in names:
        if name not in optimizers.REGISTRY:
            raise ConfigError(f"optimizer {name!r} is unknown; valid: {', '.join(optimizers.names())}")
    data.check(cfg)
    info = data.info(cfg)
    micro, accumulation = distributed.split_batch(cfg.global_batch, world.size, cfg.per_worker_batch)
    fns = {}
    for name in names:
        hp = cfg.hparams if name == cfg.optimizer else {}
        fns[name] = _setup(replace(cfg, optimizer=name, hparams=hp), world, micro, accumulation, info)
        for f in fns[name]:
            _timed(f, WARMUP_STEPS)
    for name in names:  # untimed round: the first call after switching functions pays one-off costs
        for f in fns[name]:
            _timed(f, 1)
    step_t = {n: [] for n in names}
    apply_t = {n: [] for n in names}
    reduce_t = {n: [] for n in names}
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for name in names:
                step_t[name] += _timed(fns[name][0], steps)
                apply_t[name] += _timed(fns[name][1], steps)
                reduce_t[name] += _timed(fns[name][2], steps) if world.size > 1 else [0.0]
    finally:
        gc.enable()
    base_step, base_apply = np.mean(step_t[names[0]]), np.mean(apply_t[names[0]])
    rows = []
    for name in names:
        s, a = np.asarray(step_t[name]), np.asarray(apply_t[name])
        rows.append({
            "optimizer": name, "model": cfg.model, "dataset": cfg.dataset, "global_batch": cfg.global_batch,
            "workers": world.size, "micro_batch": micro, "accumulation": accumulation,
            "step_ms": 1e3 * s.mean(), "step_ms_ci95": 1e3 * 1.96 * s.std(ddof=1),
            "images_per_s": cfg.global_batch / s.mean(), "step_ratio": s.mean() / base_step,
            "apply_ms": 1e3 * a.mean(), "apply_ms_ci95": 1e3 * 1.96 * a.std(ddof=1),
            "apply_ratio": a.mean() / base_apply, "allreduce_ms": 1e3 * np.mean(reduce_t[name]),
            "compute_ms": 1e3 * (s.mean() - a.mean() - np.mean(reduce_t[name])), "samples": len(s),
        })
    return pd.DataFrame(rows)
