"""A projection, not a measurement: hours to train the paper's figure 8 setting on N GPUs, per optimizer.

``python -m bench project [--bench results/bench/bench.json] [--gpus 64,128,256,512,1024]
[--precision mixed_float16] [--allreduce-compression none] [--bandwidth-gbps 100] [--latency-us 5]
[--images-per-s-per-gpu X] [--optimizer-speedup X] [--out figures/projection]`` writes
``projected_wall_time.{csv,json,png,pdf}``; the figure and the JSON name the precision and the compression.

The setting (Adya et al. 2018, figure 8): ResNet-50 on ImageNet (1,281,167 training images), global batch
65,536, 90 epochs, so ``steps = ceil(90 x 1,281,167 / 65,536) = 1760``. One step on N GPUs takes

    compute + allreduce + optimizer            (no overlap: an upper bound; Horovod overlaps the first two)
    compute   = (65,536 / N) / images_per_s_per_gpu
    allreduce = 2 (N - 1) / N x bytes / bandwidth + 2 (N - 1) x latency     (one ring allreduce per step)
    optimizer = apply_s on ResNet-50's variables, measured on this CPU / optimizer_speedup

- The ring allreduce (Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
  workstations", JPDC 2009; the model of Thakur, Rabenseifner & Gropp, IJHPCA 2005): a reduce-scatter and
  an all-gather of N - 1 steps each, each step sending bytes / N over every link. bytes = 4 x parameters
  (float32 gradients, the harness's default, fused into one allreduce per step), 2 x parameters with
  ``--allreduce-compression fp16`` (the run config's ``allreduce_compression = "fp16"``).
- Defaults: 100 Gb/s InfiniBand EDR (4 lanes x 25 Gb/s = 12.5 GB/s per port, the InfiniBand Trade
  Association's EDR rate; Mellanox ConnectX-4 quotes 0.6 us port-to-port, MPI and NCCL add software
  latency: 5 us per message is taken, the upper end of 1-5 us). Within one node, V100s talk over NVLink 2
  (NVIDIA Tesla V100 whitepaper, 2017: 6 links x 25 GB/s per direction = 150 GB/s, i.e.
  ``--bandwidth-gbps 1200 --latency-us 2``); a ring over many nodes runs at its slowest link, the network.
- ``images_per_s_per_gpu`` (assumption), by ``--precision`` (``IMAGES_PER_S_PER_GPU``): NVIDIA
  DeepLearningExamples, TensorFlow/Classification/ConvNets/resnet50v1.5 README, "Training performance: NVIDIA
  DGX-1 (8x V100 16G)", 1 GPU, batch 256 (NGC TensorFlow 20.06): 1270 images/s in mixed precision + XLA
  (the harness's ``precision = "mixed_float16"``, ``jit_compile = true``; the default, since the harness
  runs it), 412 in FP32 (``precision = "float32"``). A V100 has no bfloat16 units: ``mixed_bfloat16`` is
  refused. That is ResNet-50 v1.5 (about 5 % slower than the v1 that keras.applications builds) and assumes
  the per-GPU rate holds at every N (65,536 / 1024 = 64 images per GPU per step is below the batch it was
  measured at). ``--images-per-s-per-gpu`` overrides it.
- ``parameters``: 25,583,592, the trainable weights of keras.applications.ResNet50 with 1000 classes
  (``bench.models.resnet50``; the 25,557,032 often quoted is torchvision's, which has no conv biases).
- The optimizer's cost: ``opt.apply`` measured on ResNet-50's own variables (25.6 M parameters, 214
  variables; bench.json's ``optimizer_apply_resnet50``, float32 as the harness keeps it in every precision),
  divided by ``optimizer_speedup`` (an assumption): by default the ratio of a V100's memory bandwidth
  (900 GB/s HBM2, the V100 whitepaper) to this machine's copy bandwidth measured in the same bench run, since
  an optimizer step is elementwise, so memory-bound.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bench.config import ConfigError
from bench.datasets import SPECS

IMAGENET_IMAGES = SPECS["imagenet"].train_size
BATCH = 65_536
EPOCHS = 90
RESNET50_PARAMETERS = 25_583_592  # trainable weights of keras.applications.ResNet50(classes=1000)
# V100 ResNet-50 training, images/s per GPU by the harness's precision: NVIDIA DeepLearningExamples (docstring)
IMAGES_PER_S_PER_GPU = {"mixed_float16": 1270.0, "float32": 412.0}
PRECISION = "mixed_float16"  # what the harness runs on a GPU (README "On GPUs")
GRADIENT_BYTES = {"none": 4, "fp16": 2}  # bytes per gradient on the wire, by allreduce_compression
V100_MEMORY_GBS = 900.0  # HBM2, NVIDIA Tesla V100 whitepaper
BANDWIDTH_GBPS, LATENCY_US = 100.0, 5.0  # InfiniBand EDR
GPUS = (64, 128, 256, 512, 1024)
NAME = "projected_wall_time"


def default_optimizers() -> list[str]:
    """What ``bench project`` projects without ``--optimizers``: the registry's perf set ``table``
    (optimizers.perf_set: momentum, rmsprop, nlcg-fr, nlcg-pr, lars, lamb), those whose ``opt.apply`` bench
    perf --json measures on ResNet-50."""
    import optimizers  # heavy (imports keras): only when --optimizers is not given

    return optimizers.perf_set("table")


def ring_allreduce_s(nbytes: float, workers: int, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """Seconds of one ring allreduce of ``nbytes`` over ``workers``: 2 (p-1)/p x bytes / bandwidth +
    2 (p-1) x latency (0 for one worker)."""
    p = workers
    return 2 * (p - 1) / p * nbytes / bandwidth_bytes_per_s + 2 * (p - 1) * latency_s


def steps(epochs: int = EPOCHS, images: int = IMAGENET_IMAGES, batch: int = BATCH) -> int:
    return math.ceil(epochs * images / batch)


def per_parameter_apply_s(bench: dict) -> dict[str, float]:
    """Seconds of ``opt.apply`` per parameter, per optimizer, measured on ResNet-50's variables (bench.json's
    ``optimizer_apply_resnet50``)."""
    rows = bench.get("optimizer_apply_resnet50") or []
    if not rows:
        raise ConfigError("bench.json has no 'optimizer_apply_resnet50' table (written before issue 20); write "
                          "it again with python -m bench perf --json PATH")
    return {r["optimizer"]: r["apply_ms"] / 1e3 / r["parameters"] for r in rows if r.get("apply_ms") is not None}


def project(apply_s_per_param: dict[str, float], gpus=GPUS, bandwidth_gbps: float = BANDWIDTH_GBPS,
            latency_us: float = LATENCY_US, images_per_s_per_gpu: float = IMAGES_PER_S_PER_GPU[PRECISION],
            optimizer_speedup: float = 1.0, parameters: int = RESNET50_PARAMETERS,
            gradient_bytes: int = 4) -> pd.DataFrame:
    """One row per (optimizer, GPUs): the step's parts in seconds and the projected hours of training."""
    n_steps = steps()
    rows = []
    for name, per_param in apply_s_per_param.items():
        for n in gpus:
            compute = BATCH / n / images_per_s_per_gpu
            allreduce = ring_allreduce_s(gradient_bytes * parameters, n, bandwidth_gbps * 1e9 / 8, latency_us * 1e-6)
            opt = parameters * per_param / optimizer_speedup
            step = compute + allreduce + opt
            rows.append({"optimizer": name, "gpus": n, "compute_s": compute, "allreduce_s": allreduce,
                         "optimizer_s": opt, "step_s": step, "steps": n_steps, "hours": n_steps * step / 3600})
    return pd.DataFrame(rows)


def figure(table: pd.DataFrame, assumptions: str, precision: str = PRECISION) -> Figure:
    """Projected hours against GPUs, one line per optimizer (log-log). Projection only: no measured data."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for name, g in table.groupby("optimizer", sort=False):
        ax.plot(g.gpus, g.hours, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted(table.gpus.unique()), [str(n) for n in sorted(table.gpus.unique())])
    ax.set_xlabel("GPUs")
    ax.set_ylabel("projected hours to train")
    ax.set_title("PROJECTION (a model, not measured): ResNet-50, ImageNet,\n"
                 f"batch {BATCH:,}, {EPOCHS} epochs, {precision} on V100s", fontsize=10)
    plain = FuncFormatter(lambda y, _: f"{y:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    fig.supxlabel(assumptions, fontsize=6)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="optimizer", fontsize=8)
    return fig


def add_arguments(p) -> None:
    """``python -m bench project``'s arguments."""
    p.add_argument("--bench", default="results/bench/bench.json", help="bench.json from perf --json")
    p.add_argument("--gpus", default="64,128,256,512,1024", help="comma-separated GPU counts")
    p.add_argument("--bandwidth-gbps", type=float, default=100.0,
                   help="ring link bandwidth, Gbit/s (100: InfiniBand EDR; 1200: NVLink 2 within a node)")
    p.add_argument("--latency-us", type=float, default=5.0, help="per-message latency of the ring, microseconds")
    p.add_argument("--precision", default=PRECISION,
                   help="the run config's precision on the GPUs: mixed_float16 (the default: 1270 img/s per V100, "
                   "mixed precision + XLA) or float32 (412 img/s)")
    p.add_argument("--allreduce-compression", default="none", help="the run config's allreduce_compression: "
                   "none (float32 gradients, 4 bytes each) or fp16 (2 bytes)")
    p.add_argument("--images-per-s-per-gpu", type=float, default=None,
                   help="ResNet-50 training throughput of one GPU (default: by --precision; an assumption)")
    p.add_argument("--optimizer-speedup", type=float, default=None,
                   help="GPU / this CPU speed of an optimizer step (default: 900 GB/s over the measured "
                   "memory bandwidth in bench.json)")
    p.add_argument("--optimizers", default=None, help="comma-separated optimizers to project (default: the "
                   "registry's perf set 'table', optimizers.perf_set, as bench perf --json times them)")
    p.add_argument("--out", default="figures/projection", help="output folder")


def main(args) -> int:
    """``python -m bench project``: the projected hours, written and named."""
    paths = write_projection(args)
    print(f"wrote {', '.join(str(p) for p in paths)}", flush=True)
    return 0


def write_projection(args) -> list[Path]:
    """``python -m bench project``: read bench.json, project, write the table (CSV + JSON) and the figure."""
    path = Path(args.bench)
    if not path.is_file():
        raise ConfigError(f"--bench {str(path)!r} does not exist; write it with python -m bench perf --json {path}")
    bench = json.loads(path.read_text())
    per_param = per_parameter_apply_s(bench)
    wanted = [o.strip() for o in args.optimizers.split(",") if o.strip()] if args.optimizers else default_optimizers()
    missing = [o for o in wanted if o not in per_param]
    per_param = {o: per_param[o] for o in wanted if o in per_param}
    if not per_param:
        have = ", ".join(r["optimizer"] for r in bench["optimizer_apply_resnet50"])
        raise ConfigError(f"bench.json has no apply_ms for {', '.join(wanted)}; it has {have}")
    if args.precision not in IMAGES_PER_S_PER_GPU:
        raise ConfigError(f"--precision {args.precision!r} is not projected; valid: "
                          f"{', '.join(IMAGES_PER_S_PER_GPU)} (a V100 has no bfloat16 units)")
    if args.allreduce_compression not in GRADIENT_BYTES:
        raise ConfigError(f"--allreduce-compression {args.allreduce_compression!r} is unknown; valid: "
                          f"{', '.join(GRADIENT_BYTES)}")
    rate = args.images_per_s_per_gpu or IMAGES_PER_S_PER_GPU[args.precision]
    try:
        gpus = [int(g) for g in args.gpus.split(",")]
    except ValueError:
        raise ConfigError(f"--gpus {args.gpus!r} must be comma-separated integers") from None
    if min(gpus) < 1 or min(args.bandwidth_gbps, rate) <= 0 or args.latency_us < 0:
        raise ConfigError("--gpus, --bandwidth-gbps and --images-per-s-per-gpu must be > 0, --latency-us >= 0")
    cpu_gbs = (bench.get("machine") or {}).get("memory_bandwidth_gbs")
    speedup = args.optimizer_speedup or (V100_MEMORY_GBS / cpu_gbs if cpu_gbs else None)
    if not speedup or speedup <= 0:
        raise ConfigError("bench.json has no machine.memory_bandwidth_gbs; give --optimizer-speedup")
    nbytes = GRADIENT_BYTES[args.allreduce_compression]
    table = project(per_param, gpus, args.bandwidth_gbps, args.latency_us, rate, speedup, gradient_bytes=nbytes)
    assumptions = {
        "projection": True, "model": "ResNet-50 (keras.applications)", "parameters": RESNET50_PARAMETERS,
        "images": IMAGENET_IMAGES, "global_batch": BATCH, "epochs": EPOCHS, "steps": steps(),
        "precision": args.precision, "allreduce_compression": args.allreduce_compression,
        "gradient_bytes": nbytes, "optimizer_precision": "float32 (weights, slots and apply in every precision)",
        "images_per_s_per_gpu": rate, "bandwidth_gbps": args.bandwidth_gbps,
        "latency_us": args.latency_us, "optimizer_speedup": speedup, "cpu_memory_bandwidth_gbs": cpu_gbs,
        "apply_s_per_parameter_measured": per_param, "bench_json": str(path), "bench_when": bench.get("when"),
        "step_model": "compute + ring allreduce + optimizer, no overlap (bench/perf/projection.py)",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{NAME}.csv", out / f"{NAME}.json", out / f"{NAME}.png", out / f"{NAME}.pdf"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(json.dumps({"assumptions": assumptions, "rows": table.to_dict(orient="records")}, indent=1))
    note = (f"assumed: {args.precision}, {rate:g} img/s per GPU, ring allreduce of {nbytes}-byte gradients at "
            f"{args.bandwidth_gbps:g} Gb/s + {args.latency_us:g} us, optimizer cost = its apply on ResNet-50 "
            f"measured on this CPU / {speedup:.3g}; no overlap")
    fig = figure(table, note, args.precision)
    for p in paths[2:]:
        fig.savefig(p, dpi=150)
    if missing:
        print(f"note: bench.json has no apply_ms for {', '.join(missing)}: not projected", flush=True)
    with pd.option_context("display.width", 200):
        print(table.pivot(index="gpus", columns="optimizer", values="hours").round(2).to_string(), flush=True)
    return paths
