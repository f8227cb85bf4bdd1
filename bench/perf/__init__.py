"""Speed at the hardware's limit, measured: ``python -m bench perf`` (and, kept apart, ``python -m bench
project``, a projection to GPUs fed by bench.json).

The package, by what each module measures or does (imports run down this list, never up; ``children`` never
imports this module or ``bench_json``):

- ``__init__`` (here): the ``perf`` command, ``add_arguments`` and ``main``.
- ``bench_json``: bench.json: every entry measured, assembled, printed as a table and written.
- ``optimizer_table``: the per-optimizer step-time table (step, ``opt.apply`` alone, allreduce alone).
- ``in_process``: the in-process comparisons (harness step and its bfloat16 and XLA variants, bare loop,
  input pipeline, matmul peak), each optimizer's apply on ResNet-50's variables, and the machine's memory
  copy bandwidth.
- ``children``: the child processes (``python -m bench.perf.children``) and their launch: scaling over
  workers, peak memory under accumulation, the optimizer table on 2 workers.
- ``timing``: the one timing helper (a clock that waits for TensorFlow, the garbage collector held off,
  the rotation of who goes first) and the set-up of a timed train step, used by every measuring module.
- ``ratios``: a ratio's 95 % band (delta method, paired or not), the entries and their verdicts.
- ``flops``: the model's training FLOPs per image.
- ``projection``: ``python -m bench project``, the ResNet-50 wall time on N GPUs (a model, not a
  measurement).

The method. Every comparison is of two things measured in the same run, interleaved in rounds, so that
machine noise hits both alike; each round starts one side later (``timing.rotated``), so that every side
goes first as often as the others; warm-up calls compile first; Python's garbage collector is held off
while timing (as ``timeit`` does: a collection of the graphs built during set-up would otherwise land in a
timed step). A ratio's band is paired where both sides ran in the same rounds (a round in which the machine
ran slow for both moves the ratio little).

Two modes.

``python -m bench perf --config X.toml --optimizers momentum,nlcg-fr,nlcg-pr`` (under mpirun for several
workers): the per-optimizer table (``optimizer_table``). For each optimizer it builds the same model from
the same seed and compiles the harness's own train step; then it times them in interleaved rounds, after
warm-up steps and one untimed interleaved round. It also times ``opt.apply`` alone on fixed gradients: the
optimizer's own cost, which is what NLCG adds over Momentum; and the gradient allreduce alone (one grouped
Horovod allreduce of the model's gradients; 0 on one worker, whose step has none). ``compute_ms`` is the
rest of the step: step - apply - allreduce (forward, backward, input pipeline; an estimate, as the parts
overlap). Reported: the mean step time, the standard deviation of single steps (``step_ms_sd``: how much a
step varies), the standard error of the mean over rounds (``step_ms_se``) and the half-width of its 95 %
Student t interval (``step_ms_ci95``), images/s (global), and each optimizer's ratio to the first one.

``python -m bench perf --json results/bench/bench.json [--config X.toml] [--quick]`` (outside mpirun: it
launches its own workers; without a config, the default study's workload: resnet8 on Fashion-MNIST,
global batch 256): bench.json (``bench_json``), printed as a table. Every entry is a ratio of two things
measured in the same run, interleaved in rounds, with both sides' samples, means, standard errors and
units, a 95 % band (``ratios.INTERVAL_METHOD``: the delta method, paired where both sides ran in the same
rounds), its target and ``meets_target`` (the point ratio against the target; null for a reported-only
entry):

- ``harness_vs_bare`` >= 0.95: the harness's train step (make_train_step, data from train_dataset, one
  worker on every core) in images/s over a bare tf.function loop on the same model, batch, loss (with L2)
  and optimizer (momentum), one fixed batch in memory (``in_process``).
- ``harness_vs_bare_study`` >= 0.8: the same at the default study's own shapes (``bench_json.STUDY``, as
  experiments/mini.toml trains: Fashion-MNIST at 8x8, resnet8 width 8, micro-batches of 1536 accumulated 3
  times for the global 4608), measured in its own interleaved rounds.
- ``bf16_vs_fp32`` >= 1.1 on a CPU with bfloat16 arithmetic (``avx512_bf16`` or AMX in /proc/cpuinfo,
  recorded as ``machine.cpu_bf16_flags``; reported only elsewhere): the harness step's images/s under
  ``precision = "mixed_bfloat16"`` over float32, the same rounds (paired). ``bf16_vs_fp32_study``
  (reported): the same at the study's shapes.
- ``xla_vs_plain`` and ``xla_vs_plain_study`` (reported): the harness step with ``jit_compile = true`` over
  the plain one, at the workload's and at the study's shapes, the same rounds (paired).
- ``scaling_2_workers`` >= 1.15: images/s of ``mpirun -np 2`` (each its share of the cores, from
  bench.distributed.init) over ``mpirun -np 1`` (every core; twice the micro-batch, same accumulation) at
  the same global batch, child processes alternated over rounds (``children``).
- ``nlcg_vs_momentum_step`` <= 1.05: NLCG-FR's step time over Momentum's (means of the same rounds, paired;
  the registry's ``optimizers.perf_method()`` over ``optimizers.perf_reference()``), from the per-optimizer
  table, run on 2 workers (the default study's set-up) and stored in full under ``optimizers`` (by default
  the study's momentum, nlcg-fr, nlcg-pr, rmsprop: the registry's perf set ``study``; ``--optimizers`` adds
  others, built-ins or plug-ins).
- ``accumulation_memory`` <= 1.2: the step's own peak memory at global batch 98304 over the one at 512,
  micro-batches of 256, each in its own process: the peak resident set during ONE step (VmHWM, reset just
  before the step through /proc/self/clear_refs) minus the resident set before it, so the process's
  set-up (TensorFlow, the data, the model) counts on neither side; the CIFAR ResNets at width 4 (384
  micro-steps must fit the time; the question is whether memory grows with accumulation).
- ``input_headroom`` >= 3: images/s of the input pipeline alone (train_dataset, no model) over the train
  step's (the harness side of harness_vs_bare).
- ``flops_share`` >= 0.25: achieved FLOP/s (the model's forward + backward FLOPs per image,
  ``flops.FLOPS_CONVENTION``, times the train step's images/s) over this machine's fp32 peak, measured
  in the same rounds as the best of a few 2048 x 2048 float32 matmuls (2 N^3 FLOPs each).
- ``allreduce_share`` (reported only): the gradient allreduce alone over the step, both on 2 workers.
- ``scaling_ceiling`` (reported only): two plain 1-thread processes training at once, each on half the
  global batch, no MPI and no Horovod (launched without mpirun, ``--no-horovod``: Horovod is never
  initialised, so no background thread), images/s summed, over the same 1-worker side: the hardware's
  ceiling for ``scaling_2_workers``; their gap is the cost of synchronising every step.
- ``scaling_no_sync`` (reported only): the 2 workers' job (``mpirun -np 2``, Horovod initialised, its
  background thread and MPI's progress running) with each rank training its half alone, no collective per
  step, over the same 1-worker side. It splits the gap: ceiling -> no_sync is what Horovod's and MPI's
  threads cost, no_sync -> scaling_2_workers what the per-step collective costs (the allreduce itself,
  ``allreduce_share``, and waiting for the slower rank).
- ``study_overhead`` <= 0.10, ``eval_share`` (reported), ``recompile_per_run`` <= 0.1 (``sequence``): the
  default study's own runs trained one after another in a 1-thread Horovod process, as a sweep group trains
  them, beside a second process without the kept train step (``BENCH_REUSE_COMPILED=0``, its figures as
  ``without_reuse``): the time outside optimizer steps and evaluations over the runs' time, the evaluations'
  share, and a later run's first step over the first run's of its shape.
- ``claim_ms_1k``, ``claim_ms_10k`` (reported; ``store``): a sweep chief's choice of its next run with 1,000
  and 10,000 runs finished in the folder (one new since its last claim), in ms, over the full read of the
  store that each claim made before ``results.RunsReader`` (``--quick``: 1,000 only).

bench.json also holds ``machine`` (bench.provenance: host, CPUs, model name, memory, versions, git commit;
the memory's copy bandwidth, the CPU's bfloat16 flags, the load when it started and ended), ``when``,
``duration_s`` and ``phase_s``, ``workload`` and ``study_workload`` (the configs), ``parameters`` (of the
measured model), ``optimizer_apply_resnet50`` (``opt.apply`` of each optimizer on ResNet-50's 25.6 M
parameters, with its 95 % interval over rounds: what ``bench project`` reads) and the sizes used
(``bench_json.FULL``: about 7-10 minutes on 2 cores). ``--quick`` runs every entry at reduced sizes
(``bench_json.QUICK``: fewer rounds and steps, batch 8192 for the memory entry, momentum and nlcg-fr only in
the table, the four study optimizers on ResNet-50: the registry's perf sets ``quick`` and ``study``,
``optimizers.perf_set``) to check the machinery, not the speed. Child
processes start as ``python -m bench.perf.children`` through the harness's own launch line
(``bench.environment.relaunch_command``), so launcher and thread settings of the harness apply to them too.

Light to import (no TensorFlow): ``python -m bench.perf.children`` imports this package before the child
sets up its environment, so the modules here are imported inside ``main``.
"""

from __future__ import annotations


def default_optimizers(json: bool = False, quick: bool = False) -> list[str]:
    """The optimizers ``bench perf`` times without ``--optimizers``: the registry's perf sets
    (optimizers.perf_table; the first is the reference of the ratios): ``table`` (momentum, nlcg-fr, nlcg-pr,
    rmsprop, lars, lamb), with ``--json`` ``study`` (the default study's four), with ``--json --quick``
    ``quick`` (momentum, nlcg-fr)."""
    import optimizers  # heavy (imports keras): not at this package's import

    return optimizers.perf_table("quick" if json and quick else "study" if json else "table")


def add_arguments(p) -> None:
    """``python -m bench perf``'s arguments."""
    p.add_argument("--config", help="TOML run config giving the workload (--json without it: resnet8, "
                   "Fashion-MNIST, global batch 256)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--optimizers", default=None,
                   help="comma-separated optimizer names: built-ins, plug-ins' entry-point names or "
                   "package.module:attribute; the first is the baseline (default: the registry's perf set "
                   "'table', optimizers.perf_table; --json: 'study'; --json --quick: 'quick')")
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
        from bench.perf import bench_json

        names = args.optimizers.split(",") if args.optimizers else default_optimizers(json=True, quick=args.quick)
        doc = bench_json.bench(cfg, names, quick=args.quick)
        print(bench_json.report(doc), flush=True)
        print(f"-> {bench_json.write(doc, args.json)}", flush=True)
        return 0
    import pandas as pd

    from bench import distributed
    from bench.perf import optimizer_table

    world = distributed.init()
    names = args.optimizers.split(",") if args.optimizers else default_optimizers()
    table = optimizer_table.run(cfg, names, args.steps, args.rounds, world)
    if world.is_chief:
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(table.round(3).to_string(index=False))
        if args.out:
            table.to_csv(args.out, index=False)
    return 0
