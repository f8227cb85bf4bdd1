"""The per-optimizer step-time table: every optimizer's train step, ``opt.apply`` alone and the gradient
allreduce alone on one workload, timed in interleaved rounds (``python -m bench perf``; under ``--json``,
the ``optimizers`` child of bench.perf.children on 2 workers).

For each optimizer it builds the same model from the same seed and compiles the harness's own train step
(bench.perf.timing.setup); after warm-up steps that compile and one untimed interleaved round, it times
them in rounds, each round starting one optimizer later (bench.perf.timing.rotated), with the garbage
collector held off. ``compute_ms`` is the rest of the step: step - apply - allreduce (forward, backward,
input pipeline; an estimate, as the parts overlap).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

import optimizers
from bench import data, distributed, intervals
from bench.config import ConfigError, RunConfig
from bench.perf.timing import WARMUP_STEPS, gc_off, rotated, setup, timed


def check_names(names: list[str]) -> None:
    """Raise ConfigError naming the first of ``names`` that is neither a built-in nor a plug-in (an entry point
    or "package.module:attribute", bench.components), or a plug-in that does not meet its contract."""
    for name in names:
        try:
            optimizers.entry(name)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def run(cfg: RunConfig, names: list[str], steps: int, rounds: int, world=None) -> pd.DataFrame:
    """Time ``names`` on the workload of ``cfg``; one row per optimizer (the first is the baseline).

    Times in ms: ``step_ms`` (mean over every timed step), ``apply_ms``, ``allreduce_ms`` (0 on one worker)
    and ``compute_ms``; ``images_per_s`` is global; ``step_ratio`` and ``apply_ratio`` are over the first
    optimizer's. ``step_ms_sd`` and ``apply_ms_sd`` are the standard deviations of single steps (how much one
    step varies, not an interval). ``step_ms_se`` is the standard error of the mean step time over the
    rounds' means (each round times ``steps`` consecutive steps of every optimizer in turn, starting one
    later each round) and ``step_ms_ci95`` the half-width of its 95 % Student t interval (rounds - 1
    degrees of freedom); ``round_ms`` lists those means, round by round (the same rounds for every row:
    bench.json pairs them)."""
    world = world or distributed.init()
    check_names(names)
    data.check(cfg)
    info = data.info(cfg)
    micro, accumulation = distributed.split_batch(cfg.global_batch, world.size, cfg.per_worker_batch)
    fns = {}
    for name in names:
        hp = cfg.hparams if name == cfg.optimizer else {}
        t = setup(replace(cfg, optimizer=name, hparams=hp), world, micro, accumulation, info)
        fns[name] = (t.step, t.apply, t.allreduce)
        for f in fns[name]:
            timed(f, WARMUP_STEPS)
    for name in names:  # untimed round: the first call after switching functions pays one-off costs
        for f in fns[name]:
            timed(f, 1)
    step_t = {n: [] for n in names}
    apply_t = {n: [] for n in names}
    reduce_t = {n: [] for n in names}
    with gc_off():
        for r in range(rounds):
            for name in rotated(names, r):
                step_t[name] += timed(fns[name][0], steps)
                apply_t[name] += timed(fns[name][1], steps)
                reduce_t[name] += timed(fns[name][2], steps) if world.size > 1 else [0.0]
    base_step, base_apply = np.mean(step_t[names[0]]), np.mean(apply_t[names[0]])
    rows = []
    for name in names:
        s, a = np.asarray(step_t[name]), np.asarray(apply_t[name])
        round_means = s.reshape(rounds, steps).mean(axis=1)
        se = 1e3 * round_means.std(ddof=1) / math.sqrt(rounds) if rounds > 1 else math.nan
        rows.append({
            "optimizer": name, "model": cfg.model, "dataset": cfg.dataset, "global_batch": cfg.global_batch,
            "workers": world.size, "micro_batch": micro, "accumulation": accumulation,
            "step_ms": 1e3 * s.mean(), "step_ms_sd": 1e3 * s.std(ddof=1), "step_ms_se": se,
            "step_ms_ci95": intervals.t975(rounds - 1) * se if rounds > 1 else math.nan,
            "images_per_s": cfg.global_batch / s.mean(), "step_ratio": s.mean() / base_step,
            "apply_ms": 1e3 * a.mean(), "apply_ms_sd": 1e3 * a.std(ddof=1),
            "apply_ratio": a.mean() / base_apply, "allreduce_ms": 1e3 * np.mean(reduce_t[name]),
            "compute_ms": 1e3 * (s.mean() - a.mean() - np.mean(reduce_t[name])), "samples": len(s),
            "rounds": rounds, "round_ms": [1e3 * float(m) for m in round_means],
        })
    return pd.DataFrame(rows)
