"""bench.json: every entry measured (``bench``), assembled from the measurements (``entries``), printed as
a table (``report``) and written (``write``). The entries, their targets and the method are in the
package's docstring (bench.perf); the sizes of a run are ``FULL`` and ``QUICK`` here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

import optimizers
from bench import data, distributed, environment, intervals
from bench.config import ConfigError, RunConfig
from bench.perf import children, in_process, sequence, store
from bench.perf.flops import FLOPS_CONVENTION
from bench.perf.optimizer_table import check_names
from bench.perf.ratios import INTERVAL_METHOD, entry, finite_or_none, mean_se, side
from bench.perf.timing import call, one_worker_split
from bench.provenance import provenance

# (target, direction) of every bench.json entry; None: reported only. bf16_vs_fp32's target holds only on a
# CPU with bfloat16 arithmetic (BF16_FLAGS); elsewhere it is reported only (``bf16_target``).
TARGETS = {"harness_vs_bare": (0.95, ">="), "harness_vs_bare_study": (0.8, ">="), "bf16_vs_fp32": (1.1, ">="),
           "scaling_2_workers": (1.15, ">="), "nlcg_vs_momentum_step": (1.05, "<="),
           "accumulation_memory": (1.2, "<="), "input_headroom": (3.0, ">="), "flops_share": (0.25, ">="),
           "allreduce_share": (None, None), "scaling_ceiling": (None, None), "scaling_no_sync": (None, None),
           "bf16_vs_fp32_study": (None, None), "xla_vs_plain": (None, None), "xla_vs_plain_study": (None, None),
           **sequence.TARGETS, "claim_ms_1k": (None, None), "claim_ms_10k": (None, None)}
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")  # /proc/cpuinfo flags of bfloat16 arithmetic
# the default study's shapes (experiments/mini.toml; tests/test_perf.py checks that they agree): one worker,
# micro-batches of 1536 accumulated 3 times, as each of mini's runs trains
STUDY = {"dataset": "fashion_mnist", "image_size": 8, "model": "resnet8", "width": 8, "per_worker_batch": 1536,
         "global_batch": 4608}
# sizes of a full run (7 minutes on 2 cores, 2026-11-30; up to ~10 beside other jobs) and of --quick
FULL = {"local_rounds": 12, "local_steps": 3, "study_rounds": 8, "study_steps": 2, "apply_rounds": 5, "apply_steps": 3,
        "scaling_rounds": 3, "scaling_steps": 10, "memory_batches": (512, 98304), "optimizer_steps": 4,
        "optimizer_rounds": 5, "matmul_n": 2048, "matmul_best_of": 3}
QUICK = {"local_rounds": 3, "local_steps": 2, "study_rounds": 2, "study_steps": 1, "apply_rounds": 2, "apply_steps": 1,
         "scaling_rounds": 1, "scaling_steps": 3, "memory_batches": (512, 8192), "optimizer_steps": 2,
         "optimizer_rounds": 2, "matmul_n": 1024, "matmul_best_of": 2}


def bf16_flags() -> list[str]:
    """The CPU's bfloat16 flags (BF16_FLAGS found in /proc/cpuinfo; [] elsewhere or without them)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in BF16_FLAGS if flag in flags]


def machine() -> dict:
    """bench.json's ``machine`` block: where it ran (bench.provenance), the memory's copy bandwidth (GB/s,
    measured now) and the 1-minute load average when it started (``bench`` adds the one at the end)."""
    return {**provenance(), "memory_bandwidth_gbs": in_process.memory_bandwidth_gbs(),
            "cpu_bf16_flags": bf16_flags(), "loadavg_1min_at_start": os.getloadavg()[0]}


def now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def table_names(names: list[str]) -> list[str]:
    """The per-optimizer table's optimizers for ``names``: the two sides of ``nlcg_vs_momentum_step`` first,
    always (the registry's ``perf_reference``, the baseline every ratio is over, and ``perf_method``:
    momentum, nlcg-fr), then the others of ``names`` in their order."""
    pair = [optimizers.perf_reference(), optimizers.perf_method()]
    return [*pair, *[n for n in dict.fromkeys(names) if n not in pair]]


def bench(cfg: RunConfig, names: list[str], quick: bool = False) -> dict:
    """Measure every entry of bench.json on the workload of ``cfg`` (see bench.perf's docstring), the
    per-optimizer table on ``table_names(names)``; returns the document (non-finite numbers as None). Must
    run outside MPI: it launches its own workers."""
    if environment.under_mpi():
        raise ConfigError("perf --json launches its own workers (mpirun -np 1 and 2); run it outside mpirun")
    names = table_names(names)
    check_names(names)
    doc, seconds = call(_measure, cfg, names, quick)
    doc["duration_s"] = seconds
    return finite_or_none(doc)


def _measure(cfg: RunConfig, names: list[str], quick: bool) -> dict:
    """bench.json's measurements at the sizes of ``FULL`` or ``QUICK``, phase by phase (each phase's seconds
    in ``phase_s``)."""
    sizes = QUICK if quick else FULL
    data.check(cfg)
    one_worker_split(cfg)  # the scaling entry needs a batch that splits over 2 workers
    distributed.init()  # one process, every core
    doc = {"when": now(), "machine": machine(), "quick": quick, "sizes": dict(sizes),
           "interval_method": INTERVAL_METHOD, "flops_convention": FLOPS_CONVENTION, "workload": cfg.to_dict()}
    phases = doc["phase_s"] = {}

    def phase(name, fn, *args, **kw):
        print(f"perf: {name} ...", file=sys.stderr, flush=True)
        out, phases[name] = call(fn, *args, **kw)
        print(f"perf: {name} done in {phases[name]:.0f} s", file=sys.stderr, flush=True)
        return out

    local = phase("in-process rounds", in_process.run, cfg, sizes["local_rounds"], sizes["local_steps"],
                  matmul_n=sizes["matmul_n"], matmul_best_of=sizes["matmul_best_of"])
    study_cfg = replace(cfg, **STUDY)
    study = phase("in-process rounds at the study's shapes", in_process.run, study_cfg, sizes["study_rounds"],
                  sizes["study_steps"], split=distributed.split_batch(STUDY["global_batch"], 1,
                                                                      STUDY["per_worker_batch"]), extras=False)
    doc["study_workload"] = study_cfg.to_dict()
    applied = phase("optimizer apply on ResNet-50", in_process.optimizer_apply,
                    optimizers.perf_set("study" if quick else "table"), sizes["apply_rounds"], sizes["apply_steps"])
    import horovod.tensorflow as hvd

    hvd.shutdown()  # Horovod: this process's background thread stays off the cores while children run
    scale = phase("scaling children", children.scaling, cfg, sizes["scaling_rounds"], sizes["scaling_steps"])
    memory = phase("memory children", children.memory, cfg, sizes["memory_batches"])
    table = phase("optimizer table", children.optimizers, cfg, names, sizes["optimizer_steps"],
                  sizes["optimizer_rounds"])
    doc.update(phase("the study's runs in sequence (2 processes)", sequence.measure, study_cfg, quick))
    doc.update(phase("the sweep's claim over a large store", store.claim_times, (1000,) if quick else (1000, 10000),
                     say=lambda line: print(line, file=sys.stderr, flush=True)))
    doc.update(entries(local, scale, memory, table, study, bf16_target=bool(doc["machine"]["cpu_bf16_flags"])))
    doc["optimizers"] = table
    doc["optimizer_apply_resnet50"] = apply_table(applied)
    doc["parameters"] = local["parameters"]
    doc["machine"]["loadavg_1min_at_end"] = os.getloadavg()[0]
    return doc


def apply_table(applied: dict) -> list[dict]:
    """in_process.optimizer_apply's rounds as rows: per optimizer the mean ms of one apply on ResNet-50's
    variables, its 95 % interval over rounds, and ms per million parameters (what bench project reads)."""
    rows = []
    for name, ms in applied["round_ms"].items():
        mean, se, n = mean_se(ms)
        rows.append({"optimizer": name, "apply_ms": mean, "apply_ms_ci95": intervals.t975(n - 1) * se if n > 1
                     else None, "rounds": n, "steps_per_round": applied["steps_per_round"],
                     "parameters": applied["parameters"], "variables": applied["variables"],
                     "apply_ms_per_million": mean / applied["parameters"] * 1e6, "round_ms": ms})
    return rows


def _variants(local: dict, what: str, **split) -> dict:
    """The harness step's variant entries of one in-process measurement (keys: bf16_vs_fp32, xla_vs_plain)."""
    fp32 = side(f"harness train step, float32 ({what})", "images/s", local["harness"], **split)
    out = {}
    if "harness_bf16" in local:
        out["bf16_vs_fp32"] = side(f"harness train step, mixed_bfloat16 ({what})", "images/s",
                                   local["harness_bf16"], **split), fp32
    if "harness_xla" in local:
        out["xla_vs_plain"] = side(f"harness train step, jit_compile = true ({what})", "images/s",
                                   local["harness_xla"], **split), fp32
    return out


def entries(local: dict, scale: dict, memory: list[dict], table: list[dict], study: dict | None = None,
            bf16_target: bool = True) -> dict:
    """The bench.json entries from the measurements of in_process.run (at the workload's shapes, and at the
    study's: ``study``), children.scaling, children.memory and the per-optimizer table's rows
    (children.optimizers). ``bf16_target``: the CPU has bfloat16 arithmetic (else bf16_vs_fp32 is reported
    only)."""

    def target(key, **kw):
        return {"target": TARGETS[key][0], "direction": TARGETS[key][1] or ">=", **kw}

    split = {"micro_batch": local["micro_batch"], "accumulation": local["accumulation"], "workers": 1}
    harness = side("harness train step (make_train_step + train_dataset, momentum)", "images/s", local["harness"],
                   **split)
    out = {"harness_vs_bare": entry(
        harness, side("bare tf.function loop, one fixed batch in memory", "images/s", local["bare"], **split),
        **target("harness_vs_bare"), paired=True)}
    for key, (num, den) in _variants(local, "the workload's shapes", **split).items():
        tgt = target(key) if key != "bf16_vs_fp32" or bf16_target else target("bf16_vs_fp32_study")
        out[key] = entry(num, den, **tgt, paired=True,
                         note="" if key != "bf16_vs_fp32" or bf16_target else "no bfloat16 flags: reported only")
    if study is not None:
        ssplit = {"micro_batch": study["micro_batch"], "accumulation": study["accumulation"], "workers": 1}
        out["harness_vs_bare_study"] = entry(
            side("harness train step at the study's shapes (mini: 8x8, resnet8 width 8)", "images/s",
                 study["harness"], **ssplit),
            side("bare tf.function loop at the study's shapes, one fixed batch in memory", "images/s", study["bare"],
                 **ssplit), **target("harness_vs_bare_study"), paired=True)
        for key, (num, den) in _variants(study, "the study's shapes", **ssplit).items():
            out[f"{key}_study"] = entry(num, den, **target(f"{key}_study"), paired=True)
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

    out["nlcg_vs_momentum_step"] = entry(optimizer_side(optimizers.perf_method()),
                                         optimizer_side(optimizers.perf_reference()),
                                         **target("nlcg_vs_momentum_step"), paired=True,
                                         note="the table's rounds rotate which optimizer goes first")
    big, small = max(memory, key=lambda m: m["global_batch"]), min(memory, key=lambda m: m["global_batch"])

    def memory_side(m):
        return side(f"the step's own peak resident memory (peak over the memory before it), one step at global "
                    f"batch {m['global_batch']}", "KiB", [m["step_peak_kib"]],
                    **{k: m[k] for k in ("micro_batch", "accumulation", "model", "width", "peak_kib",
                                         "peak_before_step_kib", "rss_before_step_kib", "peak_reset", "step_s")})

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
    for key in [k for k in TARGETS if k in doc]:
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
    if doc.get("optimizer_apply_resnet50"):
        apply = pd.DataFrame(doc["optimizer_apply_resnet50"])[["optimizer", "apply_ms", "apply_ms_ci95",
                                                                "apply_ms_per_million", "parameters"]]
        lines += ["", "opt.apply on ResNet-50's variables (bench project reads these):",
                  apply.round(3).to_string(index=False)]
    return "\n".join(lines)


def write(doc: dict, path: str | Path) -> Path:
    """``doc`` as JSON at ``path`` (its folder made if need be; NaN refused: ``finite_or_none`` first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return path
