"""The child processes of ``bench perf --json``, launched by the parent, each timing one thing and printing
one JSON line (``MARKER {...}``, rank 0 only).

``python -m bench.perf.children MODE --config-json FILE ...`` (under ``mpirun -np N`` for several workers;
it sets up its environment as ``python -m bench`` does, before TensorFlow starts):

- ``throughput``: the harness's train step (``bench.perf.timing.setup``: make_train_step fed by
  train_dataset) after warm-up, ``--steps`` steps; with several workers also the gradient allreduce alone
  (one grouped Horovod allreduce of the model's gradient shapes), each step followed by one allreduce.
  ``--no-sync``: every rank trains its share as a world of one (no collective), Horovod and MPI running as
  in the job. ``--no-horovod`` (a plain process, no mpirun): Horovod is never initialised; the child is a
  world of one with the threads its environment gives it (the ceiling's processes).
- ``memory``: ONE step of the harness's train step at the config's global batch in micro-batches of its
  ``per_worker_batch`` (accumulation), then the process's peak resident memory (VmHWM of /proc/self/status).
- ``optimizers``: the per-optimizer table of ``bench.perf.optimizer_table.run``.
- ``sequence``: the default study's runs trained one after another in this process (``bench.perf.sequence``;
  ``--quick``: fewer); each run's timing columns.

Each child calls ``bench.distributed.init`` before anything touches TensorFlow's runtime (it sets the
thread pools, which cannot change after that), then reads the config; with ``--no-horovod`` it does not,
and TensorFlow takes its pools from TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS (set by the parent).
TensorFlow is imported inside the child-side functions, not at the top: ``__main__`` below sets the
environment TensorFlow reads when it starts, so nothing may import it before.

Parent side: ``launch`` runs a child with the harness's launch line (``bench.environment.relaunch_command``);
``scaling`` rotates ``mpirun -np 2``, ``-np 1``, a pair of plain 1-thread throughput children
(``launch_pair``: the ceiling, no synchronisation) and ``mpirun -np 2 ... --no-sync`` over rounds (new
processes per round: an idle Horovod job busy-polls MPI, so a job cannot wait beside the one being timed);
``memory`` runs the two batches in separate processes at once, so their peaks do not mix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import traceback
from dataclasses import replace
from pathlib import Path

from bench import environment
from bench.environment import mpi_defaults, quiet_tensorflow, relaunch_command, share_cores, under_mpi

MODULE = "bench.perf.children"  # how a child starts: python -m MODULE
MARKER = "BENCH_PERF_CHILD"
MEMORY_MICRO = 256  # images per micro-batch of the memory entry
MEMORY_WIDTH = 4  # base filters of the CIFAR ResNets in the memory entry: 384 micro-steps must fit the time
CHILD_TIMEOUT_S = 900
ROOT = Path(__file__).resolve().parents[2]  # children start here, as `python -m bench` does


# ------------------------------------------------------------------------------------------ child side
def _status_kib(field: str) -> int | None:
    """A memory line of /proc/self/status in KiB (``VmHWM``: the peak resident set, ``VmRSS``: the current)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _peak_kib() -> int:
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _reset_peak() -> bool:
    """Reset the process's peak resident set (VmHWM) to its current size (Linux: ``5`` to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _split(cfg, world):
    """(info, micro_batch, accumulation) of ``cfg`` over ``world``'s workers."""
    from bench import data, distributed

    return (data.info(cfg), *distributed.split_batch(cfg.global_batch, world.size, cfg.per_worker_batch))


def _throughput(cfg, world, steps: int, warmup: int, no_sync: bool = False) -> dict:
    """Seconds of ``steps`` train steps (``step_s``) and, on several workers, of one gradient allreduce after
    each (``allreduce_s``); images/s is global (the global batch over the mean step)."""
    from bench.perf.timing import gc_off, setup, timed

    info, micro, accumulation = _split(cfg, world)
    if no_sync:  # Horovod and MPI up on every rank, but each trains its share alone: no collective per step
        return _throughput_no_sync(cfg, world, micro, accumulation, info, steps, warmup)
    t = setup(cfg, world, micro, accumulation, info)
    timed(t.step, warmup)
    if world.size > 1:
        timed(t.allreduce, warmup)
    step_s, allreduce_s = [], []
    with gc_off():
        for _ in range(steps):
            step_s += timed(t.step, 1)
            if world.size > 1:
                allreduce_s += timed(t.allreduce, 1)
    return _sides(cfg, world, micro, accumulation, step_s, allreduce_s=allreduce_s,
                  images_per_s=cfg.global_batch * len(step_s) / sum(step_s))


def _throughput_no_sync(cfg, world, micro, accumulation, info, steps: int, warmup: int) -> dict:
    """Each rank times the harness step on its share of the global batch as a world of one (no allreduce,
    no wait for the other rank) while Horovod's background thread and MPI run as in a real job; images/s
    summed over the ranks (gathered over MPI)."""
    from bench import distributed
    from bench.perf.timing import gc_off, setup, timed

    step = setup(cfg, distributed.World(), micro, accumulation, info).step
    timed(step, warmup)
    if world.comm is not None:
        world.comm.Barrier()  # every rank starts timing together
    with gc_off():
        step_s = timed(step, steps)
    mine = micro * accumulation * len(step_s) / sum(step_s)
    ranks = world.comm.gather(mine, root=0) if world.comm is not None else [mine]
    return _sides(cfg, world, micro, accumulation, step_s, allreduce_s=[],
                  images_per_s=sum(ranks) if world.is_chief else mine, per_rank=ranks, no_sync=True)


def _sides(cfg, world, micro: int, accumulation: int, step_s: list[float], **measured) -> dict:
    """A throughput child's JSON: the split it ran, its step times (s) and ``measured``."""
    return {"workers": world.size, "threads": environment.threads(), "micro_batch": micro,
            "accumulation": accumulation, "global_batch": cfg.global_batch, "step_s": step_s, **measured}


def _memory(cfg, world) -> dict:
    """What ONE train step of ``cfg`` adds to the process's memory: ``step_peak_kib``, its peak resident set
    (the peak reset just before it where Linux allows, else the peak so far) over the resident set before
    it; also the whole process's peaks before and after (KiB) and the step's seconds."""
    from bench.perf.timing import setup, timed

    info, micro, accumulation = _split(cfg, world)
    step = setup(cfg, world, micro, accumulation, info).step
    peak_before = _peak_kib()
    reset = _reset_peak()
    rss_before = _status_kib("VmRSS") or 0
    step_s = timed(step, 1)[0]
    peak = _peak_kib()
    return {"global_batch": cfg.global_batch, "micro_batch": micro, "accumulation": accumulation,
            "width": cfg.width, "model": cfg.model, "peak_kib": peak, "peak_before_step_kib": peak_before,
            "rss_before_step_kib": rss_before, "peak_reset": reset,
            "step_peak_kib": peak - (rss_before if reset else peak_before), "step_s": step_s}


def main(argv=None) -> int:
    """One child: time the MODE of ``argv`` and print its JSON after ``MARKER`` (rank 0 only)."""
    from bench.perf.timing import WARMUP_STEPS

    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["throughput", "memory", "optimizers", "sequence"])
    p.add_argument("--config-json", required=True, help="RunConfig.to_dict() as JSON")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=WARMUP_STEPS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--optimizers", default=None, help="optimizers: comma-separated names (default: the "
                   "registry's perf set 'quick', optimizers.perf_table)")
    p.add_argument("--no-sync", action="store_true", help="throughput: every rank alone, no collective per step")
    p.add_argument("--no-horovod", action="store_true", help="a plain process: no Horovod, a world of one")
    p.add_argument("--quick", action="store_true", help="sequence: the short sequence")
    args = p.parse_args(argv)
    from bench import config, distributed

    # first: the thread pools cannot change once TF's runtime has started
    world = distributed.World() if args.no_horovod else distributed.init()
    cfg = config.make(json.loads(Path(args.config_json).read_text()))
    if args.mode == "throughput":
        out = _throughput(cfg, world, args.steps, args.warmup, args.no_sync)
    elif args.mode == "memory":
        out = _memory(cfg, world)
    elif args.mode == "sequence":
        from bench.perf import sequence

        out = sequence.child(world, args.quick)
    else:
        import optimizers
        from bench.perf.optimizer_table import run

        names = args.optimizers.split(",") if args.optimizers else optimizers.perf_table("quick")
        out = {"rows": run(cfg, names, args.steps, args.rounds, world).to_dict(orient="records")}
    if world.is_chief:
        print(f"{MARKER} {json.dumps(out)}", flush=True)
    return 0


def _main_or_abort(argv=None) -> int:
    """``main``; under MPI, an exception that escapes it aborts the whole job (bench.distributed.abort, exit
    1) after printing it, as ``python -m bench`` does: a peer left waiting in a collective would hang until
    the parent's timeout."""
    try:
        return main(argv)
    except Exception as e:
        if not under_mpi():
            raise
        traceback.print_exc()
        from bench.distributed import abort

        abort(f"perf child: uncaught {type(e).__name__}: {e}")
        return 1


# ------------------------------------------------------------------------------------------ parent side
def _env() -> dict:
    """The children's environment: this process's, without the share of the cores that this process was
    given (a child computes its own: share_cores), Open MPI allowed to run as root."""
    env = environment.child_environment()
    if env.get(environment.THREADS_SET_BY) == "bench":  # the parent's share of the cores, not the child's
        for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", environment.THREADS_SET_BY):
            env.pop(var, None)
    env.pop(environment.THREADS, None)
    # Open MPI refuses to run as root unless told (containers and CI run as root).
    return {**env, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2")}


def _command(workers: int, mode: str, path: Path, args: tuple, mpi: bool) -> list[str]:
    argv = [mode, "--config-json", str(path), *args]
    # the harness's own launch line (bench.environment), so that its mpirun options apply here too
    return relaunch_command(argv, workers, 1, module=MODULE) if mpi else [sys.executable, "-m", MODULE, *argv]


def _result(p, mode: str, workers: int, stdout: str, stderr: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(MARKER + " ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"perf child {mode} on {workers} worker(s) failed (exit {p.returncode}): "
                           f"{(stderr or stdout).strip()[-2000:]}")
    return json.loads(lines[-1][len(MARKER) + 1:])


@contextlib.contextmanager
def _config_file(cfg):
    """``cfg`` as a JSON file for a child's ``--config-json``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(cfg.to_dict()))
        yield path


def launch(workers: int, mode: str, cfg, *args: str, mpi: bool = True) -> dict:
    """Run one child (``mpirun -np workers`` when ``mpi``, else a plain process) on ``cfg``; its JSON."""
    with _config_file(cfg) as path:
        p = subprocess.run(_command(workers, mode, path, args, mpi), capture_output=True, text=True, env=_env(),
                           cwd=ROOT, timeout=CHILD_TIMEOUT_S)
    return _result(p, mode, workers, p.stdout, p.stderr)


def launch_concurrent(cfgs: list, mode: str, *args: str, env: dict | None = None) -> list[dict]:
    """One plain child (no MPI) per config in ``cfgs``, all at once; their JSON, in order."""
    env = {**_env(), **(env or {})}
    with contextlib.ExitStack() as stack:
        paths = [stack.enter_context(_config_file(c)) for c in cfgs]
        procs = [subprocess.Popen(_command(1, mode, path, args, False), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) for path in paths]
        outs = [p.communicate(timeout=CHILD_TIMEOUT_S) for p in procs]
    return [_result(p, mode, 1, *out) for p, out in zip(procs, outs, strict=True)]


def launch_pair(cfg, *args: str) -> list[dict]:
    """Two plain throughput children at once, one thread each, no MPI and no Horovod (never initialised):
    what two workers could reach on this host if synchronising cost nothing (the ceiling of
    scaling_2_workers)."""
    return launch_concurrent([cfg, cfg], "throughput", *args, "--no-horovod",
                             env={"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"})


def scaling(cfg, rounds: int, steps: int, warmup: int = 3) -> dict:
    """``rounds`` x (2 workers on ``cfg``, 1 worker on the same global batch, the ceiling: two plain
    1-thread processes at once, each on half the global batch, and ``no_sync``: the 2 workers' job with
    Horovod up but no collective per step), rotating which goes first.

    The one worker runs twice the micro-batch of each of the two, with the same accumulation
    (``bench.perf.timing.one_worker_split``). Returns the children's outputs per side (the ceiling's per
    round: both processes' images/s summed)."""
    from bench.perf.timing import one_worker_split, rotated

    micro1, _ = one_worker_split(cfg)
    sides = {2: cfg, 1: replace(cfg, per_worker_batch=micro1)}
    half = replace(cfg, global_batch=cfg.global_batch // 2)
    out = {2: [], 1: [], "ceiling": [], "no_sync": []}
    order = (2, 1, "ceiling", "no_sync")
    args = ("--steps", str(steps), "--warmup", str(warmup))
    for r in range(rounds):
        for side in rotated(order, r):
            if side == "ceiling":
                a, b = launch_pair(half, *args)
                out["ceiling"].append({"images_per_s": a["images_per_s"] + b["images_per_s"],
                                       "pair": [a["images_per_s"], b["images_per_s"]]})
            elif side == "no_sync":
                out["no_sync"].append(launch(2, "throughput", cfg, *args, "--no-sync"))
            else:
                out[side].append(launch(side, "throughput", sides[side], *args))
    return out


def memory(cfg, batches: tuple[int, ...], micro: int = MEMORY_MICRO, width: int = MEMORY_WIDTH) -> list[dict]:
    """One step at each global batch with micro-batches of ``micro``: one process each (their peaks do not
    mix), all at once (a peak is the process's own; they share only the cores, and time)."""
    small = replace(cfg, width=min(cfg.width, width), per_worker_batch=micro)
    return launch_concurrent([replace(small, global_batch=b) for b in batches], "memory")


def optimizers(cfg, names: list[str], steps: int, rounds: int, workers: int = 2) -> list[dict]:
    """The per-optimizer table (``bench.perf.optimizer_table.run``) on ``workers`` Horovod workers; one dict
    per row."""
    return launch(workers, "optimizers", cfg, "--optimizers", ",".join(names), "--steps", str(steps),
                  "--rounds", str(rounds))["rows"]


if __name__ == "__main__":
    # as bench.__main__ does first: these variables are read once, when TensorFlow and MPI start
    quiet_tensorflow()
    mpi_defaults()
    share_cores()
    sys.exit(_main_or_abort())
