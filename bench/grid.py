"""A sweep file read and expanded into its runs (``load`` -> ``Sweep``): a run config plus ``[grid]`` lists (or
``[[grid]]`` tables, a union), ``[optimizer_hparams.NAME]``, ``[optimizer_overrides.NAME]`` and ``[launch]``;
see bench/sweep.py for the file's format and how its runs are trained. Every run is validated here (one
``ConfigError`` naming the first bad one) before anything trains."""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

from bench import config
from bench.config import ConfigError, RunConfig

GRID = "grid"
CLAIM = "claim"  # [claim]: the primary claim, declared before the data (see ``declaration``)
LAUNCH = "launch"  # [launch] workers = W, pack = K, max_crashes = M: the file's defaults for the CLI's flags
OPT_HPARAMS = "optimizer_hparams"
OPT_OVERRIDES = "optimizer_overrides"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep file resolved: its name and the runs of its grid, in grid order."""

    name: str
    runs: tuple[RunConfig, ...]
    grid: dict  # field -> list of values, as written
    launch: dict = dataclasses.field(default_factory=dict)  # [launch]: workers, pack, max_crashes (the CLI's win)
    claim: dict = dataclasses.field(default_factory=dict)  # [claim], defaults filled in (``declaration``)
    tuning: tuple = ("base_lr",)  # the fields optimizers are tuned in: base_lr, hparams, [optimizer_overrides]'s


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
    claim = values.pop(CLAIM, {})
    bad = {k: v for k, v in launch.items() if k not in ("workers", "pack", "max_crashes") or type(v) is not int
           or v < 1} if isinstance(launch, dict) else {LAUNCH: launch}
    if bad:
        raise ConfigError(f"{path}: [{LAUNCH}] {bad} is not valid; valid: workers = N, pack = K, max_crashes = M "
                          "(integers >= 1)")
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
    tuning = tuple(sorted({"base_lr"} | {k for fields in per_opt_fields.values() for k in fields}
                          | {f"hparams.{k}" for hp in per_opt.values() for k in hp}))
    return Sweep(name=runs[0].sweep, runs=tuple(runs), grid=shown, launch=launch,
                 claim=declaration(path, claim, runs), tuning=tuning)


CLAIM_KEYS = ("optimizer", "baseline", "global_batch", "epochs", "confirm_seeds")


def declaration(path, claim: dict, runs: list[RunConfig]) -> dict:
    """The sweep's primary claim from its ``[claim]`` table, defaults filled in and checked against the runs:

    - ``optimizer`` (default "nlcg-fr") against ``baseline`` ("best": the best of the baseline optimizers at
      each budget, chosen on the main seeds; or one optimizer's name),
    - at ``global_batch`` (default: the sweep's largest), pooled over ``epochs`` (default: every budget run
      at that batch),
    - ``confirm_seeds`` (default none): seeds that choose nothing. Configurations (the best baseline, a tuned
      learning rate) are chosen on the other seeds; every claim at a cell where these seeds ran is then
      computed on them alone.
    """
    if not isinstance(claim, dict) or set(claim) - set(CLAIM_KEYS):
        bad = claim if not isinstance(claim, dict) else sorted(set(claim) - set(CLAIM_KEYS))
        raise ConfigError(f"{path}: [{CLAIM}] {bad!r} is not valid; valid keys: {', '.join(CLAIM_KEYS)}")
    names = _registry_names()
    out = {"optimizer": claim.get("optimizer", "nlcg-fr"), "baseline": claim.get("baseline", "best"),
           "global_batch": claim.get("global_batch", max(c.global_batch for c in runs)),
           "confirm_seeds": claim.get("confirm_seeds", []), "declared": bool(claim)}
    if out["optimizer"] not in names:
        raise ConfigError(f"{path}: [{CLAIM}] optimizer = {out['optimizer']!r} is unknown; valid: {', '.join(names)}")
    if out["baseline"] != "best" and out["baseline"] not in names:
        raise ConfigError(f"{path}: [{CLAIM}] baseline = {out['baseline']!r} is unknown; valid: best, "
                          f"{', '.join(names)}")
    at = [c for c in runs if c.global_batch == out["global_batch"]]
    if not at:
        raise ConfigError(f"{path}: [{CLAIM}] global_batch = {out['global_batch']!r} is not run; valid: "
                          f"{', '.join(map(str, sorted({c.global_batch for c in runs})))}")
    budgets = sorted({c.epochs for c in at if not c.steps})  # step budgets: resolved by the report, in epochs
    out["epochs"] = claim.get("epochs", budgets)
    if not isinstance(out["epochs"], list) or (not out["epochs"] and "epochs" in claim) \
            or set(out["epochs"]) - set(budgets):
        raise ConfigError(f"{path}: [{CLAIM}] epochs = {out['epochs']!r} must be a list of the budgets run at batch "
                          f"{out['global_batch']}; valid: {budgets}")
    out["epochs"] = [float(e) for e in out["epochs"]]
    seeds = sorted({c.seed for c in at})
    confirm = out["confirm_seeds"]
    if not isinstance(confirm, list) or set(confirm) - set(seeds) or (confirm and set(seeds) <= set(confirm)):
        raise ConfigError(f"{path}: [{CLAIM}] confirm_seeds = {confirm!r} must list seeds run at batch "
                          f"{out['global_batch']} and leave others to choose on; seeds run there: {seeds}")
    return out


def declare(sweep: Sweep, source: str | Path, now: str) -> Path:
    """Write ``study.json`` into the sweep's results folder: the primary claim and the tuning fields, as the
    sweep file declares them before any run of this invocation trains. A declaration that changed since the
    folder's first keeps the earlier ones under ``previous`` (with their times), so a claim re-declared after
    results came in shows it."""
    import json

    from bench import atomic

    folder = sweep.runs[0].results_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.json"
    doc = {"sweep": sweep.name, "source": str(source), "claim": sweep.claim, "tuning_fields": list(sweep.tuning)}
    try:
        old = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        old = None
    if old and {k: old.get(k) for k in ("claim", "tuning_fields")} == {k: doc[k] for k in ("claim", "tuning_fields")}:
        return path
    previous = [] if not old else [*old.get("previous", []), {k: v for k, v in old.items() if k != "previous"}]
    doc = {**doc, "declared_at": now, "previous": previous}
    atomic.replace(path, lambda f: f.write((json.dumps(doc, indent=1) + "\n").encode()), token=str(os.getpid()))
    return path


def _registry_names() -> list[str]:
    import optimizers

    return optimizers.names()
