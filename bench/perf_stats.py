"""The arithmetic of ``bench perf --json``: means and standard errors, a ratio's 95 % band, the entries of
bench.json, the model's FLOPs per image, and the machine block. No timing here (bench.perf_local and
bench.perf_child measure); everything is a pure function of its arguments, tested by hand.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import subprocess

import numpy as np

# Student t quantiles t_{0.975, df} for df = 1 .. 30; beyond, the normal's 1.96.
T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
        2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
        2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
INTERVAL_METHOD = ("delta method: ratio r = mean(a) / mean(b); a sample is one interleaved round (one child "
                   "process for the multi-process entries). Paired entries (both sides measured in the same "
                   "rounds): standard error sd(a_i - r b_i) / sqrt(n) / mean(b), which cancels the machine's "
                   "drift between rounds, band r +- t_{0.975, n - 1} x that; otherwise relative standard error "
                   "sqrt((se_a/mean_a)^2 + (se_b/mean_b)^2), band r +- t_{0.975, min(n_a, n_b) - 1} x r x that")
FLOPS_CONVENTION = ("Conv2D and Dense only: forward = 2 x multiply-accumulates (from output shapes and kernel "
                    "sizes; biases, BatchNorm, activations, pooling and the optimizer not counted); "
                    "forward + backward = 3 x forward (gradients of inputs and of weights each cost one forward)")


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (nan for df < 1)."""
    if df < 1:
        return math.nan
    return T975[df - 1] if df <= len(T975) else 1.959964


def mean_se(samples) -> tuple[float, float, int]:
    """(mean, standard error of the mean, n) of a list of numbers; se is nan for n < 2."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, 0
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return float(x.mean()), se, int(x.size)


def ratio_interval(mean_a: float, se_a: float, n_a: int, mean_b: float, se_b: float, n_b: int):
    """mean_a / mean_b and its 95 % band [low, high] by the delta method (see INTERVAL_METHOD).

    The band is (nan, nan) when either side has fewer than 2 samples."""
    r = mean_a / mean_b
    rel = math.sqrt((se_a / mean_a) ** 2 + (se_b / mean_b) ** 2)
    half = t975(min(n_a, n_b) - 1) * abs(r) * rel
    return r, (r - half, r + half)


def paired_ratio_interval(a, b):
    """mean(a) / mean(b) and its 95 % band when a_i and b_i were measured in the same round i (see
    INTERVAL_METHOD): the ratio estimator's standard error sd(a_i - r b_i) / sqrt(n) / mean(b), so that a
    round in which the machine ran slow for both sides moves the ratio little. (nan, nan) for n < 2."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same number of rounds, got {a.size} and {b.size}")
    r = float(a.mean() / b.mean())
    if a.size < 2:
        return r, (math.nan, math.nan)
    se = float((a - r * b).std(ddof=1) / math.sqrt(a.size) / abs(b.mean()))
    half = t975(a.size - 1) * se
    return r, (r - half, r + half)


def rotated(order, r: int) -> tuple:
    """``order`` started ``r`` places later (round ``r`` of an interleaved measurement), so that every item
    goes first as often as the others."""
    k = r % len(order)
    return (*order[k:], *order[:k])


def side(what: str, unit: str, samples, **extra) -> dict:
    """One side (numerator or denominator) of an entry: what it is, its unit, its samples and summary."""
    mean, se, n = mean_se(samples)
    return {"what": what, "unit": unit, "mean": mean, "se": se, "n": n,
            "samples": [float(s) for s in samples], **extra}


def entry(numerator: dict, denominator: dict, target: float | None, direction: str = ">=", note: str = "",
          paired: bool = False) -> dict:
    """A bench.json entry: the ratio of two sides measured in one run, its band, and the verdict.

    ``paired``: sample i of both sides comes from the same round (paired_ratio_interval); else the sides
    are treated as independent (ratio_interval).

    ``meets_target`` compares the point ratio with ``target`` (``direction`` ">=" or "<="); null when the
    entry is reported only (``target`` None) or the ratio is not finite."""
    if paired:
        r, (low, high) = paired_ratio_interval(numerator["samples"], denominator["samples"])
    else:
        r, (low, high) = ratio_interval(numerator["mean"], numerator["se"], numerator["n"],
                                        denominator["mean"], denominator["se"], denominator["n"])
    meets = None
    if target is not None and math.isfinite(r):
        meets = bool(r >= target) if direction == ">=" else bool(r <= target)
    return {"ratio": r, "ci95": [low, high], "interval": "paired" if paired else "independent", "target": target,
            "direction": direction if target is not None else None,
            "meets_target": meets, "numerator": numerator, "denominator": denominator, "note": note}


def finite_or_none(value):
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        return finite_or_none(value.item())
    return value


# ------------------------------------------------------------------------------------------ FLOPs
def layer_macs(layer) -> int:
    """Multiply-accumulates of one forward pass of ``layer`` for ONE example (0 for layers not counted).

    Conv2D: H_out x W_out x C_out x (k_h x k_w x C_in / groups) (the kernel is [k_h, k_w, C_in/groups, C_out]).
    Dense: (positions) x C_in x C_out, positions = product of the output's inner dimensions (1 for a vector)."""
    from keras import layers

    if isinstance(layer, layers.Conv2D) and not isinstance(layer, layers.DepthwiseConv2D | layers.Conv2DTranspose):
        kh, kw, cin_per_group, cout = layer.kernel.shape
        return int(np.prod(layer.output.shape[1:-1])) * cout * kh * kw * cin_per_group
    if isinstance(layer, layers.Dense):
        cin, cout = layer.kernel.shape
        return int(np.prod(layer.output.shape[1:-1], dtype=np.int64)) * cin * cout
    return 0


def forward_flops(model) -> int:
    """FLOPs of one forward pass for one example (2 x MACs of Conv2D and Dense; nested models included)."""
    total = 0
    for layer in model.layers:
        total += forward_flops(layer) if hasattr(layer, "layers") else 2 * layer_macs(layer)
    return total


def train_flops_per_image(model) -> int:
    """FLOPs of forward + backward for one example, by FLOPS_CONVENTION (3 x forward)."""
    return 3 * forward_flops(model)


# ------------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Copy bandwidth of this machine (GB/s): best of ``repeats`` numpy copies, counting read + write bytes.
    The per-parameter optimizer cost scales with it in ``bench project``."""
    import time

    src = np.ones(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def machine() -> dict:
    """Where the benchmark ran: CPUs, memory, library versions, git commit, load when it started."""
    import horovod
    import keras
    import tensorflow as tf

    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = first_line(["git", "-C", repo, "rev-parse", "HEAD"])
    dirty = first_line(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"])
    return {
        "host": platform.node(), "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(), "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
        "memory_bandwidth_gbs": memory_bandwidth_gbs(), "loadavg_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "horovod": horovod.__version__, "numpy": np.__version__, "mpi": first_line(["mpirun", "--version"]),
        "git_commit": (commit + "-dirty" if dirty else commit) or "unknown",
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
