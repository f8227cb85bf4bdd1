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
LAUNCH = "launch"  # [launch] workers = W, pack = K, max_crashes = M, max_failures = F: defaults for the CLI's flags
OPT_HPARAMS = "optimizer_hparams"
OPT_OVERRIDES = "optimizer_overrides"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep file resolved: its name and the runs of its grid, in grid order."""

    name: str
    runs: tuple[RunConfig, ...]
    grid: dict  # field -> list of values, as written
    launch: dict = dataclasses.field(default_factory=dict)  # [launch]: workers, pack, max_crashes, max_failures
    claim: dict = dataclasses.field(default_factory=dict)  # [claim], defaults filled in (``declaration``)
    roles: dict = dataclasses.field(default_factory=dict)  # optimizer -> baseline or method, [claim] applied
    tuning: tuple = ("base_lr",)  # the fields optimizers are tuned in: base_lr, hparams, [optimizer_overrides]'s


FOLDER_FIELDS = ("sweep", "output_dir")  # every run of a sweep writes to one folder: <output_dir>/<sweep>/


def _check_grid(path, grid: dict, where: str) -> None:
    for key, options in grid.items():
        if key == "hparams" or key not in config.FIELDS:
            valid = ", ".join(sorted(set(config.FIELDS) - {"hparams", *FOLDER_FIELDS}))
            hint = f" (hyperparameters: [{OPT_HPARAMS}.NAME] or [hparams])" if key == "hparams" else ""
            raise ConfigError(f"{path}: [{where}] key {key!r} is not a run config field{hint}; valid: {valid}")
        if key in FOLDER_FIELDS:
            raise ConfigError(f"{path}: [{where}] key {key!r} cannot vary: every run of a sweep writes to one "
                              f"folder (<output_dir>/<sweep>/); set {key} at the top level")
        if not isinstance(options, list) or not options:
            raise ConfigError(f"{path}: [{where}] {key} = {config.show(options)} must be a non-empty list of "
                              "values")


def _points(grid: dict, per_opt_fields: dict, default_optimizer):
    """Every combination of ``grid``'s lists, each expanded again by its optimizer's own fields
    (``[optimizer_overrides.NAME]``: a list there is that optimizer's own axis, e.g. its learning rates); a
    point without an optimizer in ``grid`` has ``default_optimizer``, the file's."""
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo, strict=True))
        opt = point.get("optimizer", default_optimizer)
        own = per_opt_fields.get(opt, {}) if isinstance(opt, str) else {}  # not a name: config.make refuses it
        axes = {k: v if isinstance(v, list) else [v] for k, v in own.items()}
        for extra in itertools.product(*axes.values()):
            yield {**point, **dict(zip(axes, extra, strict=True))}


def _where(combo: dict) -> str:
    """``global_batch=64, optimizer=nlcg-fr``: a grid point, on one line."""
    return ", ".join(f"{k}={v}" if str(v).isprintable() and len(str(v)) <= 80 else f"{k}={config.show(v)}"
                     for k, v in combo.items())


def _one_run(path, first: tuple, second: tuple) -> str:
    """The refusal of two grid points that differ and are one run (the same run_id): the fields, and why."""
    (a, at), (b, bt) = first, second
    fields = [f for f in config.FIELDS if getattr(a, f) != getattr(b, f)]
    why = "; ".join(f"{f} = {config.show(getattr(a, f))} and {config.show(getattr(b, f))}: {config.why_alike(a, f)}"
                    for f in fields)
    return (f"{path}: grid points ({_where(at)}) and ({_where(bt)}) are one run, the second would not train ({why}); "
            f"give {' and '.join(fields)} one value here (each value in a sweep of its own name to run both)")


def _grids(path, values: dict) -> list[dict]:
    """``[grid]`` or ``[[grid]]`` as a list of tables, each checked; no grid: one point, the file's values."""
    if GRID not in values:
        return [{}]
    grids = values.pop(GRID)
    grids = grids if isinstance(grids, list) else [grids]
    if not grids:
        raise ConfigError(f"{path}: {GRID} = [] has no tables; valid: [{GRID}] or [[{GRID}]] tables of lists")
    for n, grid in enumerate(grids, 1):
        where = f"[{GRID}]" if len(grids) == 1 else f"[[{GRID}]] table {n}"
        if not isinstance(grid, dict):
            raise ConfigError(f"{path}: {where} = {config.show(grid)} is not a table; valid: [{GRID}] or [[{GRID}]] "
                              "tables of lists (field = [value, ...])")
        if not grid:
            raise ConfigError(f"{path}: {where} is empty; valid: field = [value, ...] (a sweep of the file's values "
                              f"alone needs no [{GRID}])")
        _check_grid(path, grid, GRID)
    return grids


def _check_overrides(path, overrides: list[str], grids: list[dict], per_opt: dict, per_opt_fields: dict) -> None:
    """``--set`` of a field that the file varies would be ignored by the runs (their grid value wins): refused."""
    axes = {k for grid in grids for k in grid}
    own = {k: name for name, fields in per_opt_fields.items() for k in fields}
    own_hp = {k: name for name, hp in per_opt.items() for k in hp}
    for item in overrides:
        key, value = config.parse_override(item)
        if key in axes:
            raise ConfigError(f"{path}: --set {item!r}: {key} is a [{GRID}] axis of this file, whose values win over "
                              f"--set; valid: --set a field the grid does not list, or edit the [{GRID}]")
        if key in own:
            raise ConfigError(f"{path}: --set {item!r}: [{OPT_OVERRIDES}.{own[key]}] sets {key} for {own[key]}'s "
                              f"runs, which would not take --set; valid: a field no [{OPT_OVERRIDES}] sets")
        names = [key.split(".", 1)[1]] if key.startswith("hparams.") else \
            list(value) if key == "hparams" and isinstance(value, dict) else []
        for name in names:
            if name in own_hp:
                raise ConfigError(f"{path}: --set {item!r}: [{OPT_HPARAMS}.{own_hp[name]}] sets {name} for "
                                  f"{own_hp[name]}'s runs, which would not take --set; valid: a hyperparameter no "
                                  f"[{OPT_HPARAMS}] sets")


def load(path: str | Path, overrides: list[str] = ()) -> Sweep:
    """Read a sweep file, expand its grid(s) and check every run (ConfigError on the first bad one).

    ``[grid]`` is one table of lists (their product), or ``[[grid]]`` several such tables (the union of
    their products: e.g. every batch at one budget, plus several budgets at the largest batches).
    ``[optimizer_hparams.NAME]`` adds hyperparameters to optimizer NAME's runs, ``[optimizer_overrides.NAME]``
    run-config fields (``base_lr = 0.01``, or a list for that optimizer's own learning-rate grid).
    A run named twice with the same values (overlapping tables, a repeated value) is one run; two grid points
    that differ only where the run's identity does not look (``eval_every_epochs``, values that train alike)
    are refused, as the second would never train."""
    values = config.read_toml(path)
    unknown = sorted(set(values) - set(config.FIELDS) - set(config.SWEEP_TABLES))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: a run config field "
                          f"({', '.join(sorted(config.FIELDS))}) or a table: [{GRID}] or [[{GRID}]], "
                          f"[{OPT_HPARAMS}.NAME], [{OPT_OVERRIDES}.NAME], [{LAUNCH}], [{CLAIM}]")
    values.setdefault("sweep", Path(path).stem)
    grids = _grids(path, values)
    per_opt = values.pop(OPT_HPARAMS, {})
    per_opt_fields = values.pop(OPT_OVERRIDES, {})
    launch = values.pop(LAUNCH, {})
    if CLAIM in values and values[CLAIM] == {}:
        raise ConfigError(f"{path}: [{CLAIM}] is empty; valid keys: {', '.join(CLAIM_KEYS)} (no [{CLAIM}]: the "
                          "defaults, undeclared)")
    claim = values.pop(CLAIM, {})
    bad = {k: v for k, v in launch.items() if k not in ("workers", "pack", "max_crashes", "max_failures")
           or type(v) is not int or v < 1} if isinstance(launch, dict) else {LAUNCH: launch}
    if bad:
        raise ConfigError(f"{path}: [{LAUNCH}] {bad} is not valid; valid: workers = N, pack = K, max_crashes = M, "
                          "max_failures = F (integers >= 1)")
    for table, tables in ((OPT_HPARAMS, per_opt), (OPT_OVERRIDES, per_opt_fields)):
        what = "hyperparameters" if table == OPT_HPARAMS else "run config fields"
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: {table} = {config.show(tables)} is not a table; valid: [{table}.NAME] "
                              f"tables of {what}, one per optimizer NAME")
        for name, fields in tables.items():
            if not isinstance(fields, dict):
                raise ConfigError(f"{path}: [{table}] {name} = {config.show(fields)} is not a table; valid: "
                                  f"[{table}.{name}] with {what} as keys")
        unknown_opt = sorted(name for name in tables if not _is_optimizer(name))
        if unknown_opt:
            raise ConfigError(f"{path}: [{table}] names unknown optimizer(s) {', '.join(unknown_opt)}; "
                              f"valid: {', '.join(_registry_names())}")
    for name, fields in per_opt_fields.items():
        if "optimizer" in fields:
            raise ConfigError(f"{path}: [{OPT_OVERRIDES}.{name}] cannot set optimizer; valid: any other run config "
                              "field")
        _check_grid(path, {k: v if isinstance(v, list) else [v] for k, v in fields.items()},
                    f"{OPT_OVERRIDES}.{name}")
    _check_overrides(path, list(overrides), grids, per_opt, per_opt_fields)
    try:
        base = config.apply_overrides(values, list(overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    runs, seen = [], {}
    for grid in grids:
        for combo in _points(grid, per_opt_fields, base.get("optimizer", RunConfig.optimizer)):
            point = {**base, **combo}
            opt = point.get("optimizer", RunConfig.optimizer)
            point["hparams"] = {**base["hparams"], **(per_opt.get(opt, {}) if isinstance(opt, str) else {})}
            try:
                cfg = config.make(point)
            except ConfigError as e:
                raise ConfigError(f"{path} run ({_where(combo)}): {e}") from None
            first = seen.setdefault((cfg.results_dir, cfg.run_id(1)), (cfg, combo))
            if first[0] is cfg:
                runs.append(cfg)
            elif first[0] != cfg:  # the same values again (overlapping tables, repeated values) are one run
                raise ConfigError(_one_run(path, first, (cfg, combo)))
    if not runs:
        raise ConfigError(f"{path}: the grid has no runs")
    if len({c.results_dir for c in runs}) > 1:
        raise ConfigError(f"{path}: every run of a sweep writes to one folder; do not put 'sweep' in [{GRID}]")
    used = {c.optimizer for c in runs}
    for table, tables in ((OPT_HPARAMS, per_opt), (OPT_OVERRIDES, per_opt_fields)):
        idle = sorted(set(tables) - used)
        if idle:
            raise ConfigError(f"{path}: [{table}.{idle[0]}] applies to no run: no run uses optimizer {idle[0]}; "
                              f"valid: [{table}.NAME] for an optimizer the runs use ({', '.join(sorted(used))})")
    shown = {}
    for grid in grids + [{k: v if isinstance(v, list) else [v] for k, v in f.items()} for f in per_opt_fields.values()]:
        for k, v in grid.items():
            shown.setdefault(k, [])
            shown[k] += [x for x in v if x not in shown[k]]
    tuning = tuple(sorted({"base_lr"} | {k for fields in per_opt_fields.values() for k in fields}
                          | {f"hparams.{k}" for hp in per_opt.values() for k in hp}))
    declared = declaration(path, claim, runs)
    return Sweep(name=runs[0].sweep, runs=tuple(runs), grid=shown, launch=launch, claim=declared, tuning=tuning,
                 roles=roles(runs, declared))


CLAIM_KEYS = ("optimizer", "baseline", "baselines", "global_batch", "epochs", "confirm_seeds")


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def declaration(path, claim: dict, runs: list[RunConfig]) -> dict:
    """The sweep's primary claim from its ``[claim]`` table, defaults filled in and checked against the runs:

    - ``optimizer``, the method under test (default: the sweep's first optimizer, in grid order, whose role in
      the registry is ``method``; else its first), against ``baseline`` ("best": the best of ``baselines`` at
      each budget, chosen on the main seeds; or one optimizer's name), never against itself,
    - ``baselines``: the optimizers the best baseline is chosen among, in the primary claim and in every
      exploratory comparison (default: the sweep's optimizers whose registry role is ``baseline``, the claim's
      optimizer excepted),
    - at ``global_batch`` (default: the sweep's largest), pooled over ``epochs`` (default: every budget run
      at that batch),
    - ``confirm_seeds`` (default none): seeds that choose nothing. Configurations (the best baseline, a tuned
      learning rate) are chosen on the other seeds; every claim at a cell where these seeds ran is then
      computed on them alone.

    A declared claim (a ``[claim]`` table) must be one the runs answer: its optimizer and a baseline run at
    its batch.
    """
    if not isinstance(claim, dict) or set(claim) - set(CLAIM_KEYS):
        bad = claim if not isinstance(claim, dict) else sorted(set(claim) - set(CLAIM_KEYS))
        raise ConfigError(f"{path}: [{CLAIM}] {config.show(bad)} is not valid; valid keys: {', '.join(CLAIM_KEYS)}")
    names = _registry_names()  # the built-ins, for the messages; a plug-in's name is valid too (_is_optimizer)
    head = f"{path}: [{CLAIM}]"
    swept = list(dict.fromkeys(c.optimizer for c in runs))  # grid order
    registry = {o: _role(o) for o in swept}
    default = next((o for o in swept if registry[o] == "method"), swept[0])
    out = {"optimizer": claim.get("optimizer", default), "baseline": claim.get("baseline", "best"),
           "global_batch": claim.get("global_batch", max(c.global_batch for c in runs)),
           "confirm_seeds": claim.get("confirm_seeds", []), "declared": bool(claim)}
    opt, baseline, batch = out["optimizer"], out["baseline"], out["global_batch"]
    if not _is_optimizer(opt):
        raise ConfigError(f"{head} optimizer = {config.show(opt)} is unknown; valid: {', '.join(names)}")
    if baseline != "best" and not _is_optimizer(baseline):
        raise ConfigError(f"{head} baseline = {config.show(baseline)} is unknown; valid: best, {', '.join(names)}")
    bases = claim.get("baselines", [o for o in swept if registry[o] == "baseline" and o != opt])
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases) or len(set(bases)) < len(bases) \
            or set(bases) - set(swept) or (not bases and "baselines" in claim):
        raise ConfigError(f"{head} baselines = {config.show(bases)} must list optimizers the sweep runs, each once; "
                          f"valid: some of {', '.join(swept)}")
    out["baselines"] = bases
    if baseline == opt:
        raise ConfigError(f"{head} optimizer = {opt!r} and baseline = {baseline!r}: a claim against itself; valid: "
                          f"another optimizer as baseline, or best (the best of {', '.join(bases) or 'none'})")
    if baseline == "best" and opt in bases:
        raise ConfigError(f"{head} optimizer = {opt!r} is one of the baselines that baseline = 'best' chooses from "
                          f"({', '.join(bases)}): a claim against itself; valid: an optimizer outside them, or "
                          "baseline = one optimizer's name")
    batches = sorted({c.global_batch for c in runs})
    if type(batch) is not int or batch not in batches:
        raise ConfigError(f"{head} global_batch = {config.show(batch)} is not run; valid: "
                          f"{', '.join(map(str, batches))}")
    at = [c for c in runs if c.global_batch == batch]
    ran = sorted({c.optimizer for c in at})
    if claim and opt not in ran:
        raise ConfigError(f"{head} optimizer = {opt!r} is not run at global_batch {batch}; run there: {', '.join(ran)}")
    wanted = bases if baseline == "best" else (baseline,)
    if claim and not wanted:
        others = ", ".join(f"{o} ({registry[o]})" for o in swept if o != opt) or "none"
        raise ConfigError(f"{head} optimizer = {opt!r} against baseline = 'best': none of the sweep's other optimizers "
                          f"is a baseline by its registry role ({others}); valid: baselines = [...] naming the ones "
                          "to choose among, or baseline = one optimizer's name")
    if claim and not set(wanted) & set(ran):
        raise ConfigError(f"{head} baseline = {baseline!r}: no baseline ({', '.join(wanted)}) is run at global_batch "
                          f"{batch}; run there: {', '.join(ran)}")
    budgets = sorted({c.epochs for c in at if not c.steps})  # step budgets: resolved by the report, in epochs
    epochs = out["epochs"] = claim.get("epochs", budgets)
    if not isinstance(epochs, list) or (not epochs and "epochs" in claim) or not all(map(_number, epochs)) \
            or set(epochs) - set(budgets) or len(set(epochs)) < len(epochs):
        raise ConfigError(f"{head} epochs = {config.show(epochs)} must be a list of the budgets run at batch "
                          f"{batch}, each once; valid: {budgets}")
    out["epochs"] = [float(e) for e in epochs]
    seeds = sorted({c.seed for c in at})
    confirm = out["confirm_seeds"]
    if not isinstance(confirm, list) or not all(type(s) is int for s in confirm) or len(set(confirm)) < len(confirm) \
            or set(confirm) - set(seeds) or (confirm and set(seeds) <= set(confirm)):
        raise ConfigError(f"{head} confirm_seeds = {config.show(confirm)} must list seeds run at batch {batch}, each "
                          f"once, and leave others to choose on; seeds run there: {seeds}")
    return out


def roles(runs, claim: dict) -> dict:
    """{optimizer: "baseline" or "method"} for every optimizer of the sweep, in grid order: the registry's role
    (optimizers.role; a plug-in's bench_role), overridden by the claim: its optimizer is the method under test,
    its baselines (and a named baseline) are baselines. What ``study.json`` records and the report reads."""
    out = {o: _role(o) for o in dict.fromkeys(c.optimizer for c in runs)}
    for name in [*claim.get("baselines", []), *([claim["baseline"]] if claim.get("baseline") not in (None, "best")
                                                else [])]:
        if name in out:
            out[name] = "baseline"
    if claim.get("optimizer") in out:
        out[claim["optimizer"]] = "method"
    return out


def _role(name: str) -> str:
    import optimizers

    return optimizers.role(name)


def declare(sweep: Sweep, source: str | Path, now: str) -> Path:
    """Write ``study.json`` into the sweep's results folder: the primary claim, the roles of the sweep's
    optimizers, the tuning fields and the target top-1 (when the runs share one), as the sweep file declares
    them before any run of this invocation trains. A declaration that changed since the folder's first keeps the
    earlier ones under ``previous`` (with their times), so a claim re-declared after results came in shows it (a
    folder declared before roles were recorded is not re-declared for their arrival alone)."""
    import json

    from bench import atomic

    folder = sweep.runs[0].results_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.json"
    doc = {"sweep": sweep.name, "source": str(source), "claim": sweep.claim, "roles": sweep.roles,
           "tuning_fields": list(sweep.tuning)}
    targets = sorted({c.target_top1 for c in sweep.runs})
    if len(targets) == 1 and targets[0] > 0:  # outside the run id: the report re-evaluates steps to it (plots)
        doc["target_top1"] = targets[0]
    try:
        old = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        old = None

    def declared(d: dict) -> dict:  # what a declaration says; keys it did not have yet do not make it another
        keys = [k for k in ("claim", "roles", "tuning_fields", "target_top1") if k in old or k != "roles"]
        claim = {k: v for k, v in (d.get("claim") or {}).items() if k in (old.get("claim") or {})}
        return {**{k: d.get(k) for k in keys}, "claim": claim}

    if isinstance(old, dict) and declared(old) == declared(doc):
        return path
    old = old if isinstance(old, dict) else None  # a corrupt one is replaced (the report refuses to read it)
    previous = [] if not old else [*old.get("previous", []), {k: v for k, v in old.items() if k != "previous"}]
    doc = {**doc, "declared_at": now, "previous": previous}
    atomic.replace(path, lambda f: f.write((json.dumps(doc, indent=1) + "\n").encode()), token=str(os.getpid()))
    return path


def _registry_names() -> list[str]:
    import optimizers

    return optimizers.names()


def _is_optimizer(name) -> bool:
    """Whether ``name`` names an optimizer: a built-in, or a plug-in the registry finds."""
    import optimizers

    if not isinstance(name, str):
        return False
    try:
        optimizers.check_hparams(name, {})
    except ValueError:
        return False
    return True
