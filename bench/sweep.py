"""Sweeps: a grid of runs from one TOML file, run in one MPI allocation, resumable.

A sweep file is a run config (the fields every run shares) plus a ``[grid]`` table of lists; every
combination of the lists is one run. ``[optimizer_hparams.NAME]`` tables add hyperparameters to the runs
of optimizer NAME only (``[hparams]`` applies to every run)::

    sweep = "mini"
    dataset = "fashion_mnist"
    model = "resnet8"
    [grid]
    optimizer = ["momentum", "nlcg-fr"]
    global_batch = [256, 4096]
    seed = [0, 1]
    [optimizer_hparams.nlcg-fr]
    line_search = "step"

``python -m bench sweep experiments/mini.toml --workers 2 --pack 1``: every run on 2 Horovod workers (without
the flags, the file's ``[launch]`` table's ``workers`` and ``pack``, else 1 and 1).
Launched outside MPI with ``workers x pack > 1``, the command re-launches itself under ``mpirun -np
workers*pack``; launched under ``mpirun -np N`` it uses those N ranks. With ``--pack K`` the ranks split into K
groups of ``N / K`` ranks (mpi4py), each with its own Horovod (``hvd.init(comm=group)``), and group k runs
the pending runs k, k + K, k + 2K, ... Every run is validated (config, data files, batch split) before any
trains. Runs whose run_id already has a ``complete`` or ``diverged`` row are skipped, so rerunning a sweep,
or a larger version of it, runs only what is missing, and a killed sweep resumes where it stopped (a run
cut off in the middle resumes from its last checkpoint when ``checkpoint_every_epochs`` is set, else
starts again: rows appear only when a run ends). A run that fails is recorded as
``failed`` and the sweep goes on; the next invocation retries it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shlex
from pathlib import Path

from bench import config
from bench.config import ConfigError, RunConfig
from bench.launch import mpi_size, relaunch_command, under_mpi

GRID = "grid"
LAUNCH = "launch"  # [launch] workers = W, pack = K: the file's own defaults for --workers / --pack
OPT_HPARAMS = "optimizer_hparams"
OPT_OVERRIDES = "optimizer_overrides"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep file resolved: its name and the runs of its grid, in grid order."""

    name: str
    runs: tuple[RunConfig, ...]
    grid: dict  # field -> list of values, as written
    launch: dict = dataclasses.field(default_factory=dict)  # [launch]: workers, pack (the CLI's win)


def _check_grid(path, grid: dict, where: str) -> None:
    for key, options in grid.items():
        if key == "hparams" or key not in config.FIELDS:
            valid = ", ".join(sorted(set(config.FIELDS) - {"hparams", "sweep", "output_dir"}))
            raise ConfigError(f"[{where}] key {key!r} is not a run config field; valid: {valid}")
        if not isinstance(options, list) or not options:
            raise ConfigError(f"[{where}] {key} = {options!r} must be a non-empty list of values")


def _points(grid: dict, per_opt_fields: dict):
    """Every combination of ``grid``'s lists, each expanded again by its optimizer's own fields
    (``[optimizer_overrides.NAME]``: a list there is that optimizer's own axis, e.g. its learning rates)."""
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo, strict=True))
        own = per_opt_fields.get(point.get("optimizer"), {})
        axes = {k: v if isinstance(v, list) else [v] for k, v in own.items()}
        for extra in itertools.product(*axes.values()):
            yield {**point, **dict(zip(axes, extra, strict=True))}


def load(path: str | Path, overrides: list[str] = ()) -> Sweep:
    """Read a sweep file, expand its grid(s) and check every run (ConfigError on the first bad one).

    ``[grid]`` is one table of lists (their product), or ``[[grid]]`` several such tables (the union of
    their products: e.g. every batch at one budget, plus several budgets at the largest batches).
    ``[optimizer_hparams.NAME]`` adds hyperparameters to optimizer NAME's runs, ``[optimizer_overrides.NAME]``
    run-config fields (``base_lr = 0.01``, or a list for that optimizer's own learning-rate grid)."""
    values = config.read_toml(path)
    values.setdefault("sweep", Path(path).stem)
    grids = values.pop(GRID, {})
    grids = grids if isinstance(grids, list) else [grids]
    per_opt = values.pop(OPT_HPARAMS, {})
    per_opt_fields = values.pop(OPT_OVERRIDES, {})
    launch = values.pop(LAUNCH, {})
    bad = {k: v for k, v in launch.items() if k not in ("workers", "pack") or type(v) is not int or v < 1} \
        if isinstance(launch, dict) else {LAUNCH: launch}
    if bad:
        raise ConfigError(f"{path}: [{LAUNCH}] {bad} is not valid; valid: workers = N, pack = K (integers >= 1)")
    if not all(isinstance(g, dict) for g in grids) or not isinstance(per_opt, dict) \
            or not isinstance(per_opt_fields, dict):
        raise ConfigError(f"{path}: [{GRID}] (or [[{GRID}]]), [{OPT_HPARAMS}] and [{OPT_OVERRIDES}] must be tables")
    for grid in grids:
        _check_grid(path, grid, GRID)
    for name, fields in per_opt_fields.items():
        _check_grid(path, {k: v if isinstance(v, list) else [v] for k, v in fields.items()},
                    f"{OPT_OVERRIDES}.{name}")
        if "optimizer" in fields:
            raise ConfigError(f"[{OPT_OVERRIDES}.{name}] cannot set optimizer; valid: any other run config field")
    for table, names in ((OPT_HPARAMS, per_opt), (OPT_OVERRIDES, per_opt_fields)):
        unknown_opt = sorted(set(names) - set(_registry_names()))
        if unknown_opt:
            raise ConfigError(f"[{table}] names unknown optimizer(s) {', '.join(unknown_opt)}; "
                              f"valid: {', '.join(_registry_names())}")
    base = config.apply_overrides(values, list(overrides))
    runs, seen = [], set()
    for grid in grids:
        for combo in _points(grid, per_opt_fields):
            point = {**base, **combo}
            opt = point.get("optimizer", RunConfig.optimizer)
            point["hparams"] = {**base.get("hparams", {}), **per_opt.get(opt, {})}
            try:
                cfg = config.make(point)
            except ConfigError as e:
                where = ", ".join(f"{k}={v}" for k, v in combo.items())
                raise ConfigError(f"{path} run ({where}): {e}") from None
            key = (cfg.results_dir, cfg.run_id(1))
            if key not in seen:  # grids may name the same run twice (overlapping tables, repeated values)
                seen.add(key)
                runs.append(cfg)
    if not runs:
        raise ConfigError(f"{path}: the grid has no runs")
    if len({c.sweep for c in runs}) > 1:
        raise ConfigError(f"{path}: every run of a sweep writes to one folder; do not put 'sweep' in [{GRID}]")
    shown = {}
    for grid in grids + [{k: v if isinstance(v, list) else [v] for k, v in f.items()} for f in per_opt_fields.values()]:
        for k, v in grid.items():
            shown.setdefault(k, [])
            shown[k] += [x for x in v if x not in shown[k]]
    return Sweep(name=runs[0].sweep, runs=tuple(runs), grid=shown, launch=launch)


def _registry_names() -> list[str]:
    import optimizers

    return optimizers.names()


def check(sweep: Sweep, workers: int) -> None:
    """Everything that can fail before training: data files and the batch split on ``workers`` ranks."""
    from bench import data, distributed

    for cfg in sweep.runs:
        data.check(cfg)
        distributed.split_batch(cfg.global_batch, workers, cfg.per_worker_batch)


def status(sweep: Sweep, workers: int):
    """One row per run: the grid values, its run_id on ``workers`` ranks, and done / pending / failed."""
    import pandas as pd

    from bench import claims, results

    folders = {cfg.results_dir for cfg in sweep.runs}
    stored = {folder: results.load_runs(folder) for folder in folders}
    running = {c.get("run_id"): c for folder in folders for c in claims.active_claims(folder)}
    rows = []
    for cfg in sweep.runs:
        rid = cfg.run_id(workers)
        found = stored[cfg.results_dir]
        found = found[found.run_id == rid]
        state = "pending"
        if rid in running:  # claimed: being trained (or its owner died: taken over within the lease)
            state = f"running ({running[rid].get('host')}:{running[rid].get('pid')})"
        if found.status.isin(["complete", "diverged"]).any():
            state = found[found.status.isin(["complete", "diverged"])].status.iloc[-1]
        elif len(found):
            state = "failed (will retry)"
        top1 = found.top1.iloc[-1] if len(found) else float("nan")
        rows.append({**{k: getattr(cfg, k) for k in sweep.grid}, "run_id": rid, "state": state, "top1": top1})
    return pd.DataFrame(rows)


def pending(sweep: Sweep, workers: int) -> list[RunConfig]:
    """The runs without a complete or diverged row, in grid order."""
    from bench import results

    done: set[str] = set()
    for folder in {cfg.results_dir for cfg in sweep.runs}:
        done |= results.completed_ids(folder)
    return [cfg for cfg in sweep.runs if cfg.run_id(workers) not in done]


def split_groups(pack: int):
    """Split MPI_COMM_WORLD into ``pack`` groups of consecutive ranks; returns (group index, comm)."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if world.size % pack:
        raise ConfigError(f"--pack {pack} does not divide the {world.size} MPI ranks; "
                          f"valid: a divisor of {world.size}")
    per = world.size // pack
    color = world.rank // per
    return color, world.Split(color=color, key=world.rank)


def claim_next(sweep: Sweep, workers: int, skip: set[str]):
    """Claim the first pending run not in ``skip``: (cfg, claims.Claim), or (None, None) when none is left.

    Called by a group's chief only. The store is read again for every run, so runs finished meanwhile by
    other sweep processes on the same folder are not trained again; a run is re-checked after claiming,
    since its owner may have finished it and released the claim between the two reads."""
    from bench import claims, results

    for cfg in pending(sweep, workers):
        run_id = cfg.run_id(workers)
        if run_id in skip:
            continue
        claim = claims.claim(cfg.results_dir, run_id)
        if claim is None:  # a live owner (another group, job or sweep process) has it
            continue
        if results.is_completed(cfg.results_dir, run_id):
            claim.release()
            continue
        return cfg, claim
    return None, None


def _from_chief(world, value):
    """Every rank of the group gets the chief's ``value``."""
    if world.size == 1:
        return value
    if world.comm is not None:
        return world.comm.bcast(value, root=0)
    import horovod.tensorflow as hvd

    return hvd.broadcast_object(value, root_rank=0, name="sweep_next")


def run(sweep: Sweep, pack: int = 1, say=print) -> int:
    """Run the pending runs of ``sweep`` on this MPI allocation (or this one process). Returns #failed.

    Each group's chief claims the next pending run (bench.claims: an atomic claim file with a heartbeat),
    and tells its ranks which; so any number of groups, sweep processes and cluster jobs on one results
    folder train every run once. A run that fails on any rank fails on all (train.run) and the group goes
    on with its next claim; this invocation does not retry it (the next one will)."""
    import keras

    from bench import distributed, train

    if pack > 1:
        group, comm = split_groups(pack)
        world = distributed.init(comm=comm)
    else:  # one group: Horovod on all ranks (MPI or Gloo), or one process
        group, world = 0, distributed.init()
    check(sweep, world.size)
    if world.is_chief and group == 0:
        todo = len(pending(sweep, world.size))
        say(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - todo} done, {todo} to run "
            f"on {pack} group(s) of {world.size} worker(s)")
    failed, tried, index = 0, set(), 0
    while True:
        claim = None
        if world.is_chief:
            cfg, claim = claim_next(sweep, world.size, tried)
            index = -1 if cfg is None else sweep.runs.index(cfg)
        index = _from_chief(world, index)
        if index < 0:
            break
        cfg = sweep.runs[index]
        tried.add(cfg.run_id(world.size))
        if world.is_chief:
            where = ", ".join(f"{k}={getattr(cfg, k)}" for k in sweep.grid)
            say(f"[group {group}] run {len(tried)}: {where}")
        try:
            row = train.run(cfg, world)
            if world.is_chief:
                say(f"[group {group}] {row['status']}: top1 {row['top1']:.4f}  {row['wall_time_s']:.1f} s")
        except ConfigError:
            raise
        except Exception as e:  # recorded as failed by train.run, or its results could not be written (WriteError)
            failed += 1
            if world.is_chief:
                say(f"[group {group}] failed: {type(e).__name__}: {e}")
        finally:
            if claim is not None:
                claim.release()
        keras.backend.clear_session()
    return failed


def main(args) -> int:
    """``python -m bench sweep FILE [--workers N] [--pack K] [--dry-run] [--set k=v ...]``."""
    sweep = load(args.file, args.overrides)
    workers = args.workers if args.workers is not None else sweep.launch.get("workers", 1)
    pack = args.pack if args.pack is not None else sweep.launch.get("pack", 1)
    if workers < 1 or pack < 1:
        raise ConfigError(f"--workers {workers} --pack {pack}: both must be >= 1")
    if under_mpi():
        size = mpi_size()
        if size and size % pack:
            raise ConfigError(f"--pack {pack} does not divide the {size} MPI ranks; valid: a divisor of {size}")
        workers = size // pack if size else workers
    if args.dry_run:
        check(sweep, workers)
        import pandas as pd

        table = status(sweep, workers)
        with pd.option_context("display.width", 200, "display.max_rows", 10_000):
            print(table.to_string(index=False))
        left = int(table.state.isin(["pending", "failed (will retry)"]).sum())
        print(f"{len(table)} runs on {workers} worker(s) each, {left} to run", flush=True)
        return 0
    if not under_mpi() and workers * pack > 1:
        check(sweep, workers)  # fail here, in one process, rather than in every rank
        argv = ["sweep", str(args.file), "--pack", str(pack)]
        for item in args.overrides:
            argv += ["--set", item]
        cmd = relaunch_command(argv, workers, pack)
        print("launching: " + shlex.join(cmd), flush=True)
        os.execvp(cmd[0], cmd)  # replaces this process: its exit code is mpirun's
    failed = run(sweep, pack)
    return 1 if failed else 0
