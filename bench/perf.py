"""Speed at the hardware's limit, measured: ``python -m bench perf``.

Two modes.

``python -m bench perf --config X.toml --optimizers momentum,nlcg-fr,nlcg-pr`` (under mpirun for several
workers): the per-optimizer table. For each optimizer it builds the same model from the same seed and
compiles the harness's own train step; then it times them in interleaved rounds (machine noise hits all
of them alike), after warm-up steps that compile and one untimed interleaved round, with Python's garbage
collector held off while timing (as ``timeit`` does: a collection of the graphs built during setup would
otherwise land in the first timed step). It also times ``opt.apply`` alone on fixed gradients: the
optimizer's own cost, which is what NLCG adds over Momentum; and the gradient allreduce alone (one grouped
Horovod allreduce of the model's gradients; 0 on one worker, whose step has none). ``compute_ms`` is the
rest of the step: step - apply - allreduce (forward, backward, input pipeline; an estimate, as the parts
overlap). Reported: mean +- 1.96 sd of the step time over steps, its standard error over rounds, images/s
(global), and each optimizer's ratio to the first one (the baseline).

``python -m bench perf --json results/bench/bench.json [--config X.toml] [--quick]`` (outside mpirun: it
launches its own workers; without a config, the default study's workload: resnet8 on Fashion-MNIST,
global batch 256): bench.json, printed as a table. Every entry is a ratio of two things measured in the
same run, interleaved in rounds, with both sides' samples, means, standard errors and units, a 95 % band
(``perf_stats.INTERVAL_METHOD``: the delta method, paired where both sides ran in the same rounds), its
target and ``meets_target`` (the point ratio against the target; null for a reported-only entry):

- ``harness_vs_bare`` >= 0.95: the harness's train step (make_train_step, data from train_dataset, one
  worker on every core) in images/s over a bare tf.function loop on the same model, batch, loss (with L2)
  and optimizer (momentum), one fixed batch in memory (``bench.perf_local``).
- ``scaling_2_workers`` >= 1.15: images/s of ``mpirun -np 2`` (each its share of the cores, from
  bench.distributed.init) over ``mpirun -np 1`` (every core; twice the micro-batch, same accumulation) at
  the same global batch, child processes alternated over rounds (``bench.perf_child``).
- ``nlcg_vs_momentum_step`` <= 1.05: NLCG-FR's step time over Momentum's (means of the same rounds, paired),
  from the per-optimizer table, run on 2 workers (the default study's set-up) and stored in full under
  ``optimizers`` (by default the study's momentum, nlcg-fr, nlcg-pr, rmsprop; ``--optimizers`` adds others).
- ``accumulation_memory`` <= 1.2: peak resident memory (VmHWM) of one step at global batch 98304 over one
  at 512, micro-batches of 256, each in its own process; the CIFAR ResNets at width 4 (384 micro-steps
  must fit the time; the question is whether memory grows with accumulation, not this model's size).
- ``input_headroom`` >= 3: images/s of the input pipeline alone (train_dataset, no model) over the train
  step's (the harness side of harness_vs_bare).
- ``flops_share`` >= 0.25: achieved FLOP/s (the model's forward + backward FLOPs per image,
  ``perf_stats.FLOPS_CONVENTION``, times the train step's images/s) over this machine's fp32 peak, measured
  in the same rounds as the best of a few 2048 x 2048 float32 matmuls (2 N^3 FLOPs each).
- ``allreduce_share`` (reported only): the gradient allreduce alone over the step, both on 2 workers.
- ``scaling_ceiling`` (reported only): two plain 1-thread processes training at once, each on half the
  global batch, no MPI and no Horovod (images/s summed), over the same 1-worker side: the hardware's
  ceiling for ``scaling_2_workers``; their gap is the cost of synchronising every step.
- ``scaling_no_sync`` (reported only): the 2 workers' job (``mpirun -np 2``, Horovod initialised, its
  background thread and MPI's progress running) with each rank training its half alone, no collective per
  step, over the same 1-worker side. It splits the gap: ceiling -> no_sync is what Horovod's and MPI's
  threads cost, no_sync -> scaling_2_workers what the per-step collective costs (the allreduce itself,
  ``allreduce_share``, and waiting for the slower rank).

bench.json also holds ``machine`` (CPUs, model name, memory and its copy bandwidth, versions, load when it
started and ended), ``when``, ``duration_s`` and ``phase_s``, ``workload`` (the config), ``parameters`` (of
the measured model: ``bench project`` turns apply_ms into a cost per parameter) and the sizes used (``FULL``:
about 8-10 minutes on 2 cores). ``--quick`` runs every entry at reduced sizes (``QUICK``: fewer rounds and
steps, batch 8192 for the memory entry, momentum and nlcg-fr only) to check the machinery, not the speed.
Child processes start as ``python -m bench perf-child`` through the harness's own launch line
(``bench.environment.relaunch_command``), so launcher and thread settings of the harness apply to them too.
``python -m bench project`` (``bench.project``) turns bench.json into a projection to GPUs, kept apart.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import optimizers
from bench import data, distributed, models, perf_stats, schedule, train
from bench.config import ConfigError, RunConfig

WARMUP_STEPS = 3
OPTIMIZERS = "momentum,nlcg-fr,nlcg-pr,rmsprop,lars,lamb"  # the table's default; the first is the baseline
JSON_OPTIMIZERS = "momentum,nlcg-fr,nlcg-pr,rmsprop"  # --json: the default study's four (and bench project's)
QUICK_OPTIMIZERS = "momentum,nlcg-fr"
# (target, direction) of every bench.json entry; None: reported only
TARGETS = {"harness_vs_bare": (0.95, ">="), "scaling_2_workers": (1.15, ">="), "nlcg_vs_momentum_step": (1.05, "<="),
           "accumulation_memory": (1.2, "<="), "input_headroom": (3.0, ">="), "flops_share": (0.25, ">="),
           "allreduce_share": (None, None), "scaling_ceiling": (None, None), "scaling_no_sync": (None, None)}
# sizes of a full run (about 8-10 minutes on 2 cores) and of --quick
FULL = {"local_rounds": 12, "local_steps": 3, "scaling_rounds": 3, "scaling_steps": 10, "memory_batches": (512, 98304),
        "optimizer_steps": 4, "optimizer_rounds": 5, "matmul_n": 2048, "matmul_best_of": 3}
QUICK = {"local_rounds": 3, "local_steps": 2, "scaling_rounds": 1, "scaling_steps": 3, "memory_batches": (512, 8192),
         "optimizer_steps": 2, "optimizer_rounds": 2, "matmul_n": 1024, "matmul_best_of": 2}


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
    """Time ``names`` on the workload of ``cfg``; one row per optimizer (the first is the baseline).

    ``step_ms_se`` is the standard error of the mean step time over the rounds' means (each round times
    ``steps`` consecutive steps of every optimizer in turn, starting one later each round); ``round_ms``
    lists those means, round by round (the same rounds for every row: bench.json pairs them)."""
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
        for r in range(rounds):
            for name in perf_stats.rotated(names, r):
                step_t[name] += _timed(fns[name][0], steps)
                apply_t[name] += _timed(fns[name][1], steps)
                reduce_t[name] += _timed(fns[name][2], steps) if world.size > 1 else [0.0]
    finally:
        gc.enable()
    base_step, base_apply = np.mean(step_t[names[0]]), np.mean(apply_t[names[0]])
    rows = []
    for name in names:
        s, a = np.asarray(step_t[name]), np.asarray(apply_t[name])
        round_means = s.reshape(rounds, steps).mean(axis=1)
        rows.append({
            "optimizer": name, "model": cfg.model, "dataset": cfg.dataset, "global_batch": cfg.global_batch,
            "workers": world.size, "micro_batch": micro, "accumulation": accumulation,
            "step_ms": 1e3 * s.mean(), "step_ms_ci95": 1e3 * 1.96 * s.std(ddof=1),
            "step_ms_se": 1e3 * round_means.std(ddof=1) / math.sqrt(rounds) if rounds > 1 else math.nan,
            "images_per_s": cfg.global_batch / s.mean(), "step_ratio": s.mean() / base_step,
            "apply_ms": 1e3 * a.mean(), "apply_ms_ci95": 1e3 * 1.96 * a.std(ddof=1),
            "apply_ratio": a.mean() / base_apply, "allreduce_ms": 1e3 * np.mean(reduce_t[name]),
            "compute_ms": 1e3 * (s.mean() - a.mean() - np.mean(reduce_t[name])), "samples": len(s),
            "rounds": rounds, "round_ms": [1e3 * float(m) for m in round_means],
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ bench.json
def bench(cfg: RunConfig, names: list[str], quick: bool = False) -> dict:
    """Measure every entry of bench.json on the workload of ``cfg`` (see the module docstring); returns
    the document (non-finite numbers as None). Must run outside MPI: it launches its own workers."""
    from bench import environment, perf_child, perf_local

    if environment.under_mpi():
        raise ConfigError("perf --json launches its own workers (mpirun -np 1 and 2); run it outside mpirun")
    names = ["momentum", "nlcg-fr", *[n for n in names if n not in ("momentum", "nlcg-fr")]]
    for name in names:
        if name not in optimizers.REGISTRY:
            raise ConfigError(f"optimizer {name!r} is unknown; valid: {', '.join(optimizers.names())}")
    sizes = QUICK if quick else FULL
    t0 = time.perf_counter()
    data.check(cfg)
    perf_local.one_worker_split(cfg)  # the scaling entry needs a batch that splits over 2 workers
    distributed.init()  # one process, every core
    doc = {"when": perf_stats.now(), "machine": perf_stats.machine(), "quick": quick, "sizes": dict(sizes),
           "interval_method": perf_stats.INTERVAL_METHOD, "flops_convention": perf_stats.FLOPS_CONVENTION,
           "workload": cfg.to_dict()}
    phases = doc["phase_s"] = {}

    def phase(name, fn, *args, **kw):
        print(f"perf: {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        out = fn(*args, **kw)
        phases[name] = time.perf_counter() - t
        print(f"perf: {name} done in {phases[name]:.0f} s", file=sys.stderr, flush=True)
        return out

    local = phase("in-process rounds", perf_local.run, cfg, sizes["local_rounds"], sizes["local_steps"],
                  matmul_n=sizes["matmul_n"], matmul_best_of=sizes["matmul_best_of"])
    import horovod.tensorflow as hvd

    hvd.shutdown()  # Horovod: this process's background thread stays off the cores while children run
    scale = phase("scaling children", perf_child.scaling, cfg, sizes["scaling_rounds"], sizes["scaling_steps"])
    memory = phase("memory children", perf_child.memory, cfg, sizes["memory_batches"])
    table = phase("optimizer table", perf_child.optimizers, cfg, names, sizes["optimizer_steps"],
                  sizes["optimizer_rounds"])
    doc.update(entries(local, scale, memory, table))
    doc["optimizers"] = table
    doc["parameters"] = local["parameters"]
    doc["machine"]["loadavg_1min_at_end"] = os.getloadavg()[0]
    doc["duration_s"] = time.perf_counter() - t0
    return perf_stats.finite_or_none(doc)


def entries(local: dict, scale: dict, memory: list[dict], table: list[dict]) -> dict:
    """The bench.json entries from the measurements of perf_local.run, perf_child.scaling, .memory and
    the per-optimizer table rows."""
    from bench.perf_stats import entry, side

    def target(key, **kw):
        return {"target": TARGETS[key][0], "direction": TARGETS[key][1] or ">=", **kw}

    split = {"micro_batch": local["micro_batch"], "accumulation": local["accumulation"], "workers": 1}
    harness = side("harness train step (make_train_step + train_dataset, momentum)", "images/s", local["harness"],
                   **split)
    out = {"harness_vs_bare": entry(
        harness, side("bare tf.function loop, one fixed batch in memory", "images/s", local["bare"], **split),
        **target("harness_vs_bare"), paired=True)}
    two, one = scale[2], scale[1]

    def scaling_side(runs):
        return side(f"{runs[0]['workers']} worker(s) x {runs[0]['threads']} thread(s)", "images/s",
                    [r["images_per_s"] for r in runs], micro_batch=runs[0]["micro_batch"],
                    accumulation=runs[0]["accumulation"], steps_per_round=len(runs[0]["step_s"]))

    out["scaling_2_workers"] = entry(scaling_side(two), scaling_side(one), **target("scaling_2_workers"), paired=True,
                                     note="a round = one child process per side, launched in turn")
    if scale.get("ceiling"):
        out["scaling_ceiling"] = entry(
            side("2 plain processes x 1 thread at once, half the global batch each, no MPI (summed)", "images/s",
                 [r["images_per_s"] for r in scale["ceiling"]], pairs=[r["pair"] for r in scale["ceiling"]]),
            scaling_side(one), **target("scaling_ceiling"), paired=True,
            note="what scaling_2_workers could reach on this host if synchronising cost nothing")
    if scale.get("no_sync"):
        out["scaling_no_sync"] = entry(
            side("2 Horovod workers x 1 thread under mpirun, each on its half alone: no collective per step "
                 "(summed)", "images/s", [r["images_per_s"] for r in scale["no_sync"]],
                 per_rank=[r["per_rank"] for r in scale["no_sync"]]),
            scaling_side(one), **target("scaling_no_sync"), paired=True,
            note="between scaling_ceiling and scaling_2_workers: the first gap is the cost of Horovod's and "
                 "MPI's threads, the second that of the per-step collective (the wait for the slower rank "
                 "and the allreduce)")
    rows = {r["optimizer"]: r for r in table}

    def optimizer_side(name):
        r = rows[name]
        return side(f"{name} step on {r['workers']} workers (a sample: one round's mean)", "ms", r["round_ms"],
                    apply_ms=r["apply_ms"], steps_per_round=r["samples"] // r["rounds"])

    out["nlcg_vs_momentum_step"] = entry(optimizer_side("nlcg-fr"), optimizer_side("momentum"),
                                         **target("nlcg_vs_momentum_step"), paired=True,
                                         note="the table's rounds rotate which optimizer goes first")
    big, small = max(memory, key=lambda m: m["global_batch"]), min(memory, key=lambda m: m["global_batch"])

    def memory_side(m):
        return side(f"peak resident memory, one step at global batch {m['global_batch']}", "KiB", [m["peak_kib"]],
                    **{k: m[k] for k in ("micro_batch", "accumulation", "model", "width", "peak_before_step_kib",
                                         "step_s")})

    out["accumulation_memory"] = entry(memory_side(big), memory_side(small), **target("accumulation_memory"),
                                       note="one process per batch: no band")
    out["input_headroom"] = entry(
        side("input pipeline alone (train_dataset, no model)", "images/s", local["pipeline"], **split), harness,
        **target("input_headroom"), paired=True)
    flops = local["train_flops_per_image"]
    out["flops_share"] = entry(
        side("achieved: train FLOPs per image x train step images/s", "FLOP/s", [flops * h for h in local["harness"]],
             train_flops_per_image=flops),
        side(f"fp32 peak: best {local['matmul_n']}^2 float32 matmul per round", "FLOP/s", local["matmul"]),
        **target("flops_share"), paired=True)
    out["allreduce_share"] = entry(
        side("grouped allreduce of the gradients alone, 2 workers", "s", [np.mean(r["allreduce_s"]) for r in two]),
        side("train step, 2 workers", "s", [np.mean(r["step_s"]) for r in two]), **target("allreduce_share"),
        paired=True)
    return out


def report(doc: dict) -> str:
    """bench.json as a table: one line per entry, then the per-optimizer table."""
    def num(x, fmt=".3g"):
        return "-" if x is None else format(x, fmt)

    lines = [f"bench.json  {doc['when']}  {doc['machine']['cpu_model']} x {doc['machine']['cpu_count']}  "
             f"{doc['duration_s']:.0f} s{'  (quick)' if doc['quick'] else ''}",
             f"{'entry':<24}{'ratio':>8}  {'95 % band':<17}{'target':>9}  {'meets':<6} numerator / denominator"]
    for key in TARGETS:
        e = doc[key]
        low, high = e["ci95"]
        band = f"[{num(low)}, {num(high)}]"
        tgt = "report" if e["target"] is None else f"{e['direction']} {e['target']:g}"
        meets = {True: "yes", False: "NO", None: "-"}[e["meets_target"]]
        n, d = e["numerator"], e["denominator"]
        lines.append(f"{key:<24}{num(e['ratio'], '.3f'):>8}  {band:<17}{tgt:>9}  {meets:<6} "
                     f"{num(n['mean'])} / {num(d['mean'])} {d['unit']}")
    table = pd.DataFrame(doc["optimizers"])[["optimizer", "workers", "step_ms", "step_ms_se", "step_ratio", "apply_ms",
                                            "apply_ratio", "allreduce_ms", "compute_ms", "images_per_s"]]
    lines += ["", table.round(3).to_string(index=False)]
    return "\n".join(lines)


def write(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return path


def add_arguments(p) -> None:
    """``python -m bench perf``'s arguments."""
    p.add_argument("--config", help="TOML run config giving the workload (--json without it: resnet8, "
                   "Fashion-MNIST, global batch 256)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--optimizers", default=None,
                   help="comma-separated registry names; the first is the baseline "
                   "(default momentum,nlcg-fr,nlcg-pr,rmsprop,lars,lamb; --json: the first four; "
                   "--json --quick: momentum,nlcg-fr)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per optimizer per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--out", help="also write the table to this CSV file")
    p.add_argument("--json", help="measure every bench.json entry (outside mpirun: it launches its own "
                   "workers), write it to this file and print it as a table")
    p.add_argument("--quick", action="store_true", help="with --json: reduced sizes, to check the machinery")


def main(args) -> int:
    """``python -m bench perf``: the per-optimizer step table (under mpirun for several workers), or with
    ``--json`` every bench.json ratio."""
    from bench import config

    overrides = args.overrides
    if args.json and not args.config:
        overrides = ["global_batch=256", *overrides]  # the default study's smallest batch
    cfg = config.load(args.config, overrides)
    if args.json:
        names = args.optimizers or (QUICK_OPTIMIZERS if args.quick else JSON_OPTIMIZERS)
        doc = bench(cfg, names.split(","), quick=args.quick)
        print(report(doc), flush=True)
        print(f"-> {write(doc, args.json)}", flush=True)
        return 0
    from bench import distributed

    world = distributed.init()
    table = run(cfg, (args.optimizers or OPTIMIZERS).split(","), args.steps, args.rounds, world)
    if world.is_chief:
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(table.round(3).to_string(index=False))
        if args.out:
            table.to_csv(args.out, index=False)
    return 0
