"""Where a study's time goes when one process trains run after run (issue 29): bench.json's
``study_overhead``, ``eval_share`` and ``recompile_per_run``.

A sweep group trains its runs one after another in one process (bench.sweep). ``child`` does the same with
runs of the default study itself (experiments/mini.toml: its 1-epoch runs at batches 4608 and 3072 of the
method its [claim] declares and of that claim's first baseline, NLCG-FR and Momentum, six seeds each, two
with --quick, in an order that interleaves the shapes), in a Horovod process of one 1-thread worker as the
study's groups are, timing each run from the call of ``bench.train.run`` to the end
of ``bench.train.between_runs`` (everything the sweep does per run but choosing it). The parent runs two such
processes at once, as the study packs two groups on 2 cores: one as the harness runs (the train step kept
per shape), one with ``BENCH_REUSE_COMPILED=0`` (every run builds and traces its own), so each figure has its
baseline from the same run.

- ``study_overhead`` = sum over runs of (elapsed - train_time_s - eval_time_s - the first step's own share) / sum
  of elapsed: set-up, compilation, retracing and host work, against the time the runs took (target <= 0.10).
  The first step (``compile_time_s``) is a compilation and an optimizer step: one mean step of the run
  (train_time_s over the later steps) is counted as training, the rest as overhead.
- ``eval_share`` = sum of eval_time_s / sum of elapsed (reported; with the evaluations per run and the
  seconds of one).
- ``recompile_per_run`` = the mean compile_time_s (a run's first step) of the runs after the first of their
  shape (global batch and optimizer) over the mean of those first runs' (target <= 0.1). A kept step's first
  step is one ordinary step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import tempfile
import time

from bench.perf.ratios import entry, side

BATCHES = (4608, 3072)  # mini's claim batches (ImageNet's 98,304 and 65,536 by steps per epoch)
SEEDS = {True: (0, 1), False: (0, 1, 2, 3, 4, 5)}  # quick, full: 24 runs, 4 of them first of their shape
TARGETS = {"study_overhead": (0.10, "<="), "eval_share": (None, None), "recompile_per_run": (0.1, "<=")}


def study_runs(quick: bool) -> list:
    """The default study's own RunConfigs for the sequence, from experiments/mini.toml: its 1-epoch runs at
    BATCHES of the method its [claim] declares and of that claim's first baseline, seed by seed, the shapes
    alternating (so every shape comes back after the others)."""
    from bench import grid
    from bench.perf.children import ROOT

    study = grid.load(ROOT / "experiments" / "mini.toml")
    pair = (study.claim["baselines"][0], study.claim["optimizer"])
    shapes = [(b, pair[(i + j) % 2]) for i, b in enumerate(BATCHES) for j in range(2)]
    runs = {(c.global_batch, c.optimizer, c.seed): c for c in study.runs if c.epochs == 1}
    return [runs[(b, o, s)] for s in SEEDS[quick] for b, o in shapes]


def child(world, quick: bool) -> dict:
    """Train ``study_runs`` one after another in this process (results in a temporary folder); each run's
    timing columns and its elapsed seconds."""
    from bench import results, train

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sequence-") as tmp:
        for cfg in study_runs(quick):
            cfg = dataclasses.replace(cfg, output_dir=tmp, tensorboard=False)
            t0 = time.perf_counter()
            row = train.run(cfg, world)
            train.between_runs()
            elapsed = time.perf_counter() - t0
            history = results.load_history(cfg.results_dir, row["run_id"])
            evals = int(history.top1.notna().sum()) if "top1" in history else 0
            rows.append({"global_batch": cfg.global_batch, "optimizer": cfg.optimizer, "seed": cfg.seed,
                         "steps": row["steps"],
                         "elapsed_s": elapsed, "evals": evals,
                         **{k: row[k] for k in ("wall_time_s", "train_time_s", "compile_time_s", "eval_time_s")}})
    return {"rows": rows}


def _firsts(rows: list[dict]) -> tuple[list[float], list[float]]:
    """compile_time_s of the first run of each shape, and of the later ones, in order."""
    seen, first, later = set(), [], []
    for r in rows:
        shape = (r["global_batch"], r["optimizer"])
        (later if shape in seen else first).append(r["compile_time_s"])
        seen.add(shape)
    return first, later


def step_s(r: dict) -> float:
    """The run's own first step as training: the mean of its later steps, at most its first step's time."""
    return min(r["compile_time_s"], r["train_time_s"] / (r["steps"] - 1)) if r["steps"] > 1 else 0.0


def overhead_s(r: dict) -> float:
    """A run's time outside optimizer steps and evaluations (see the module)."""
    return r["elapsed_s"] - r["train_time_s"] - step_s(r) - r["eval_time_s"]


def figures(rows: list[dict]) -> dict:
    """The three figures of one sequence's rows (see the module): point values and their parts."""
    elapsed = sum(r["elapsed_s"] for r in rows)
    evaluation = sum(r["eval_time_s"] for r in rows)
    first, later = _firsts(rows)
    evals = sum(r["evals"] for r in rows)
    return {"study_overhead": sum(overhead_s(r) for r in rows) / elapsed, "eval_share": evaluation / elapsed,
            "recompile_per_run": (sum(later) / len(later)) / (sum(first) / len(first)) if later else float("nan"),
            "elapsed_s": elapsed, "runs": len(rows), "evals_per_run": evals / len(rows),
            "eval_pass_s": evaluation / evals if evals else float("nan")}


def entries(kept: list[dict], fresh: list[dict]) -> dict:
    """bench.json's three entries from the rows of the harness's sequence (``kept``) and of the one without
    reuse (``fresh``, its figures beside each as ``without_reuse``)."""
    def target(key):
        return {"target": TARGETS[key][0], "direction": TARGETS[key][1] or ">="}

    def shares(rows, part, what):
        return (side(what, "s", [part(r) for r in rows]),
                side("each run's elapsed time (bench.train.run and between_runs)", "s", [r["elapsed_s"] for r in rows]))

    mine, theirs = figures(kept), figures(fresh)
    optimizers = " and ".join(dict.fromkeys(r["optimizer"] for r in kept))
    where = (f"{len(kept)} runs of experiments/mini.toml (1 epoch; batches 4608 and 3072; {optimizers}) "
             "one after another in one 1-thread Horovod process, a second process beside it without reuse")
    out = {}
    num, den = shares(kept, overhead_s, "each run's time outside optimizer steps and evaluations")
    out["study_overhead"] = entry(num, den, **target("study_overhead"), paired=True,
                                  note=f"{where}; without reuse: {theirs['study_overhead']:.3f}")
    num, den = shares(kept, lambda r: r["eval_time_s"], "each run's evaluations (eval_time_s)")
    out["eval_share"] = entry(num, den, **target("eval_share"), paired=True,
                              note=f"{where}; {mine['evals_per_run']:.1f} evaluations a run (every 0.5 epoch and at "
                                   f"the end), {mine['eval_pass_s']:.3f} s each; without reuse: "
                                   f"{theirs['eval_share']:.3f}, {theirs['eval_pass_s']:.3f} s each")
    first, later = _firsts(kept)
    out["recompile_per_run"] = entry(
        side("compile_time_s (first step) of the later runs of a shape", "s", later),
        side("compile_time_s of the first run of each shape", "s", first), **target("recompile_per_run"),
        note=f"{where}; without reuse the later runs' over the first's: {theirs['recompile_per_run']:.3f}")
    for key in out:
        out[key]["without_reuse"] = theirs[key]
        out[key]["figures"], out[key]["figures_without_reuse"] = mine, theirs
    return out


def measure(cfg, quick: bool) -> dict:
    """Both sequences at once (see the module); bench.json's three entries."""
    from bench import environment
    from bench.perf import children

    one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    args = ("--quick",) if quick else ()
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(children._config_file(cfg))
        procs = [subprocess.Popen(children._command(1, "sequence", path, args, False), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=children.ROOT,
                                  env={**children._env(), **one_thread, environment.REUSE_COMPILED: reuse})
                 for reuse in ("1", "0")]
        outs = [p.communicate(timeout=children.CHILD_TIMEOUT_S) for p in procs]
    kept, fresh = (children._result(p, "sequence", 1, *out)["rows"] for p, out in zip(procs, outs, strict=True))
    return entries(kept, fresh)
