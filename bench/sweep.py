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

An axis may be a hyperparameter (``"hparams.line_search" = ["step", "none"]``), and a ``[[grid]]`` table named
``variant = "NAME"`` (with ``compare = [...]``) holds runs the report compares with the study's own instead of
pooling them (bench.grid.Sweep.variants, plots.ablation).

``python -m bench sweep experiments/mini.toml --workers 2 --pack 1``: every run on 2 Horovod workers (without
the flags, the file's ``[launch]`` table's ``workers`` and ``pack``, else 1 and 1).
Launched outside MPI with ``workers x pack > 1``, the command re-launches itself under ``mpirun -np
workers*pack`` (passing ``--workers``, which the child checks); launched under ``mpirun -np N`` it uses those N
ranks, N / pack per run, and refuses a worker count (``--workers``, else the file's ``[launch] workers``) that
says otherwise: the runs would be other runs (their run_id counts the workers). With ``--pack K`` the ranks split into K
groups of ``N / K`` ranks (mpi4py), each with its own Horovod (``hvd.init(comm=group)``), and group k runs
the pending runs k, k + K, k + 2K, ... Every run is validated (config, data files, batch split) before any
trains. Runs whose run_id already has a ``complete`` or ``diverged`` row are skipped (rows of an older
identity rule count under their current id: bench.results, told where the sweep's data are), so rerunning a sweep,
or a larger version of it, runs only what is missing, and a killed sweep resumes where it stopped (a run
cut off in the middle resumes from its last checkpoint when ``checkpoint_every_epochs`` is set, else
starts again: rows appear only when a run ends). A run that fails is recorded as
``failed`` and the sweep goes on; the next invocation retries it, up to ``--max-failures`` failures in a row
(bench.attempts). Every line about a run names its run_id (and its grid values).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

from bench import attempts, log, search
from bench.config import ConfigError, RunConfig
from bench.environment import mpi_size, relaunch_command, under_mpi
from bench.grid import Sweep, load

_log = log.get("bench.sweep")


def check(sweep: Sweep, workers: int) -> None:
    """Everything that can fail before training: rows of a newer version in the results folder, data files, the
    batch split and evaluation's splits on ``workers`` ranks."""
    from bench import data, distributed, evaluate, results

    results.check_readable(_folder(sweep))  # rows of a newer version: refused before anything is written
    for cfg in sweep.runs:
        data.check(cfg)
        distributed.split_batch(cfg.global_batch, workers, cfg.per_worker_batch)
        evaluate.check(cfg, workers)


def _folder(sweep: Sweep) -> Path:
    return sweep.runs[0].results_dir  # load() makes every run of a sweep write to one folder


def _data_dirs(sweep: Sweep) -> dict:
    """{data set: data_dir} of the sweep's runs: where the data of rows written under the first identity rule
    are when their own folder holds none (bench.results.load_runs), so a moved study finds its finished runs."""
    return {cfg.dataset: cfg.data_dir for cfg in sweep.runs}


def status(sweep: Sweep, workers: int, max_crashes: int = attempts.MAX_CRASHES,
           max_failures: int = attempts.MAX_FAILURES):
    """One row per run: the grid values, its run_id on ``workers`` ranks, its state (complete, diverged,
    pending, running, failed or crashed and so retried, skipped (crashed) or skipped (failed)), its crashed
    attempts and its failed attempts in a row. A search adds, per study, its confirmation reruns once its
    trials are settled (the chosen trial on each confirmation seed), else one row "waiting for N trials"."""
    import pandas as pd

    from bench import leases, results

    stored = results.load_runs(_folder(sweep), _data_dirs(sweep))
    past = attempts.Past.of(stored, job="")
    running = {c.get("run_id"): c for c in leases.active_claims(_folder(sweep))}
    keys = list(sweep.grid) + (["seed"] if sweep.search is not None else [])
    rows = []
    for cfg in _every_run(sweep, workers, stored, past, max_crashes, max_failures):
        rid = cfg.run_id(workers)
        found = stored[stored.run_id == rid]
        finished = found[found.status.isin(results.DONE)]
        state = "pending"
        if len(finished):
            state = finished.status.iloc[-1]
        elif past.skipped(rid, max_crashes, max_failures):
            state = f"skipped ({past.skipped(rid, max_crashes, max_failures)})"
        elif rid in running:
            owner = running[rid]
            where = f"{owner.get('host')}:{owner.get('pid')}"
            state = (f"stale claim ({where}): recorded when next claimed" if leases.is_stale(owner)
                     else f"running ({where})")
        elif len(found):
            state = f"{found.status.iloc[-1]} (will retry)"
        top1 = found.top1.iloc[-1] if len(found) and "top1" in found else float("nan")
        rows.append({**_values(sweep, cfg, keys), "run_id": rid, "state": state,
                     "crashed": past.crashes.get(rid, 0), "failed": past.failed_in_a_row.get(rid, 0), "top1": top1})
    if sweep.search is not None:
        settled = _settled(_done(stored), past, max_crashes, max_failures)
        for first, left in search.waiting(sweep.search, workers, settled):
            rows.append({**_values(sweep, first, keys), "trial": "chosen", "seed": "confirm",
                         "run_id": "-", "state": f"waiting for {left} trial(s)", "crashed": 0, "failed": 0,
                         "top1": float("nan")})
    return pd.DataFrame(rows)


def _values(sweep: Sweep, cfg: RunConfig, keys: list[str]) -> dict:
    """A run's values of the sweep's axes (``hparams.NAME``: its hyperparameter, "-" where it takes the default),
    and, in a sweep with named tables, the variants it belongs to ("-": the study's own runs alone)."""
    from bench import grid, study

    d = cfg.to_dict()
    out = {k: "-" if (v := grid.axis_value(d, k)) is None and k.startswith(grid.HP) else v for k in keys}
    if sweep.variants:
        own, named = study.memberships(d, sweep.variants)
        out["variant"] = ", ".join(named) + (" (and the study's)" if own and named else "") if named else "-"
    return out


def _done(stored) -> set:
    from bench import results

    return set(stored.run_id[stored.status.isin(results.DONE)]) if len(stored) else set()


def _every_run(sweep: Sweep, workers: int, stored, past, max_crashes: int = attempts.MAX_CRASHES,
               max_failures: int = attempts.MAX_FAILURES) -> list[RunConfig]:
    """The sweep's runs known now: its grid's (a search's trials), then the confirmation reruns of every study
    whose trials are settled in ``stored``."""
    out = list(sweep.runs)
    if sweep.search is not None:
        settled = _settled(_done(stored), past, max_crashes, max_failures)
        for _, reruns in search.confirmations(sweep.search, workers, _finished_rows(stored), settled):
            out += reruns
    return out


def pending(sweep: Sweep, workers: int) -> list[RunConfig]:
    """The runs without a complete or diverged row, in grid order (a search's: its trials, then the confirmation
    reruns of the studies whose trials are settled)."""
    from bench import results

    stored = results.load_runs(_folder(sweep), _data_dirs(sweep))
    done = _done(stored)
    runs = _every_run(sweep, workers, stored, attempts.Past.of(stored, job="")) if sweep.search else sweep.runs
    return [cfg for cfg in runs if cfg.run_id(workers) not in done]


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


@dataclasses.dataclass
class Group:
    """This process's place in a sweep job: the job's name, its group, the group's world ranks."""

    job: str
    index: int
    ranks: list
    max_crashes: int = attempts.MAX_CRASHES
    max_failures: int = attempts.MAX_FAILURES
    tried: set = dataclasses.field(default_factory=set)  # run_ids this process's group took (any outcome)
    said: set = dataclasses.field(default_factory=set)  # skipped run_ids already reported


def claim_next(sweep: Sweep, workers: int, group: Group, say=_log.info):
    """Claim the next run to train: (cfg, leases.Claim), or (None, None) when none is left. Chief only.

    Skipped: runs finished, runs this group took, runs that failed or crashed in this job (any group's
    row), runs with ``max_crashes`` crashed attempts or ``max_failures`` failed rows in a row (said once).
    The store is read again at every call (the files published since the last call: results.RunsReader), so
    runs finished meanwhile by other sweep processes are not trained again. After claiming, the run's rows
    are read again, by name, before anything is recorded: since the table above was read its owner may have
    finished or failed it and released the claim, and a listing may lag on a shared file system; so a claim
    left by an attempt that stored its row is not recorded as a crash (bench.attempts.record_dead).
    A claim that took over a dead attempt records it then."""
    from bench import faults, leases, results

    faults.point("claim")
    stored = results.runs_reader(_folder(sweep), _data_dirs(sweep)).load(  # reads the files new since its last call
        ["run_id", "status", "job", "error", "started_at", "attempt"] + (["val_top1"] if sweep.search else []))
    past = attempts.Past.of(stored, group.job)
    done = _done(stored)
    for cfg in _every_run(sweep, workers, stored, past, group.max_crashes, group.max_failures):
        run_id = cfg.run_id(workers)
        if run_id in done or run_id in group.tried or run_id in past.failed_here:
            continue
        if _skipping(sweep, cfg, workers, group, past, say):
            continue
        claim = leases.claim(cfg.results_dir, run_id, extra={"job": group.job, "ranks": group.ranks})
        if claim is None:  # a live owner (another group, job or sweep process) has it
            continue
        try:
            rows = results.run_rows(cfg.results_dir, run_id, ["status", "job", "error", "started_at", "attempt"])
            now = attempts.Past.of(rows, group.job)
            if past.crashes.get(run_id, 0) > now.crashes.get(run_id, 0):  # rows of an older id rule: listed only
                now.crashes[run_id], now.last_crash[run_id] = past.crashes[run_id], past.last_crash.get(run_id, "?")
            if len(rows) and (rows.status.isin(results.DONE).any() or now.failed_here):
                claim.release()
                continue
            counted, text = attempts.record_dead(cfg, workers, claim, rows)
        except BaseException:
            claim.release()
            raise
        if text:
            say(f"[group {group.index}] an earlier attempt of run {_describe(sweep, cfg, workers)} {text}"
                + ("" if counted else " (not counted as a crash)"))
        if counted:
            now.crashes[run_id] = now.crashes.get(run_id, 0) + 1
            now.last_crash[run_id] = text
            now.failed_in_a_row.pop(run_id, None)
        if _skipping(sweep, cfg, workers, group, now, say):  # rows another job wrote meanwhile, or this crash
            claim.release()
            continue
        return cfg, claim
    return None, None


def _settled(done: set, past: attempts.Past, max_crashes: int, max_failures: int):
    """Whether a trial's run_id is settled for its study's choice: done (complete or diverged), or skipped for good
    (its crash or failure limit: infeasible, as a diverged trial is)."""
    return lambda rid: rid in done or bool(past.skipped(rid, max_crashes, max_failures))


def _finished_rows(stored) -> dict:
    """{run_id: (status, val_top1)} of the latest complete or diverged row of each run (search.choose's input)."""
    from bench import results

    if not len(stored):
        return {}
    fin = stored[stored.status.isin(results.DONE)].drop_duplicates("run_id", keep="last")
    vals = fin.val_top1 if "val_top1" in fin else [float("nan")] * len(fin)
    return {rid: (st, float(v) if v is not None else float("nan"))
            for rid, st, v in zip(fin.run_id, fin.status, vals, strict=True)}


def _skipping(sweep: Sweep, cfg: RunConfig, workers: int, group: Group, past: attempts.Past, say) -> bool:
    """Whether ``past`` says to skip the run (its crash or failure limit); the line saying so, once."""
    run_id = cfg.run_id(workers)
    why = past.skip_reason(run_id, group.max_crashes, group.max_failures)
    if why and run_id not in group.said:
        group.said.add(run_id)
        say(f"[group {group.index}] skipping run {_describe(sweep, cfg, workers)}: {why}")
    return bool(why)


def _describe(sweep: Sweep, cfg: RunConfig, workers: int) -> str:
    """The run's id and, when the sweep has a grid, its grid values: every line about a run names it."""
    values = ", ".join(f"{k}={v}" for k, v in _values(sweep, cfg, [*sweep.grid, *(["seed"] if sweep.search else [])]
                                                      ).items())
    return f"{cfg.run_id(workers)} ({values})" if values else cfg.run_id(workers)


def _agreed_check(sweep: Sweep, world) -> None:
    """``check`` on every rank (data files can differ between nodes); any rank's ConfigError on all."""
    from bench import distributed

    try:
        check(sweep, world.size)
        mine = None
    except ConfigError as e:
        mine = str(e)
    if world.size > 1 and world.comm is not None:
        try:
            errors = distributed.exchange(world.comm, world.rank, world.size, mine, "the sweep's checks")
        except distributed.PeersSilent as e:
            distributed.abort(str(e))
        mine = next((f"rank {r}: {e}" for r, e in enumerate(errors) if e is not None), None)
    if mine is not None:
        raise ConfigError(mine)


def _start(pack: int):
    """Horovod for this process's group, and the group's place in the job (its name agreed by all ranks)."""
    from bench import distributed

    job = attempts.new_job()
    comm_world = None
    if under_mpi():
        from mpi4py import MPI

        comm_world = MPI.COMM_WORLD
        if comm_world.size > 1:
            try:
                job = distributed.exchange(comm_world, comm_world.rank, comm_world.size, job, "the sweep's start")[0]
            except distributed.PeersSilent as e:
                distributed.abort(str(e))
    if pack > 1:
        index, comm = split_groups(pack)
        world = distributed.init(comm=comm)
    else:  # one group: Horovod on all ranks (MPI or Gloo), or one process
        index, world = 0, distributed.init()
    if comm_world is None and world.size > 1:  # Gloo: Horovod is the only channel
        job = distributed.from_chief(world, job, "sweep job")
    first = index * world.size
    world_rank = comm_world.rank if comm_world is not None else world.rank
    return world, Group(job, index, list(range(first, first + world.size))), world_rank


def _declared(sweep: Sweep, declared: tuple, world, world_rank: int, say) -> bool:
    """``study.json`` written by world rank 0 (bench.study.declare, ``declared`` = (source, time)) once every check
    passed, and every rank told before any trains (a bounded wait). False, said once, if it could not be written."""
    from bench import distributed
    from bench.study import declare

    error = None
    if world_rank == 0:
        try:
            declare(sweep, *declared)
        except OSError as e:
            error = f"cannot write {_folder(sweep) / 'study.json'}: {e}"
    try:
        if under_mpi():
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
            if comm.size > 1:
                error = distributed.exchange(comm, comm.rank, comm.size, error, "the study's declaration")[0]
        elif world.size > 1:  # Gloo: Horovod is the only channel
            error = distributed.from_chief(world, error, "the study's declaration")
    except distributed.PeersSilent as e:
        distributed.abort(str(e))
    if error is not None and world_rank == 0:
        _log.error(f"error: {error}")
    return error is None


def run(sweep: Sweep, pack: int = 1, say=_log.info, max_crashes: int = attempts.MAX_CRASHES,
        max_failures: int = attempts.MAX_FAILURES, declared: tuple | None = None) -> int:
    """Run the pending runs of ``sweep`` on this MPI allocation (or this one process). Returns #failed.

    Each group's chief claims the next run (claim_next) and tells its ranks which; so any number of groups,
    sweep processes and cluster jobs on one results folder train every run once. A run that fails on any
    rank fails on all (train.run) and the group goes on with its next claim; no group of this job tries it
    again (the next invocation will). A run whose process died natively is recorded as ``crashed`` by the
    next claimant and skipped after ``max_crashes`` such attempts, a run that keeps failing after
    ``max_failures`` failed rows in a row (bench.attempts). ``declared`` (the sweep file, the time): the study's
    declaration (``study.json``) is written once every check passed, before any run trains."""
    from bench import distributed, train

    world, group, world_rank = _start(pack)
    log.setup(world_rank, chief=world.is_chief)  # every group's chief shows its runs' progress
    group.max_crashes, group.max_failures = max_crashes, max_failures
    _agreed_check(sweep, world)
    if declared is not None and not _declared(sweep, declared, world, world_rank, say):
        return 1
    if world.is_chief and group.index == 0:
        todo = len(pending(sweep, world.size))
        if sweep.search is None:
            say(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - todo} done, {todo} to run "
                f"on {pack} group(s) of {world.size} worker(s) (job {group.job})")
        else:
            reruns = len(sweep.search.studies) * len(sweep.search.confirm_seeds)
            say(f"sweep {sweep.name}: a search of {len(sweep.search.studies)} studies, {len(sweep.runs)} trials and "
                f"{reruns} confirmation reruns; {todo} known to run now (reruns join as their studies' trials end) "
                f"on {pack} group(s) of {world.size} worker(s) (job {group.job})")
    failed, held = 0, None
    attempts.stop_on_sigterm(lambda: held)
    with attempts.FaultLog(_folder(sweep), group.job, world_rank):
        while True:
            choice = -1  # the run itself (a confirmation rerun is not in sweep.runs), or -1 (none left) / -2 (error)
            if world.is_chief:
                try:
                    cfg, held = claim_next(sweep, world.size, group, say)
                    choice = -1 if cfg is None else cfg
                except Exception as e:  # noqa: BLE001 - the group must hear of it, not wait for a run
                    _log.error(f"[group {group.index}] error: cannot choose the next run: {distributed.describe(e)}")
                    choice, failed = -2, failed + 1
            choice = distributed.from_chief(world, choice, "the next run")
            if isinstance(choice, int):
                break
            cfg = choice
            group.tried.add(cfg.run_id(world.size))
            if world.is_chief:
                say(f"[group {group.index}] run {len(group.tried)}: {_describe(sweep, cfg, world.size)}")
            ok = True
            try:
                row = train.run(cfg, world, claim=held, job=group.job)
                if world.is_chief:
                    say(f"[group {group.index}] {row['status']}: top1 {row['top1']:.4f}  {row['wall_time_s']:.1f} s")
            except ConfigError:
                raise
            except Exception as e:  # recorded as failed by train.run, or its results could not be written
                failed, ok = failed + 1, False
                if world.is_chief:
                    _log.error(f"[group {group.index}] failed: {type(e).__name__}: {e}")
            finally:
                if held is not None:
                    try:
                        held.release()
                    except OSError as e:  # the claim then goes stale; the run's row is what counts
                        _log.warning(f"[group {group.index}] warning: cannot release the claim on {held.run_id}: {e}")
                    held = None
            train.between_runs()
            if not ok and world.size > 1 and world.comm is None:
                if world.is_chief:
                    _log.warning(f"[group {group.index}] under Gloo (horovodrun) Horovod cannot restart after a failed "
                                 "run (no channel outside it to agree on): this invocation ends here; run it again "
                                 "to go on")
                else:  # the chief's exit status speaks for the group: horovodrun kills every process once one
                    failed = 0  # exits non-zero, so a peer's failure exit could cut the chief's line short
                break
    return failed


def add_arguments(p) -> None:
    """``python -m bench sweep``'s arguments."""
    p.add_argument("file", help="sweep file: a run config plus a [grid] table of lists")
    p.add_argument("--workers", type=int, default=None,
                   help="Horovod workers per run (re-launches under mpirun); default: the file's [launch] "
                   "workers, else 1")
    p.add_argument("--pack", type=int, default=None,
                   help="runs trained at once, each on its own group of workers; default: the file's [launch] "
                   "pack, else 1")
    p.add_argument("--max-crashes", type=int, default=None,
                   help="skip a run after this many attempts that died natively (no row; recorded as crashed "
                   "by the next claimant); default: the file's [launch] max_crashes, else 2")
    p.add_argument("--max-failures", type=int, default=None,
                   help="skip a run whose last this many attempts in a row failed (a failed row each, over "
                   "invocations); default: the file's [launch] max_failures, else 3")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field for every run")


def main(args) -> int:
    """``python -m bench sweep FILE [--workers N] [--pack K] [--max-crashes M] [--max-failures F] [--dry-run]
    [--set k=v ...]``."""
    sweep = load(args.file, args.overrides)
    asked = args.workers if args.workers is not None else sweep.launch.get("workers")
    workers = asked if asked is not None else 1
    pack = args.pack if args.pack is not None else sweep.launch.get("pack", 1)
    max_crashes = args.max_crashes if args.max_crashes is not None else \
        sweep.launch.get("max_crashes", attempts.MAX_CRASHES)
    max_failures = args.max_failures if args.max_failures is not None else \
        sweep.launch.get("max_failures", attempts.MAX_FAILURES)
    if workers < 1 or pack < 1 or max_crashes < 1 or max_failures < 1:
        raise ConfigError(f"--workers {workers} --pack {pack} --max-crashes {max_crashes} --max-failures "
                          f"{max_failures}: each must be >= 1")
    if under_mpi():
        size = mpi_size()
        if size and size % pack:
            raise ConfigError(f"--pack {pack} does not divide the {size} MPI ranks; valid: a divisor of {size}")
        if size and asked is not None and asked != size // pack:
            source = "--workers" if args.workers is not None else f"{args.file}'s [launch] workers ="
            raise ConfigError(f"{source} {asked} disagrees with this launch: {size} MPI rank(s) in {pack} group(s) "
                              f"(--pack {pack}) give {size // pack} worker(s) per run; valid: --workers "
                              f"{size // pack} here, or launch {asked * pack} ranks (mpirun -np {asked * pack}) "
                              f"for --workers {asked} --pack {pack}")
        workers = size // pack if size else workers
    if args.dry_run:
        check(sweep, workers)
        import pandas as pd

        table = status(sweep, workers, max_crashes, max_failures)
        with pd.option_context("display.width", 200, "display.max_rows", 10_000):
            print(table.to_string(index=False))
        left = int((table.state.isin(["pending"]) | table.state.str.endswith("(will retry)")
                    | table.state.str.startswith("stale claim")).sum())
        if sweep.search is None:
            print(f"{len(table)} runs on {workers} worker(s) each, {left} to run", flush=True)
        else:
            waiting = int(table.state.str.startswith("waiting").sum())
            print(f"{len(table) - waiting} runs known on {workers} worker(s) each, {left} to run; {waiting} studies "
                  f"waiting for their trials before {len(sweep.search.confirm_seeds)} confirmation reruns each",
                  flush=True)
        return 0
    if not under_mpi() and workers * pack > 1:
        check(sweep, workers)  # fail here, in one process, rather than in every rank
        argv = ["sweep", str(args.file), "--workers", str(workers), "--pack", str(pack), "--max-crashes",
                str(max_crashes), "--max-failures", str(max_failures)]
        for item in args.overrides:
            argv += ["--set", item]
        if getattr(args, "log_level", "INFO") != "INFO":
            argv[1:1] = ["--log-level", args.log_level]
        cmd = relaunch_command(argv, workers, pack)
        print("launching: " + shlex.join(cmd), flush=True)
        os.execvp(cmd[0], cmd)  # replaces this process: its exit code is mpirun's
    import datetime as dt

    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    failed = run(sweep, pack, max_crashes=max_crashes, max_failures=max_failures, declared=(args.file, now))
    return 1 if failed else 0
