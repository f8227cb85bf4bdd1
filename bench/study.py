"""The study a sweep declares before its data: the primary claim of its ``[claim]`` table (``declaration``: defaults
filled in and checked against the runs), the roles of its optimizers (``roles``: the registry's, the claim
applied) and ``study.json``, where both are written before any run trains (``declare``) for the report
(plots.claims, plots.primary) to read. The sweep-file parser (bench.grid) hands the table and the runs here."""

from __future__ import annotations

import os
from pathlib import Path

from bench import config
from bench.config import ConfigError, RunConfig

CLAIM = "claim"  # [claim]: the primary claim, declared before the data (see ``declaration``)

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


def declare(sweep, source: str | Path, now: str) -> Path:
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
    if getattr(sweep, "search", None) is not None:  # the tuning protocol (bench.search), declared with the claim
        doc["search"] = sweep.search.doc()
    if getattr(sweep, "variants", None):  # the named [[grid]] tables (bench.grid.Sweep.variants)
        doc["variants"] = sweep.variants
    targets = sorted({c.target_top1 for c in sweep.runs})
    if len(targets) == 1 and targets[0] > 0:  # outside the run id: the report re-evaluates steps to it (plots)
        doc["target_top1"] = targets[0]
    try:
        old = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        old = None

    def declared(d: dict) -> dict:  # what a declaration says; keys it did not have yet do not make it another
        keys = [k for k in ("claim", "roles", "tuning_fields", "target_top1", "search", "variants") if k in old or k != "roles"]
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


def memberships(values: dict, variants: dict | None) -> tuple[bool, list[str]]:
    """Where run config dict ``values`` (a runs row's ``config`` JSON) belongs by study.json ``variants``
    (bench.grid.Sweep.variants): whether it is a run of the study's own tables, and the variants whose table it
    is a point of (its value on every axis of the sweep file among theirs). No variants declared: (True, [])."""
    from bench.grid import axis_value

    if not variants:
        return True, []
    own, named = False, []
    for table in variants.get("tables", []):
        per = table.get("by_optimizer", {}).get(values.get("optimizer"))
        if per and all(axis_value(values, k) in options for k, options in per.items()):
            if table.get("variant") is None:
                own = True
            elif table["variant"] not in named:
                named.append(table["variant"])
    return own, named
