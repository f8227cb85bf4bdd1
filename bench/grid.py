"""A sweep file read and expanded into its runs (``load`` -> ``Sweep``): a run config plus ``[grid]`` lists (or
``[[grid]]`` tables, a union), ``[optimizer_hparams.NAME]``, ``[optimizer_overrides.NAME]`` and ``[launch]``;
see bench/sweep.py for the file's format and how its runs are trained. Every run is validated here (one
``ConfigError`` naming the first bad one) before anything trains."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from bench import config, search
from bench.config import ConfigError, RunConfig
from bench.study import CLAIM, CLAIM_KEYS, _is_optimizer, _registry_names, declaration, declare, roles  # noqa: F401 - re-exported

GRID = "grid"
LAUNCH = "launch"  # [launch] workers = W, pack = K, max_crashes = M, max_failures = F: defaults for the CLI's flags
OPT_HPARAMS = "optimizer_hparams"
OPT_OVERRIDES = "optimizer_overrides"
HP = "hparams."  # a [[grid]] axis "hparams.NAME" = [...]: the optimizer hyperparameter NAME's values
VARIANT, COMPARE = "variant", "compare"  # a [[grid]] table's name as a variant, and what its runs are compared with


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
    search: object = None  # bench.search.Search of a [search] table: ``runs`` are its trials; None: a grid
    # name -> {"compare": [optimizer, ...], "by_optimizer": {optimizer: {axis: [value, ...]}}}: the [[grid]]
    # tables named ``variant = "NAME"`` (ablations, rules, other settings), which the report draws and compares
    # on their own and never pools with the study's other runs (bench.study.variant_of reads a run's back)
    variants: dict = dataclasses.field(default_factory=dict)


FOLDER_FIELDS = ("sweep", "output_dir")  # every run of a sweep writes to one folder: <output_dir>/<sweep>/


def _check_grid(path, grid: dict, where: str) -> None:
    for key, options in grid.items():
        if where == GRID and key.startswith(HP) and key != HP:  # a hyperparameter's axis (checked per run)
            pass
        elif key == "hparams" or key not in config.FIELDS:
            valid = ", ".join(sorted(set(config.FIELDS) - {"hparams", *FOLDER_FIELDS}))
            hint = f" (hyperparameters: \"hparams.NAME\" = [...], [{OPT_HPARAMS}.NAME] or [hparams])" \
                if key.startswith("hparams") else ""
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


def _grids(path, values: dict) -> tuple[list[dict], list[dict]]:
    """``[grid]`` or ``[[grid]]`` as a list of tables, each checked, and each table's ``variant`` and ``compare``
    ({} for a table of the study itself); no grid: one point, the file's values."""
    if GRID not in values:
        return [{}], [{}]
    grids = values.pop(GRID)
    grids = grids if isinstance(grids, list) else [grids]
    if not grids:
        raise ConfigError(f"{path}: {GRID} = [] has no tables; valid: [{GRID}] or [[{GRID}]] tables of lists")
    tags = []
    for n, grid in enumerate(grids, 1):
        where = f"[{GRID}]" if len(grids) == 1 else f"[[{GRID}]] table {n}"
        if not isinstance(grid, dict):
            raise ConfigError(f"{path}: {where} = {config.show(grid)} is not a table; valid: [{GRID}] or [[{GRID}]] "
                              "tables of lists (field = [value, ...])")
        grid = grids[n - 1] = dict(grid)
        named = {k: grid.pop(k) for k in (VARIANT, COMPARE) if k in grid}
        if not grid:
            raise ConfigError(f"{path}: {where} is empty; valid: field = [value, ...] (a sweep of the file's values "
                              f"alone needs no [{GRID}])")
        _check_grid(path, grid, GRID)
        tags.append(_variant_tag(path, where, named))
    return grids, tags


def _variant_tag(path, where: str, named: dict) -> dict:
    """A table's ``variant = "NAME"`` and ``compare = [optimizer, ...]`` checked ({} when it names none)."""
    name, compare = named.get(VARIANT), named.get(COMPARE)
    if COMPARE in named and VARIANT not in named:
        raise ConfigError(f"{path}: {where} compare = {config.show(compare)} without variant = \"NAME\"; valid: "
                          "compare in a table named as a variant (the study's own runs are compared by [claim])")
    if VARIANT not in named:
        return {}
    if not isinstance(name, str) or not name.strip() or not name.isprintable() or name != name.strip():
        raise ConfigError(f"{path}: {where} variant = {config.show(name)} must be a name: printable text, not empty, "
                          "without leading or trailing spaces")
    if compare is not None and (not isinstance(compare, list) or not compare or not all(map(_is_optimizer, compare))
                                or len(set(compare)) < len(compare)):
        raise ConfigError(f"{path}: {where} compare = {config.show(compare)} must list optimizers the study runs, each "
                          f"once; valid: some of {', '.join(_registry_names())}")
    return {VARIANT: name, **({COMPARE: compare} if compare is not None else {})}


def _check_overrides(path, overrides: list[str], grids: list[dict], per_opt: dict, per_opt_fields: dict) -> None:
    """``--set`` of a field that the file varies would be ignored by the runs (their grid value wins): refused."""
    axes = {k for grid in grids for k in grid}
    own = {k: name for name, fields in per_opt_fields.items() for k in fields}
    own_hp = {k: name for name, hp in per_opt.items() for k in hp}
    hp_axes = {k[len(HP):] for k in axes if k.startswith(HP)}
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
            if name in hp_axes:
                raise ConfigError(f"{path}: --set {item!r}: hparams.{name} is a [{GRID}] axis of this file, whose "
                                  f"values win over --set; valid: --set a hyperparameter the grid does not list")
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
    grids, tags = _grids(path, values)
    per_opt = values.pop(OPT_HPARAMS, {})
    per_opt_fields = values.pop(OPT_OVERRIDES, {})
    launch = values.pop(LAUNCH, {})
    if CLAIM in values and values[CLAIM] == {}:
        raise ConfigError(f"{path}: [{CLAIM}] is empty; valid keys: {', '.join(CLAIM_KEYS)} (no [{CLAIM}]: the "
                          "defaults, undeclared)")
    claim = values.pop(CLAIM, {})
    searching = search.read(path, values.pop(search.SEARCH)) if search.SEARCH in values else None
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
    if searching is not None:
        if any(tags):
            raise ConfigError(f"{path}: a [[{GRID}]] table named as a variant ({next(t for t in tags if t)[VARIANT]!r}) "
                              f"in a [{search.SEARCH}] sweep, where every run is a trial; valid: the variant in a "
                              "sweep file of its own")
        searching = _searched(path, searching, base, grids, per_opt, per_opt_fields)
    runs, seen, studies, tables_of = [], {}, [], {}
    for n_table, (grid, tag) in enumerate(zip(grids, tags, strict=True)):
        for combo in _points(grid, per_opt_fields, base.get("optimizer", RunConfig.optimizer)):
            point = {**base, **{k: v for k, v in combo.items() if not k.startswith(HP)}}
            opt = point.get("optimizer", RunConfig.optimizer)
            own_hp = per_opt.get(opt, {}) if isinstance(opt, str) else {}
            axis_hp = {k[len(HP):]: v for k, v in combo.items() if k.startswith(HP)}
            clash = sorted(set(own_hp) & set(axis_hp))
            if clash:
                raise ConfigError(f"{path}: hparams.{clash[0]} is a [{GRID}] axis and set by [{OPT_HPARAMS}.{opt}] "
                                  "too; valid: one of them")
            point["hparams"] = {**base["hparams"], **own_hp, **axis_hp}
            trials = [(point, combo)] if searching is None else [
                (search.apply({**point, "trial": k}, v), {**combo, "trial": k})
                for k, v in enumerate(searching.values[opt])]
            study = []
            for one, where in trials:
                try:
                    cfg = config.make(one)
                except ConfigError as e:
                    raise ConfigError(f"{path} run ({_where(where)}): {e}") from None
                first = seen.setdefault((cfg.results_dir, cfg.run_id(1)), (cfg, where))
                if first[0] is cfg:
                    runs.append(cfg)
                    study.append(cfg)
                elif first[0] != cfg:  # the same values again (overlapping tables, repeated values) are one run
                    raise ConfigError(_one_run(path, first, (cfg, where)))
                tables_of.setdefault(id(first[0]), []).append(n_table)
            if study:
                studies.append(tuple(study))
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
                          | {f"hparams.{k}" for hp in per_opt.values() for k in hp}
                          | {k for grid, tag in zip(grids, tags, strict=True) if not tag for k in grid
                             if k.startswith(HP)}))
    # the study's own runs (those of a table not named as a variant); a variant's are compared with them
    judged = own = [c for c in runs if any(not tags[t] for t in tables_of[id(c)])]
    if not own:
        raise ConfigError(f"{path}: every [[{GRID}]] table is named as a variant: the study has no runs of its own to "
                          "compare them with; valid: at least one table without variant = \"NAME\"")
    if searching is not None:
        searching = dataclasses.replace(searching.search, studies=tuple(studies))
        tuning = tuple(sorted({*tuning, "trial", *(k for sp in searching.spaces.values() for k in sp)}))
        shown["trial"] = sorted({c.trial for c in runs})
        claim = _search_claim(path, claim, searching)
        # the confirmation reruns the claim is judged on (which trial each reruns is known once trials are done)
        judged = runs + [dataclasses.replace(st[0], seed=s) for st in studies for s in searching.confirm_seeds]
    declared = declaration(path, claim, judged)
    if searching is not None:
        declared["confirm_seeds"] = list(searching.confirm_seeds)
    keys = sorted({k for grid in grids for k in grid} | {k for f in per_opt_fields.values() for k in f}
                  | {f"{HP}{k}" for hp in per_opt.values() for k in hp} | {"optimizer"})
    variants = _variants(path, runs, tables_of, tags, keys, own, declared["optimizer"])
    return Sweep(name=runs[0].sweep, runs=tuple(runs), grid=shown, launch=launch, claim=declared, tuning=tuning,
                 roles=roles(runs, declared), search=searching, variants=variants)


def axis_value(cfg: dict, key: str):
    """A run config dict's value of a grid axis (``hparams.NAME``: its hyperparameter as given, None when it is
    not given), JSON-canonical (tuples as lists), for matching a run with a variant's values."""
    import json

    value = (cfg.get("hparams") or {}).get(key[len(HP):]) if key.startswith(HP) else cfg.get(key)
    return json.loads(json.dumps(value))


def _variants(path, runs, tables_of: dict, tags: list[dict], keys: list[str], own: list, method: str) -> dict:
    """Sweep.variants: ``tables``, per [[grid]] table its variant name (None: the study's own) and, per optimizer,
    the values every axis of the file takes in its runs (what bench.study.memberships matches a run's config
    against: a table is a product per optimizer); ``variants``, each variant's comparisons. {} when no table is
    named."""
    if not any(tags):
        return {}
    ran = list(dict.fromkeys(c.optimizer for c in own))
    compare = {}
    for tag in tags:
        if not tag:
            continue
        name = tag[VARIANT]
        if COMPARE in tag and compare.get(name) not in (None, tag[COMPARE]):
            raise ConfigError(f"{path}: variant {name!r} has compare = {config.show(compare[name])} in one table and "
                              f"{config.show(tag[COMPARE])} in another; valid: one list (or compare in one table)")
        if COMPARE in tag:
            missing = [o for o in tag[COMPARE] if o not in ran]
            if missing:
                raise ConfigError(f"{path}: variant {name!r} compare = {config.show(tag[COMPARE])}: {missing[0]} has no "
                                  f"runs in the study's own tables; valid: some of {', '.join(ran)}")
        compare[name] = tag.get(COMPARE, compare.get(name))
    tables = [{VARIANT: tag.get(VARIANT), "by_optimizer": {}} for tag in tags]
    for cfg in runs:
        d = cfg.to_dict()
        for t in tables_of[id(cfg)]:
            per = tables[t]["by_optimizer"].setdefault(cfg.optimizer, {k: [] for k in keys})
            for k in keys:
                v = axis_value(d, k)
                if v not in per[k]:
                    per[k].append(v)
    out = {}
    for name, listed in compare.items():
        opts = list(dict.fromkeys(o for t in tables if t[VARIANT] == name for o in t["by_optimizer"]))
        # default: its own optimizers' study runs (where there are some), and the method under test
        out[name] = {COMPARE: listed or list(dict.fromkeys([*(o for o in opts if o in ran),
                                                            *([method] if method in ran else [])])),
                     "optimizers": opts}
    return {"tables": tables, "variants": out}


@dataclasses.dataclass(frozen=True)
class _Searching:
    search: search.Search
    values: dict  # optimizer -> [trial k's {field: value}]


def _searched(path, table: dict, base: dict, grids: list[dict], per_opt: dict, per_opt_fields: dict) -> _Searching:
    """[search] resolved against the grid: every optimizer's space and trial values; the refusals of a search
    (a seed axis, a tuned field that the grid also sets, no validation split)."""
    default_opt = base.get("optimizer", RunConfig.optimizer)
    used = list(dict.fromkeys(o for grid in grids for o in (grid.get("optimizer") or [default_opt])))
    for grid in [*grids, *per_opt_fields.values()]:
        if "seed" in grid:
            raise ConfigError(f"{path}: a [{search.SEARCH}] sweep trains every trial at the file's seed "
                              f"({base.get('seed', 0)}, the choosing seed) and judges on [{search.SEARCH}] "
                              "confirm_seeds; valid: no seed axis (set seed = N at the top level)")
    if not base.get("validation_size"):
        raise ConfigError(f"{path}: [{search.SEARCH}] chooses trials on val_top1, and validation_size = "
                          f"{base.get('validation_size', 0)} holds no images out; valid: validation_size > 0 (e.g. "
                          "validation_size = 5000)")
    found = search.resolve(path, table, [o for o in used if isinstance(o, str)], int(base.get("seed", 0)))
    for name, space in found.spaces.items():
        fixed = {k for grid in grids for k in grid} | set(per_opt_fields.get(name, {})) | \
            {f"hparams.{k}" for k in {**base.get("hparams", {}), **per_opt.get(name, {})}}
        clash = sorted(set(space) & fixed)
        if clash:
            raise ConfigError(f"{path}: {clash[0]} is tuned by {name}'s search space ({found.sources[name]}) and set "
                              f"by the file's grid or tables too; valid: one of them (drop it from the grid, or "
                              f"from [{search.SEARCH}.space.{name}])")
    values = {o: search.trial_values(found.spaces[o], found.sampler, found.trials[o], found.seed) for o in found.spaces}
    return _Searching(found, values)


def _search_claim(path, claim: dict, found) -> dict:
    """[claim] under a search: its confirmation seeds are the search's (a [claim] that names others is refused)."""
    seeds = list(found.confirm_seeds)
    if "confirm_seeds" in claim and claim["confirm_seeds"] != seeds:
        raise ConfigError(f"{path}: [{CLAIM}] confirm_seeds = {config.show(claim['confirm_seeds'])} differs from "
                          f"[{search.SEARCH}] confirm_seeds = {seeds}; valid: leave it out of [{CLAIM}] (a search "
                          "judges on its own)")
    return claim
