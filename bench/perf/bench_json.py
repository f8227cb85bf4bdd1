"""bench.json: every entry measured (``bench``), assembled from the measurements (``entries``), printed as
a table (``report``) and written (``write``). The entries, their targets and the method are in the
package's docstring (bench.perf); the sizes of a run are ``FULL`` and ``QUICK`` here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench import data, distributed, environment
from bench.config import ConfigError, RunConfig
from bench.perf import children, in_process
from bench.perf.flops import FLOPS_CONVENTION
from bench.perf.optimizer_table import check_names
from bench.perf.ratios import INTERVAL_METHOD, entry, finite_or_none, side
from bench.perf.timing import call, one_worker_split
from bench.provenance import provenance

# (target, direction) of every bench.json entry; None: reported only
TARGETS = {"harness_vs_bare": (0.95, ">="), "scaling_2_workers": (1.15, ">="), "nlcg_vs_momentum_step": (1.05, "<="),
           "accumulation_memory": (1.2, "<="), "input_headroom": (3.0, ">="), "flops_share": (0.25, ">="),
           "allreduce_share": (None, None), "scaling_ceiling": (None, None), "scaling_no_sync": (None, None)}
# sizes of a full run (about 8-10 minutes on 2 cores) and of --quick
FULL = {"local_rounds": 12, "local_steps": 3, "scaling_rounds": 3, "scaling_steps": 10, "memory_batches": (512, 98304),
        "optimizer_steps": 4, "optimizer_rounds": 5, "matmul_n": 2048, "matmul_best_of": 3}
QUICK = {"local_rounds": 3, "local_steps": 2, "scaling_rounds": 1, "scaling_steps": 3, "memory_batches": (512, 8192),
         "optimizer_steps": 2, "optimizer_rounds": 2, "matmul_n": 1024, "matmul_best_of": 2}


def machine() -> dict:
    """bench.json's ``machine`` block: where it ran (bench.provenance), the memory's copy bandwidth (GB/s,
    measured now) and the 1-minute load average when it started (``bench`` adds the one at the end)."""
    return {**provenance(), "memory_bandwidth_gbs": in_process.memory_bandwidth_gbs(),
            "loadavg_1min_at_start": os.getloadavg()[0]}


def now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def bench(cfg: RunConfig, names: list[str], quick: bool = False) -> dict:
    """Measure every entry of bench.json on the workload of ``cfg`` (see bench.perf's docstring), the
    per-optimizer table on ``names`` (momentum and nlcg-fr first, always); returns the document (non-finite
    numbers as None). Must run outside MPI: it launches its own workers."""
    if environment.under_mpi():
        raise ConfigError("perf --json launches its own workers (mpirun -np 1 and 2); run it outside mpirun")
    names = ["momentum", "nlcg-fr", *[n for n in names if n not in ("momentum", "nlcg-fr")]]
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
    import horovod.tensorflow as hvd

    hvd.shutdown()  # Horovod: this process's background thread stays off the cores while children run
    scale = phase("scaling children", children.scaling, cfg, sizes["scaling_rounds"], sizes["scaling_steps"])
    memory = phase("memory children", children.memory, cfg, sizes["memory_batches"])
    table = phase("optimizer table", children.optimizers, cfg, names, sizes["optimizer_steps"],
                  sizes["optimizer_rounds"])
    doc.update(entries(local, scale, memory, table))
    doc["optimizers"] = table
    doc["parameters"] = local["parameters"]
    doc["machine"]["loadavg_1min_at_end"] = os.getloadavg()[0]
    return doc


def entries(local: dict, scale: dict, memory: list[dict], table: list[dict]) -> dict:
    """The bench.json entries from the measurements of in_process.run, children.scaling, children.memory and
    the per-optimizer table's rows (children.optimizers)."""

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
    """``doc`` as JSON at ``path`` (its folder made if need be; NaN refused: ``finite_or_none`` first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return path
