"""The claims, machine-readable: the sweep's primary claim, then every NLCG configuration against the best
baseline per (global batch, epoch budget, setting), as exploratory comparisons under Holm's adjustment.

``build(runs, reference, paper_dataset, study)`` returns the document ``claims.json`` holds; ``plots.claims_text``
writes ``claims.md`` from that document alone, so the two cannot disagree. Every number comes from the runs
table and ``paper_reference.csv``; the declaration (``study``: the primary claim, the confirmation seeds, the
fields optimizers are tuned in) from the sweep file, written to ``study.json`` before the runs trained
(``bench.study.declare``).

Rules (also written into both files):

- One configuration per side (``stats.prepare``): a comparison pits the seeds of one NLCG configuration against
  the seeds of one baseline configuration at one (batch, budget, setting). The *setting* is every field but the
  ones optimizers are tuned in (base_lr, hparams, the sweep's [optimizer_overrides]), as the sweep file says.
- Roles: every optimizer is a baseline or a method under test (``stats.roles``: the sweep's study.json, which
  bench.study wrote from the registry with the [claim] applied; else the rows' ``role``). Every method's
  configurations are compared with the best baseline, chosen among the claim's ``baselines`` (default: every
  optimizer whose role is baseline).
- Selection: the best baseline is the baseline configuration with the
  highest mean test top-1 (tuned comparisons: validation top-1) on the *choosing* seeds. With
  ``confirm_seeds`` declared, a comparison at a cell where they ran is then computed on them alone: seeds that
  chose nothing. Without them the choice and the judgement share seeds, which inflates the chosen baseline's
  mean (the maximum of N noisy means), biasing the gain down: conservative for ``holds``, not for ``fails``.
- Exploratory comparisons: gain = 100 x (NLCG mean - baseline mean), Welch's 95 % t interval and two-sided
  p-value; ``verdict`` from the interval; ``verdict_adjusted`` from Holm's step-down over every interval
  comparison of the file (``family_size``). Only the primary claim and adjusted verdicts are claims.
- Divergence is failure: an NLCG configuration with a diverged seed ``fails``; a baseline configuration with a
  diverged seed cannot be the best baseline and is listed in ``baselines_excluded``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from plots import inference, primary, stats, tuning

PAPER_CLAIMS = {  # the paper's study -> (the abstract's claim, the batch it is made at, the study's epochs)
    "cifar100": ("NLCG beats the baselines by more than 15 points of top-1 at batch >= 16k (200 epochs)", 16384, 200),
    "imagenet": ("NLCG beats the baselines by more than 10 points of top-1 at batch >= 65k (90 epochs)", 65536, 90),
}
PAPER_STUDY = {"cifar100": ("cifar100", "resnet32"), "imagenet": ("imagenet", "resnet50")}
INTERVAL_METHOD = ("Welch t interval for the difference of two means (Welch-Satterthwaite degrees of freedom, "
                   "95 %), in points of top-1")
SEED_INTERVAL_METHOD = "Student t over seeds: mean +- t(0.975, n - 1) sd / sqrt(n), 95 %; none for one seed"
DIVERGENCE_RULE = ("A diverged seed is a failure of its configuration, whose mean top-1 is then undefined (never "
                   "the mean of the surviving seeds). An NLCG configuration with a diverged seed fails. A baseline "
                   "configuration with a diverged seed cannot be the best baseline; it is listed under "
                   "baselines_excluded, since leaving it out can make NLCG's comparison easier.")
TUNED_RULE = ("Each optimizer at its configuration (base_lr, hparams, its own overrides) with the best mean val_top1 "
              "on the held-out validation split; the best baseline chosen on validation too; both reported on test "
              "top-1.")
SELECTION_EFFECT = ("Choosing the best of N baseline configurations on the seeds that also judge raises the chosen "
                    "baseline's mean by the luck of the draw (the maximum of N noisy means), so the gain and its "
                    "interval lean against NLCG: a 'holds' survives it, a 'fails' may be the selection's doing. "
                    "Judged on confirmation seeds, the chosen configuration's mean carries no such luck.")
MACHINES = ("The same seed does not give the same weights on two machines: float reductions (oneDNN's blocking, "
            "thread counts, Horovod's fusion) sum in different orders, the runs drift apart within a few steps and "
            "end a few tenths to points of top-1 apart. A 3-seed interval is wide enough that such a shift can move "
            "it across 0, so a single 3-seed verdict can flip between machines; a verdict is robust when it holds "
            "on confirmation seeds and under Holm's adjustment.")
CRITICAL_RULE = ("Each optimizer's steps to the target top-1, at each batch those of its tuned choice (the epoch "
                 "budget and tuning values whose every seed reached the target in the fewest mean steps), fitted "
                 "by S = S_min + E_min / B (McCandlish et al. 2018); B_crit = E_min / S_min; the ratio of an NLCG "
                 "form's B_crit to the best baseline's (the largest B_crit) with a 95 % bootstrap interval over "
                 "seeds; holds when the interval is above 1 (plots/critical_batch.py). Needs 3 batches or more "
                 "where every seed reached the target.")
NOISE_RULE = ("B_simple = tr(Sigma) / |G|^2, the gradient noise scale (McCandlish et al. 2018, appendix A), measured "
              "in every run with two batch sizes (micro-batch and global batch; bench/noise_scale.py): start = the "
              "median over runs of the estimates logged in each run's first 10 % of steps, end = the median of the "
              "runs' last estimates. A batch well below B_simple is in the perfect-scaling regime (doubling it "
              "halves the steps), one well above it is not: batch / B_simple says where a batch stands, the mapping "
              "of a small problem onto the paper's that steps per epoch alone does not give.")
PUBLISHED_NOISE = ("No published gradient noise scale or critical batch for the paper's ImageNet/ResNet-50 or "
                   "CIFAR-100/ResNet-32 runs was found; McCandlish et al. (arXiv 1812.06162, abstract) put "
                   "ImageNet's largest useful batches at \"tens of thousands\", the paper's 65,536-98,304 at or "
                   "beyond that limit.")
DEFAULT_CLAIM = {"baseline": "best", "confirm_seeds": [], "declared": False}  # optimizer: the first method


def paper_gains(reference: pd.DataFrame) -> pd.DataFrame:
    """Per global batch of the paper's table: top-1 per optimizer, the best baseline and NLCG's gain (points)."""
    wide = reference.groupby(["global_batch", "optimizer"]).top1.mean().unstack("optimizer")
    paper_roles = stats.roles(reference)  # the paper's optimizers: its method (NLCG-FR) and its baselines
    have = [b for b in stats.baselines(paper_roles) if b in wide]
    nlcg = stats.methods(paper_roles)
    if nlcg and have:
        wide["best_baseline"] = wide[have].max(axis=1)
        wide["nlcg_gain_points"] = 100 * (wide[nlcg[0]] - wide["best_baseline"])
    return wide


def _num(x):
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def _ci(low, high):
    return None if _num(low) is None else [_num(low), _num(high)]


def _side(cfg: pd.Series | None, prefix: str) -> dict:
    if cfg is None:
        return {f"{prefix}label": None, f"{prefix}config_id": None, f"{prefix}n_seeds": 0, f"{prefix}n_diverged": 0,
                f"{prefix}top1_mean": None, f"{prefix}top1_ci95": None, f"{prefix}seeds": []}
    return {f"{prefix}label": cfg.label, f"{prefix}config_id": cfg.config_id, f"{prefix}n_seeds": int(cfg.n_seeds),
            f"{prefix}n_diverged": int(cfg.n_diverged), f"{prefix}top1_mean": _num(cfg.top1_mean),
            f"{prefix}top1_ci95": _ci(cfg.top1_low, cfg.top1_high), f"{prefix}seeds": list(cfg.seeds)}


def compare(nlcg: pd.Series, base: pd.Series | None) -> dict:
    """gain_points, ci95_points, p_value, verdict and reason for one NLCG configuration against one baseline's."""
    none = {"gain_points": None, "ci95_points": None, "p_value": None}
    if nlcg.n_diverged:
        return {**none, "verdict": "fails", "reason": f"{nlcg.n_diverged}/{nlcg.n_seeds} NLCG seeds diverged"}
    if base is None:
        return {**none, "verdict": "inconclusive",
                "reason": "no baseline configuration without a diverged seed at this point"}
    gain = 100 * (nlcg.top1_mean - base.top1_mean)
    if min(nlcg.n_seeds, base.n_seeds) < 2:
        return {**none, "gain_points": _num(gain), "verdict": "inconclusive",
                "reason": f"{nlcg.n_seeds} vs {base.n_seeds} seeds: no interval with fewer than 2 on a side"}
    _, low, high = stats.welch(nlcg.top1_values, base.top1_values)
    ci = [100 * low, 100 * high]
    return {"gain_points": _num(gain), "ci95_points": [_num(ci[0]), _num(ci[1])],
            "p_value": _num(inference.welch_p(nlcg.top1_values, base.top1_values)), "verdict": stats.verdict(*ci),
            "reason": ""}


def _paper(batch: int, scale: float | None, gains: pd.DataFrame | None) -> dict:
    """The paper's batch with our batch's steps per epoch and the paper's NLCG gain there (or nearest)."""
    if scale is None:
        return {"paper_batch": None, "paper_reference_batch": None, "paper_gain_points": None}
    paper_batch = int(round(batch * scale))
    if gains is None or "nlcg_gain_points" not in gains:
        return {"paper_batch": paper_batch, "paper_reference_batch": None, "paper_gain_points": None}
    near = min(gains.index, key=lambda b: (abs(math.log2(b) - math.log2(paper_batch)), b))
    return {"paper_batch": paper_batch, "paper_reference_batch": int(near),
            "paper_gain_points": _num(gains.loc[near, "nlcg_gain_points"])}


def _judged(cfg: pd.Series | None, judge: pd.DataFrame) -> tuple[pd.Series | None, bool]:
    """``cfg``'s row among the confirmation seeds' configurations, if it ran there (else itself, False)."""
    if cfg is None or judge.empty:
        return cfg, False
    rows = judge[judge.config_id == cfg.config_id]
    return (rows.iloc[0], True) if len(rows) else (cfg, False)


def _entries(choose: pd.DataFrame, judge: pd.DataFrame, pick, scale, gains, on: str, sides: tuple,
             extra=lambda cfg, prefix: {}, confirm_only: bool = False, waiting: list | None = None) -> list[dict]:
    """One entry per compared configuration and point; ``pick(rows, baseline)`` chooses configurations among
    the choosing seeds' ``choose`` summary (on ``on``: test or validation); each side is then judged on the
    confirmation seeds' ``judge`` summary when both sides ran there. ``confirm_only`` (a search): a comparison
    whose sides have no confirmation reruns yet is not made (it goes to ``waiting``), never judged on the
    choosing seed."""
    out = []
    for (batch, budget, setting), here in choose.groupby(["global_batch", "epochs", "setting"], sort=True):
        compared, baselines = sides  # the methods under test, the optimizers the best baseline is chosen among
        bases = here[here.optimizer.isin(baselines)]
        chosen = pick(bases, baseline=True)
        excluded = [f"{r.optimizer}{', ' + r.label if r.label else ''} ({r.n_diverged}/{r.n_seeds} seeds diverged)"
                    for _, r in bases[bases.n_diverged > 0].iterrows()]
        rule = f"best {on} mean of {len(bases)} baseline configuration{'s' if len(bases) != 1 else ''}"
        for opt in [o for o in compared if o in set(here.optimizer)]:
            for _, cfg in pick(here[here.optimizer == opt], baseline=False).iterrows():
                base = None if chosen.empty else chosen.iloc[0]
                judged_cfg, confirmed = _judged(cfg, judge)
                judged_base, base_confirmed = _judged(base, judge)
                if not (confirmed and (base is None or base_confirmed)):
                    if confirm_only:
                        if waiting is not None:
                            waiting.append({"global_batch": int(batch), "epochs": float(budget), "optimizer": opt,
                                            "baseline": None if base is None else base.optimizer})
                        continue
                    judged_cfg, judged_base, confirmed = cfg, base, False
                out.append({"global_batch": int(batch), "epochs": float(budget), "setting": setting,
                            "optimizer": opt, "baseline": None if base is None else base.optimizer,
                            "baseline_rule": rule, "chosen_on_seeds": sorted(set(cfg.seeds)),
                            "judged_on": "confirmation seeds" if confirmed else "the choosing seeds",
                            **_side(judged_cfg, ""), **_side(judged_base, "baseline_"),
                            **compare(judged_cfg, judged_base), "baselines_excluded": excluded,
                            **_paper(int(batch), scale, gains),
                            **extra(cfg, ""), **(extra(base, "baseline_") if base is not None else {})})
    return out


def _best_on(column: str):
    def pick(rows: pd.DataFrame, baseline: bool) -> pd.DataFrame:
        ok = rows[rows[column].notna()]
        if baseline:
            return ok.loc[[ok[column].idxmax()]] if len(ok) else ok
        if ok.empty:  # every configuration diverged (or has no value): report the first as failing
            return rows.iloc[:1]
        return ok.loc[[ok[column].idxmax()]]
    return pick


def _every_method_config(rows: pd.DataFrame, baseline: bool) -> pd.DataFrame:
    if baseline:
        ok = rows[rows.top1_mean.notna()]
        return ok.loc[[ok.top1_mean.idxmax()]] if len(ok) else ok
    return rows


def _tuned(choose: pd.DataFrame, judge: pd.DataFrame, scale, gains, sides: tuple, confirm_only: bool = False,
           waiting: list | None = None) -> tuple[list[dict], str | None]:
    several = choose.groupby(["global_batch", "epochs", "setting", "optimizer"]).config_id.transform("nunique") > 1
    points = choose[several][["global_batch", "epochs", "setting"]].drop_duplicates()
    if points.empty:
        return [], None
    tuned = choose.merge(points, on=["global_batch", "epochs", "setting"])
    trained = tuned[tuned.n_diverged == 0]
    if trained.empty or trained.val_top1_mean.isna().any():
        return [], ("Several learning rates or hyperparameters were run, but val_top1 is missing: tuning on the "
                    "test set would be unfair, so the tuned comparison is skipped.")

    def chosen_lr(cfg, prefix):
        tried = tuned[(tuned.optimizer == cfg.optimizer) & (tuned.global_batch == cfg.global_batch)
                      & (tuned.epochs == cfg.epochs) & (tuned.setting == cfg.setting)]
        return {f"{prefix}chosen_base_lr": _num(cfg.base_lr), f"{prefix}val_top1_mean": _num(cfg.val_top1_mean),
                f"{prefix}configurations_tried": len(tried)}

    return _entries(tuned, judge, _best_on("val_top1_mean"), scale, gains, "validation", sides, chosen_lr,
                    confirm_only, waiting), None


def _adjust(entries: list[dict]) -> int:
    """Holm's step-down over every entry with a p-value (the family); adds p_holm and verdict_adjusted."""
    adjusted = inference.holm([math.nan if e["p_value"] is None else e["p_value"] for e in entries])
    for e, p in zip(entries, adjusted, strict=True):
        e["p_holm"] = _num(p)
        e["verdict_adjusted"] = e["verdict"] if e["p_value"] is None else inference.verdict(e["gain_points"], p)
        # robust: significant under Holm, on seeds that chose nothing
        e["robust"] = e["verdict_adjusted"] in ("holds", "fails") and e["judged_on"] == "confirmation seeds"
    return sum(e["p_value"] is not None for e in entries)


def study_claim(study: dict | None, prep: pd.DataFrame, roles: dict | None = None) -> dict:
    """The primary claim's declaration: the study's (bench.study.declare), else the default: the first method
    under test (by name; NLCG-FR in the paper's folders) against the best baseline at the largest batch, pooled
    over every budget run there, no confirmation seeds. A declaration that leaves keys out takes these defaults
    for them, as a sweep file's [claim] table does."""
    declared = (study or {}).get("claim")
    roles = stats.roles(prep, study) if roles is None else roles
    methods = stats.methods(roles)
    claim = {**DEFAULT_CLAIM, "optimizer": methods[0] if methods else next(iter(roles), None), **(declared or {})}
    claim.setdefault("baselines", [o for o in stats.baselines(roles, study) if o != claim["optimizer"]])
    claim.setdefault("global_batch", int(prep.global_batch.max()))
    at = prep[prep.global_batch == claim["global_batch"]]
    if not claim.get("epochs"):  # undeclared, or step budgets: every budget run at the claim's batch
        claim["epochs"] = sorted(float(b) for b in at.budget.unique())
    return claim


def _critical(runs: pd.DataFrame, history: pd.DataFrame | None, target: float | None = None,
              sides: tuple | None = None) -> list[dict]:
    """B_crit of each NLCG form over the best baseline's (plots.critical_batch) at one ``target`` (None: the runs'
    own, ``critical_batch.runs_target``); infinities as "inf"."""
    from plots import critical_batch

    if history is None:
        return []
    out = critical_batch.comparison(critical_batch.fits(runs, history, target), sides)
    return [{k: ("inf" if isinstance(v, float) and math.isinf(v) else _num(v) if isinstance(v, float) else v)
             for k, v in e.items()} for e in out]


def _target(study: dict | None, runs: pd.DataFrame) -> float | None:
    """The one target top-1 that steps to the target are read at: the study's ``target_top1`` (plots.report puts
    the one the sweep file asks now there), else the runs' own (``critical_batch.runs_target``)."""
    from plots import critical_batch

    asked = (study or {}).get("target_top1")
    return float(asked) if asked else critical_batch.runs_target(runs)


def _written_targets(runs: pd.DataFrame) -> list[dict]:
    """[{target_top1, runs}]: the targets the finished runs were written under (several: the study's changed)."""
    from plots import critical_batch

    return [{"target_top1": t, "runs": n} for t, n in critical_batch.targets(runs).items()]


def _noise(runs: pd.DataFrame, history: pd.DataFrame | None, scale: float) -> dict | None:
    """The stand-in in noise-scale terms (plots.critical_batch.noise_mapping), each batch beside its paper batch
    by steps per epoch; None without estimates."""
    from plots import critical_batch

    m = critical_batch.noise_mapping(runs, history)
    if m is None:
        return None
    clean = {k: _num(v) if isinstance(v, float) else v for k, v in m.items() if k not in ("by_optimizer", "batches")}
    return {**clean, "by_optimizer": {o: {k: _num(v) for k, v in d.items()} for o, d in m["by_optimizer"].items()},
            "batches": [{"global_batch": b["global_batch"], "paper_batch": int(round(b["global_batch"] * scale)),
                         "over_start": _num(b["over_start"]), "over_end": _num(b["over_end"])} for b in m["batches"]]}


def _steps(doc: dict, batch: int, epochs: float) -> int:
    return int(round(epochs * doc["train_size"] / batch))


def _comparisons(d: dict) -> list[dict]:
    """A document's method-against-best-baseline comparisons: a grid's untuned ones; a search's tuned ones (its
    chosen trials, judged on their confirmation reruns)."""
    return d["tuned_claims"] if d.get("search") else d["claims"]


def against(doc: dict, others: list[dict]) -> list[dict]:
    """Per other sweep (a claims document, or ``{sweep, missing}``): its primary claim and its claims at this
    document's batches beside this one's, each with its budget in optimizer steps. Rows of this document come
    first (``sweep`` names each row's). Only comparisons of the default setting enter (an entry whose
    ``setting`` is non-empty, e.g. another bn_momentum, has no counterpart to line up with)."""
    if not others:
        return []
    batches = {e["global_batch"] for e in _comparisons(doc)} | {doc["primary"]["global_batch"]}

    def rows(d: dict) -> list[dict]:
        p = d["primary"]
        first = [{"sweep": d["sweep"], "what": "primary", "optimizer": p["optimizer"],
                  "global_batch": p["global_batch"],
                  "epochs": p["budgets"], "steps": [_steps(d, p["global_batch"], e) for e in p["budgets"]],
                  "baseline": ", ".join(sorted({b["baseline"] for b in p["per_budget"]})) or None,
                  "gain_points": p["gain_points"], "ci95_points": p["ci95_points"], "verdict": p["verdict"]}]
        return first + [{"sweep": d["sweep"], "what": "exploratory", "optimizer": e["optimizer"],
                         "global_batch": e["global_batch"], "epochs": [e["epochs"]],
                         "steps": [_steps(d, e["global_batch"], e["epochs"])], "baseline": e["baseline"],
                         "gain_points": e["gain_points"], "ci95_points": e["ci95_points"],
                         "verdict": e.get("verdict_adjusted") or e["verdict"]}
                        for e in _comparisons(d) if e["global_batch"] in batches and not e.get("setting")]

    out = [{"sweep": doc["sweep"], "rows": rows(doc)}]
    for d in others:
        out.append({"sweep": d["sweep"], "missing": d["missing"]} if "missing" in d else
                   {"sweep": d["sweep"], "train_size": d["train_size"], "dataset": d["dataset"], "model": d["model"],
                    "rows": rows(d)})
    return out


def build(runs: pd.DataFrame, reference: pd.DataFrame | None, paper_dataset: str = "cifar100",
          study: dict | None = None, history: pd.DataFrame | None = None) -> dict:
    """The claims document of one sweep's runs (see the module docstring for the rules); ``study`` is the
    sweep's declaration (study.json), None for the defaults; ``history`` adds the critical-batch comparison."""
    prep = stats.prepare(runs, tuple((study or {}).get("tuning_fields") or stats.DEFAULT_TUNING))
    roles = stats.roles(prep, study)
    claim = study_claim(study, prep, roles)
    sides = (stats.methods(roles), claim["baselines"])
    confirm = set(claim.get("confirm_seeds") or [])
    choose_seeds, judge_seeds = prep[~prep.seed.isin(confirm)], prep[prep.seed.isin(confirm)]
    summary = stats.summarize(prep)
    choose = stats.summarize(choose_seeds)
    judge = stats.summarize(judge_seeds) if len(judge_seeds) else choose.iloc[:0]
    reference = reference if reference is not None and len(reference) else None
    gains = paper_gains(reference) if reference is not None else None
    paper_train = int(reference.train_size.iloc[0]) if reference is not None else stats.TRAIN_SIZES[paper_dataset]
    ours_train = stats.train_size(prep)
    scale = paper_train / ours_train
    text, claim_batch, paper_epochs = PAPER_CLAIMS[paper_dataset]
    mixed = [{"config_id": r.config_id, "optimizer": r.optimizer, "label": r.label, "global_batch": int(r.global_batch),
              "epochs": float(r.epochs), "git_commits": r.git_commits}
             for _, r in summary.iterrows() if len(r.git_commits) > 1]
    searched = tuning.declared(study)
    waiting: list[dict] = []
    if searched is None:
        entries = _entries(choose, judge, _every_method_config, scale, gains, "test", sides)
    else:  # a search: each optimizer's trials are candidates, never claims; only the chosen trials are compared
        entries = []
        choose = _in_trial_order(choose, prep)
    tuned, tuned_note = _tuned(choose, judge, scale, gains, sides, searched is not None, waiting)
    family = _adjust(entries + tuned)
    big = gains[gains.index >= claim_batch] if gains is not None and "nlcg_gain_points" in gains else None
    doc = {
        "sweep": str(prep.sweep.iloc[0]), "dataset": str(prep.dataset.iloc[0]), "model": str(prep.model.iloc[0]),
        "train_size": ours_train, "paper_dataset": paper_dataset, "paper_train_size": paper_train,
        "paper_claim": text, "paper_claim_batch": claim_batch, "paper_epochs": paper_epochs,
        "paper_source": None if reference is None else str(reference.source.iloc[0]),
        "paper_gains_at_claim": None if big is None else
        [{"global_batch": int(b), "gain_points": _num(g)} for b, g in big.nlcg_gain_points.items()],
        "declaration": (study or {}).get("source") or "none: the default primary claim",
        "declared_at": (study or {}).get("declared_at"),
        "primary": primary.test(claim, choose, judge, scale, confirm_only=searched is not None),
        "interval_method": INTERVAL_METHOD, "seed_interval_method": SEED_INTERVAL_METHOD,
        "exploratory_test": inference.EXPLORATORY_TEST, "adjustment": "holm", "alpha": inference.ALPHA,
        "family_size": family, "selection_effect": SELECTION_EFFECT, "machines": MACHINES,
        "confirm_seeds": sorted(confirm), "confirm_seeds_run": sorted(int(s) for s in judge_seeds.seed.unique()),
        "choosing_seeds": sorted(int(s) for s in choose_seeds.seed.unique()),
        "divergence_rule": DIVERGENCE_RULE, "baselines": list(claim["baselines"]), "roles": roles,
        "claims": entries, "tuned_rule": TUNED_RULE, "tuned_claims": tuned, "tuned_note": tuned_note,
        "mixed_commits": mixed,
        "critical_batch_rule": CRITICAL_RULE, "critical_batch": _critical(runs, history, _target(study, runs), sides),
        "target_top1": _target(study, runs), "target_top1_written": _written_targets(runs),
        "noise_scale_rule": NOISE_RULE, "noise_scale_published": PUBLISHED_NOISE,
        "noise_scale_mapping": _noise(runs, history, scale),
        "configurations": [{"config_id": r.config_id, "optimizer": r.optimizer, "label": r.label,
                            "global_batch": int(r.global_batch), "epochs": float(r.epochs), "n_seeds": int(r.n_seeds),
                            "n_diverged": int(r.n_diverged), "top1_mean": _num(r.top1_mean),
                            "top1_ci95": _ci(r.top1_low, r.top1_high), "val_top1_mean": _num(r.val_top1_mean),
                            "base_lr": _num(r.base_lr), "seeds": r.seeds, "git_commits": r.git_commits}
                           for _, r in summary.iterrows()],
    }
    doc["search"] = None if searched is None else search_doc(runs, study, waiting)
    doc["caveats"] = caveats(doc, summary)
    return doc


def _in_trial_order(choose: pd.DataFrame, prep: pd.DataFrame) -> pd.DataFrame:
    """The choosing seed's configurations in trial order, so that a tie in validation top-1 goes to the lowest
    trial index, as bench.search.choose breaks it (the sweep confirmed that trial)."""
    trial = {cid: json.loads(c).get("trial", -1) if isinstance(c, str) else -1
             for cid, c in zip(prep.config_id, prep.config, strict=True)}
    order = choose.config_id.map(trial).fillna(-1)
    return choose.assign(_trial=order).sort_values(["_trial"], kind="stable").drop(columns="_trial")


def _lr_rule(chosen: pd.DataFrame) -> list[dict]:
    """Per optimizer and budget: the chosen peak learning rate's slope against the batch on log-log axes (1: the
    linear rule, 0.5: the square-root rule, 0: one rate at every batch), from the chosen trials' base_lr."""
    out = []
    for (opt, budget), g in chosen[chosen.trial.notna()].groupby(["optimizer", "epochs"], sort=True):
        lrs = [(int(b), v.get("base_lr")) for b, v in zip(g.global_batch, g["values"], strict=True)]
        lrs = [(b, lr) for b, lr in lrs if lr is not None]
        slope = None
        if len({b for b, _ in lrs}) >= 2:
            x = np.log([b for b, _ in lrs])
            y = np.log([lr * b for b, lr in lrs])  # the peak up to reference_batch, which no slope sees
            slope = _num(float(np.polyfit(x, y, 1)[0]))
        out.append({"optimizer": opt, "epochs": float(budget), "slope": slope,
                    "base_lr": {str(b): _num(lr) for b, lr in lrs}})
    return out


def search_doc(runs: pd.DataFrame, study: dict, waiting: list) -> dict:
    """claims.json ``search``: the protocol as declared (sampler, seed, N, spaces, metric, confirmation seeds),
    each study's chosen trial (its values, validation top-1, infeasible count, parameters at a range's end), the
    infeasible fraction per batch, the chosen rate's scaling with the batch, and the comparisons that await
    their confirmation reruns."""
    trial_rows = tuning.trials(runs, study)
    chosen = tuning.chosen(trial_rows, study)
    declared = tuning.declared(study)
    counts = sorted(set(declared["trials"].values()))
    return {"protocol": declared, "equal_budget": len(counts) == 1,
            "budget_statement": (f"{counts[0]} trials per optimizer and study, the same for every optimizer"
                                 if len(counts) == 1 else "UNEQUAL budgets (unequal_budget = true): "
                                 + ", ".join(f"{o} {n}" for o, n in declared["trials"].items())),
            "chosen": [{"optimizer": r.optimizer, "global_batch": int(r.global_batch), "epochs": float(r.epochs),
                        "trial": None if r.trial is None or pd.isna(r.trial) else int(r.trial),
                        "config_id": r.config_id, "val_top1": _num(r.val_top1),
                        "values": {k: (_num(v) if isinstance(v, float) else v) for k, v in r["values"].items()},
                        "n_trials": int(r.n_trials), "n_run": int(r.n_run), "n_infeasible": int(r.n_infeasible),
                        "boundary": [list(b) for b in r.boundary]} for _, r in chosen.iterrows()],
            "infeasible_by_batch": tuning.infeasible_by_batch(chosen) if len(chosen) else [],
            "lr_rule": _lr_rule(chosen) if len(chosen) else [],
            "awaiting_confirmation": waiting}


def caveats(doc: dict, summary: pd.DataFrame) -> list[str]:
    """What separates our runs from the paper's study: budget, dataset, steps per run, reach in batch."""
    out = []
    written = [w["target_top1"] for w in doc.get("target_top1_written") or []]
    if doc.get("target_top1") and written and set(written) != {doc["target_top1"]}:
        out.append(f"Target top-1: the runs were written under target_top1 {', '.join(f'{t:g}' for t in written)}; "
                   f"steps to the target are re-evaluated from every run's evaluations at {doc['target_top1']:g} (the "
                   "study's), never read from a row written under another target.")
    study_data, study_model = PAPER_STUDY[doc["paper_dataset"]]
    budgets = sorted(summary.epochs.unique())
    if budgets != [float(doc["paper_epochs"])]:
        out.append(f"Budget: {', '.join(f'{b:g}' for b in budgets)} epochs here, {doc['paper_epochs']} in the paper's "
                   "study; large-batch gaps shrink or grow with the budget.")
    if (doc["dataset"], doc["model"]) != (study_data, study_model):
        out.append(f"Dataset: {doc['dataset']} / {doc['model']} here, {study_data} / {study_model} in the paper.")
    differs = bool(out)
    scale = doc["paper_train_size"] / doc["train_size"]
    largest = summary.loc[summary.global_batch.idxmax()]
    paper_batch = largest.global_batch * scale
    out.append(f"Steps per run: at our largest batch, {largest.global_batch} (the paper's {paper_batch:.0f} by steps "
               f"per epoch), a run takes {largest.steps} steps; the paper's run there took about "
               f"{doc['paper_epochs'] * doc['paper_train_size'] / paper_batch:.0f}.")
    short = summary.global_batch.max() * scale < doc["paper_claim_batch"]
    if differs or short:
        reach = (f"does not reach the claim's batch ({doc['paper_claim_batch']}) even in paper-equivalent steps per "
                 "epoch" if short else "")
        how = " and " if short and differs else ""
        out.append(f"This profile {reach}{how}{'differs from the paper study as above' if differs else ''}: it is "
                   "evidence about the trend, not a test of the claim.")
    return out


def markdown(doc: dict) -> str:
    """claims.md: the document in prose (plots.claims_text)."""
    from plots import claims_text

    return claims_text.markdown(doc)
