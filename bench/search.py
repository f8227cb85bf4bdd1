"""Equal-budget quasi-random search (issue 27): a sweep file's ``[search]`` table turns each grid point of
each optimizer into N *trials*, chooses one per study on validation and trains it again on fresh seeds.

The protocol, in AlgoPerf's vocabulary (Dahl et al. 2023) and batch_science's (Shallue et al. 2019)::

    [search]
    trials = 8                 # per optimizer and study; the same N for every optimizer (unequal_budget = true
                               # allows a table {NAME = N, ...}, and the report then says so)
    sampler = "halton"         # or "sobol": scipy.stats.qmc, scrambled, with ``seed``
    seed = 0                   # the sequence's scrambling seed
    confirm_seeds = [1, 2, 3]  # the chosen trial trained again on these; every claim is computed on them alone
    [search.space.momentum]    # replaces the registry's default space of that optimizer (optimizers.space)
    base_lr = { min = 0.02, max = 0.5, scaling = "log" }
    "hparams.momentum" = { min = 0.8, max = 0.99, scaling = "log_one_minus" }
    warmup_fraction = { feasible_points = [0.05, 0.125] }

- A *space* maps each tuned field (a run config field or ``hparams.NAME``) to ``{min, max, scaling}``
  (``linear``: min + u (max - min); ``log``: min (max / min)^u; ``log_one_minus``, for momentum-like values
  near 1: 1 - (1 - min) ((1 - max) / (1 - min))^u, i.e. 1 - x log-uniform, batch_science's REVERSE_LOG) or
  ``{feasible_points = [...]}`` (points[min(floor(u k), k - 1)] of its k points). One space per optimizer,
  shared by every batch and budget of the study (AlgoPerf's rule).
- Trial k (0-based) of an optimizer is row k of ``qmc.Halton(d, scramble=True, seed=seed).random(N)`` (or
  Sobol's), its d columns in the space's key order, mapped by the scales; the same points at every batch
  and budget. Each trial is a run whose ``trial`` field (part of its id) is k, trained at the file's own
  ``seed`` (the choosing seed), so the sweep machinery (claims, packing, Slurm arrays, resume) shares and
  resumes trials as it does every run.
- A *study* is one grid point of one optimizer: its N trials (same optimizer, batch, budget). Once each of
  its trials is done (complete or diverged) or skipped, the trial with the highest ``val_top1`` is chosen
  (``choose``; diverged and failed trials are infeasible and kept; ties go to the lowest trial index) and the
  sweep trains it again on every confirmation seed (``confirmations``), the second phase of the same
  invocation. The report (plots.claims) chooses by the same rule and judges every claim on those reruns.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

from bench import config
from bench.config import ConfigError, RunConfig

SEARCH = "search"
KEYS = ("trials", "sampler", "seed", "confirm_seeds", "unequal_budget", "space")
SAMPLERS = ("halton", "sobol")
SCALINGS = ("linear", "log", "log_one_minus")
METRIC = "val_top1"  # what chooses a trial: its validation top-1 (validation_size > 0 is required)
# Why the learning rate's range is relative: base_lr is the rate at reference_batch, and the peak is
# base_lr x global_batch / reference_batch (the paper's linear rule); the same space at every batch then asks
# "which multiple of the linear rule is best here?", and a chosen base_lr that moves with the batch is the
# rule failing (the report's chosen-hyperparameters table), where an absolute range would need a space per batch.
LR_RANGE = "relative to the linear scaling rule (peak = base_lr x global_batch / reference_batch)"


@dataclasses.dataclass(frozen=True)
class Search:
    """A sweep file's ``[search]``, resolved: per optimizer its space (field -> spec, in key order), where
    the space comes from, its trial count; and the studies of the sweep's runs (each a tuple of trial configs)."""

    trials: dict  # optimizer -> N
    sampler: str
    seed: int
    confirm_seeds: tuple
    spaces: dict  # optimizer -> {field: spec}
    sources: dict  # optimizer -> "sweep file" or the registry's source
    unequal_budget: bool
    choosing_seed: int
    studies: tuple = ()  # tuple of tuples of RunConfig: one per (grid point, optimizer), its trials in order

    def doc(self) -> dict:
        """What study.json and claims.json record of the protocol."""
        return {"sampler": self.sampler, "seed": self.seed, "trials": dict(self.trials),
                "confirm_seeds": list(self.confirm_seeds), "choosing_seed": self.choosing_seed,
                "unequal_budget": self.unequal_budget, "metric": METRIC,
                "rule": "per study (optimizer, batch, budget): the trial with the highest val_top1 among its "
                        "complete ones (diverged and failed trials infeasible; ties: the lowest trial index), "
                        "trained again on confirm_seeds; every claim on those reruns' test top-1",
                "lr_range": LR_RANGE, "spaces": {o: dict(s) for o, s in self.spaces.items()},
                "space_sources": dict(self.sources)}


# ---------------------------------------------------------------- points
def unit_points(sampler: str, dims: int, n: int, seed: int):
    """The first ``n`` points of the scrambled ``sampler`` sequence in ``dims`` dimensions (an n x dims array)."""
    from scipy.stats import qmc

    if dims == 0:
        import numpy as np

        return np.zeros((n, 0))
    engine = qmc.Halton(d=dims, scramble=True, seed=seed) if sampler == "halton" else \
        qmc.Sobol(d=dims, scramble=True, seed=seed)
    with warnings.catch_warnings():  # Sobol's balance wants n a power of 2; the file asked for n trials
        warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*")
        return engine.random(n)


def scale(spec: dict, u: float):
    """The value of unit coordinate ``u`` in [0, 1) under one field's ``spec`` (see the module docstring)."""
    if "feasible_points" in spec:
        points = spec["feasible_points"]
        return points[min(int(math.floor(u * len(points))), len(points) - 1)]
    lo, hi, how = float(spec["min"]), float(spec["max"]), spec.get("scaling", "linear")
    if how == "log":
        return lo * (hi / lo) ** u
    if how == "log_one_minus":
        return 1.0 - (1.0 - lo) * ((1.0 - hi) / (1.0 - lo)) ** u
    return lo + u * (hi - lo)


def trial_values(space: dict, sampler: str, n: int, seed: int) -> list[dict]:
    """Trial k's {field: value} for k < n."""
    keys = list(space)
    return [{k: scale(space[k], float(u)) for k, u in zip(keys, row, strict=True)}
            for row in unit_points(sampler, len(keys), n, seed)]


def on_boundary(spec: dict, value, tolerance: float = 0.05) -> str | None:
    """"min" or "max" when ``value`` lies within ``tolerance`` of its range's end (in the unit coordinate of the
    scaling; a discrete space: its first or last point, when it has three or more), else None."""
    if "feasible_points" in spec:
        points = spec["feasible_points"]
        if len(points) < 3 or value not in points:
            return None
        return "min" if value == points[0] else "max" if value == points[-1] else None
    lo, hi, how = float(spec["min"]), float(spec["max"]), spec.get("scaling", "linear")
    v = float(value)
    if how == "log":
        u = math.log(v / lo) / math.log(hi / lo)
    elif how == "log_one_minus":
        u = math.log((1 - v) / (1 - lo)) / math.log((1 - hi) / (1 - lo))
    else:
        u = (v - lo) / (hi - lo)
    return "min" if u <= tolerance else "max" if u >= 1 - tolerance else None


# ---------------------------------------------------------------- reading [search]
def _check_space(where: str, space, optimizer: str) -> dict:
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where} = {config.show(space)} must be a non-empty table of field = "
                          "{ min, max, scaling } or { feasible_points = [...] }")
    import optimizers

    valid_hp = optimizers.valid_hparams(optimizer)
    out = {}
    for key, spec in space.items():
        here = f"{where} {key}"
        if key.startswith("hparams."):
            name = key.split(".", 1)[1]
            if name not in valid_hp:
                raise ConfigError(f"{here}: {optimizer} has no hyperparameter {name!r}; valid: "
                                  f"{', '.join(sorted(valid_hp))}")
            numeric = True
        elif key in config.FIELDS and key not in ("optimizer", "hparams", "model_hparams", "seed", "trial", "sweep",
                                                  "output_dir", "global_batch", "epochs", "steps"):
            numeric = config._TYPES[key] is float
        else:
            tunable = sorted(k for k in config.FIELDS if config._TYPES[k] is float)
            raise ConfigError(f"{here}: not a field a search may tune; valid: hparams.NAME or a run config field "
                              f"({', '.join(tunable)}, or any field by feasible_points)")
        if not isinstance(spec, dict):
            raise ConfigError(f"{here} = {config.show(spec)} must be {{ min = .., max = .., scaling = .. }} or "
                              "{ feasible_points = [...] }")
        if "feasible_points" in spec:
            points = spec["feasible_points"]
            if set(spec) != {"feasible_points"} or not isinstance(points, list) or not points:
                raise ConfigError(f"{here} = {config.show(spec)}: feasible_points must be a non-empty list, alone "
                                  "in its table")
            out[key] = {"feasible_points": list(points)}
            continue
        if set(spec) - {"min", "max", "scaling"} or not {"min", "max"} <= set(spec):
            raise ConfigError(f"{here} = {config.show(spec)}: valid keys min, max (required) and scaling "
                              f"({', '.join(SCALINGS)}; default linear)")
        if not numeric:
            raise ConfigError(f"{here}: {key} is not a real number (a {config._TYPES[key].__name__}); valid: "
                              "{ feasible_points = [...] }")
        lo, hi, how = spec["min"], spec["max"], spec.get("scaling", "linear")
        if how not in SCALINGS:
            raise ConfigError(f"{here} scaling = {config.show(how)}; valid: {', '.join(SCALINGS)}")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in (lo, hi)) \
                or not lo < hi:
            raise ConfigError(f"{here}: min = {config.show(lo)}, max = {config.show(hi)} must be finite numbers with "
                              "min < max")
        if how == "log" and lo <= 0:
            raise ConfigError(f"{here}: scaling = 'log' needs min > 0 (min = {lo}); valid: linear, or a positive min")
        if how == "log_one_minus" and not (hi < 1):
            raise ConfigError(f"{here}: scaling = 'log_one_minus' samples 1 - x on a log scale and needs max < 1 "
                              f"(max = {hi}); valid: linear or log")
        out[key] = {"min": float(lo), "max": float(hi), "scaling": how}
    return out


def read(path, table) -> dict:
    """``[search]`` checked on its own (optimizers' spaces are resolved by ``resolve``)."""
    where = f"{path}: [{SEARCH}]"
    if not isinstance(table, dict) or set(table) - set(KEYS):
        bad = table if not isinstance(table, dict) else sorted(set(table) - set(KEYS))
        raise ConfigError(f"{where} {config.show(bad)} is not valid; valid keys: {', '.join(KEYS)}")
    for key in ("trials", "confirm_seeds"):
        if key not in table:
            raise ConfigError(f"{where} has no {key}; a search needs trials = N and confirm_seeds = [...] (the "
                              "seeds the chosen trial is judged on)")
    trials, unequal = table["trials"], table.get("unequal_budget", False)
    if not isinstance(unequal, bool):
        raise ConfigError(f"{where} unequal_budget = {config.show(unequal)} must be true or false")
    ok = (type(trials) is int and trials >= 1) or (
        isinstance(trials, dict) and trials and all(type(v) is int and v >= 1 for v in trials.values()))
    if not ok:
        raise ConfigError(f"{where} trials = {config.show(trials)} must be an integer >= 1 (or, with unequal_budget "
                          "= true, a table NAME = N)")
    if isinstance(trials, dict) and len(set(trials.values())) > 1 and not unequal:
        raise ConfigError(f"{where} trials = {config.show(trials)} gives optimizers unequal budgets; valid: one N "
                          "for every optimizer (a fair comparison), or unequal_budget = true, which the report states")
    sampler = table.get("sampler", "halton")
    if sampler not in SAMPLERS:
        raise ConfigError(f"{where} sampler = {config.show(sampler)}; valid: {', '.join(SAMPLERS)}")
    seed = table.get("seed", 0)
    if type(seed) is not int or seed < 0:
        raise ConfigError(f"{where} seed = {config.show(seed)} must be an integer >= 0")
    confirm = table["confirm_seeds"]
    if not isinstance(confirm, list) or not confirm or not all(type(s) is int and s >= 0 for s in confirm) \
            or len(set(confirm)) < len(confirm):
        raise ConfigError(f"{where} confirm_seeds = {config.show(confirm)} must be a non-empty list of distinct "
                          "integers >= 0")
    space = table.get("space", {})
    if not isinstance(space, dict):
        raise ConfigError(f"{where} space = {config.show(space)} must be [{SEARCH}.space.NAME] tables")
    return {"trials": trials, "sampler": sampler, "seed": seed, "confirm_seeds": tuple(confirm),
            "unequal_budget": unequal, "space": space}


def resolve(path, table: dict, optimizers_used: list[str], choosing_seed: int) -> Search:
    """The search of a sweep whose runs use ``optimizers_used``: each optimizer's space (the file's, else the
    registry's default) and trial count, checked."""
    import optimizers

    where = f"{path}: [{SEARCH}]"
    unknown = sorted(set(table["space"]) - set(optimizers_used))
    if unknown:
        raise ConfigError(f"{where} space.{unknown[0]}: no run uses optimizer {unknown[0]}; valid: "
                          f"{', '.join(optimizers_used)}")
    if choosing_seed in table["confirm_seeds"]:
        raise ConfigError(f"{where} confirm_seeds = {list(table['confirm_seeds'])} includes seed {choosing_seed}, the "
                          "seed the trials are trained and chosen on; valid: seeds that choose nothing")
    trials = table["trials"]
    if isinstance(trials, dict):
        missing = [o for o in optimizers_used if o not in trials]
        extra = sorted(set(trials) - set(optimizers_used))
        if missing or extra:
            raise ConfigError(f"{where} trials = {config.show(trials)} must name every optimizer of the sweep once "
                              f"({', '.join(optimizers_used)})")
    spaces, sources = {}, {}
    for name in optimizers_used:
        if name in table["space"]:
            spaces[name] = _check_space(f"{where} space.{name}", table["space"][name], name)
            sources[name] = "the sweep file"
            continue
        default, source = optimizers.space(name)
        if not default:
            raise ConfigError(f"{where}: optimizer {name} has no default search space; valid: a "
                              f"[{SEARCH}.space.{name}] table in the sweep file")
        spaces[name] = _check_space(f"optimizers' default space of {name}", default, name)
        sources[name] = source
    counts = trials if isinstance(trials, dict) else dict.fromkeys(optimizers_used, trials)
    return Search(trials={o: counts[o] for o in optimizers_used}, sampler=table["sampler"], seed=table["seed"],
                  confirm_seeds=tuple(table["confirm_seeds"]), spaces=spaces, sources=sources,
                  unequal_budget=table["unequal_budget"], choosing_seed=choosing_seed)


def apply(point: dict, values: dict) -> dict:
    """A grid point (a run config dict) with one trial's ``values`` set (``hparams.NAME`` into its hparams)."""
    out = {**point, "hparams": dict(point.get("hparams") or {})}
    for key, value in values.items():
        if key.startswith("hparams."):
            out["hparams"][key.split(".", 1)[1]] = value
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- the second phase
def choose(trials, rows) -> tuple[RunConfig | None, int]:
    """The chosen trial of one study and its infeasible count: ``trials`` its configs in trial order, ``rows``
    {run_id: (status, val_top1)} of the finished ones (workers are the caller's: run ids as the caller keys
    them). The highest val_top1 among complete trials with a finite one; ties: the lowest trial index."""
    best, best_val, infeasible = None, -math.inf, 0
    for cfg, rid in trials:
        status, val = rows.get(rid, (None, math.nan))
        if status != "complete" or val is None or not math.isfinite(val):
            infeasible += 1
            continue
        if val > best_val:
            best, best_val = cfg, val
    return best, infeasible


def confirmations(search: Search, workers: int, rows: dict, settled) -> list[tuple[tuple, list[RunConfig]]]:
    """Per study whose every trial ``settled(run_id)`` (done, or skipped for good): the chosen trial's reruns
    on the confirmation seeds (none when every trial was infeasible). ``rows``: {run_id: (status, val_top1)}."""
    out = []
    for study in search.studies:
        ids = [(c, c.run_id(workers)) for c in study]
        if not all(settled(rid) for _, rid in ids):
            continue
        chosen, _ = choose(ids, rows)
        out.append((study, [] if chosen is None else
                    [dataclasses.replace(chosen, seed=s) for s in search.confirm_seeds]))
    return out


def waiting(search: Search, workers: int, settled) -> list[tuple[RunConfig, int]]:
    """(first trial, trials not yet settled) of each study still waiting for its trials."""
    out = []
    for study in search.studies:
        left = sum(not settled(c.run_id(workers)) for c in study)
        if left:
            out.append((study[0], left))
    return out
