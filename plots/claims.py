"""The claims, machine-readable: per (global batch, epoch budget), NLCG against the best baseline.

``build(runs, reference, paper_dataset)`` returns the document ``claims.json`` holds; ``markdown`` says the
same in prose (``claims.md``). Every number comes from the runs table and ``paper_reference.csv``.

Rules (also written into both files):

- One configuration per side (``stats.prepare``): a claim compares the seeds of one NLCG configuration with
  the seeds of one baseline configuration, at one (batch, budget) and one *setting* (the fields other than
  the optimizer's own: base_lr, hparams, and fields whose values differ between optimizers, such as a
  sweep's per-optimizer overrides; ``stats.tuning_keys``). The best baseline is the baseline configuration (rmsprop,
  momentum, sgd, lars, lamb) with the highest mean test top-1: chosen on test, which favours the baseline.
- The gain is 100 x (NLCG mean - baseline mean) with Welch's 95 % t interval; the verdict is ``holds``
  when its low end is above 0, ``fails`` when its high end is below 0, else ``inconclusive`` (also when a
  side has fewer than 2 seeds: no interval).
- Divergence is failure: an NLCG configuration with a diverged seed ``fails`` (no gain is computed from
  the seeds that survived); a baseline configuration with a diverged seed has no mean and cannot be the
  best baseline; it is listed in ``baselines_excluded`` with its count, because excluding it can make
  NLCG's comparison easier. No baseline left: ``inconclusive``.
- Tuned claims (``tuned_claims``), when an optimizer has several configurations at a point and setting
  (so differing only in its own fields: base_lr, hparams, overrides): each optimizer at its configuration
  with the best mean ``val_top1`` (the held-out validation split), the best baseline likewise chosen on
  validation, both reported on test top-1.
"""

from __future__ import annotations

import math

import pandas as pd

from plots import stats

BASELINES = ("rmsprop", "momentum", "sgd", "lars", "lamb")
COMPARED = ("nlcg-fr", "nlcg-pr")
PAPER_NLCG = "nlcg-fr"  # the paper's NLCG: Fletcher-Reeves, BFGS preconditioner, step line search
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


def paper_gains(reference: pd.DataFrame) -> pd.DataFrame:
    """Per global batch of the paper's table: top-1 per optimizer, the best baseline and NLCG's gain (points)."""
    wide = reference.groupby(["global_batch", "optimizer"]).top1.mean().unstack("optimizer")
    have = [b for b in BASELINES if b in wide]
    if PAPER_NLCG in wide and have:
        wide["best_baseline"] = wide[have].max(axis=1)
        wide["nlcg_gain_points"] = 100 * (wide[PAPER_NLCG] - wide["best_baseline"])
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
                f"{prefix}top1_mean": None, f"{prefix}top1_ci95": None}
    return {f"{prefix}label": cfg.label, f"{prefix}config_id": cfg.config_id, f"{prefix}n_seeds": int(cfg.n_seeds),
            f"{prefix}n_diverged": int(cfg.n_diverged), f"{prefix}top1_mean": _num(cfg.top1_mean),
            f"{prefix}top1_ci95": _ci(cfg.top1_low, cfg.top1_high)}


def compare(nlcg: pd.Series, base: pd.Series | None) -> dict:
    """gain_points, ci95_points, verdict and reason for one NLCG configuration against one baseline's."""
    if nlcg.n_diverged:
        return {"gain_points": None, "ci95_points": None, "verdict": "fails",
                "reason": f"{nlcg.n_diverged}/{nlcg.n_seeds} NLCG seeds diverged"}
    if base is None:
        return {"gain_points": None, "ci95_points": None, "verdict": "inconclusive",
                "reason": "no baseline configuration without a diverged seed at this point"}
    gain = 100 * (nlcg.top1_mean - base.top1_mean)
    if min(nlcg.n_seeds, base.n_seeds) < 2:
        return {"gain_points": _num(gain), "ci95_points": None, "verdict": "inconclusive",
                "reason": f"{nlcg.n_seeds} vs {base.n_seeds} seeds: no interval with fewer than 2 on a side"}
    _, low, high = stats.welch(nlcg.top1_values, base.top1_values)
    ci = [100 * low, 100 * high]
    return {"gain_points": _num(gain), "ci95_points": [_num(ci[0]), _num(ci[1])], "verdict": stats.verdict(*ci),
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


def _entries(summary: pd.DataFrame, pick, scale, gains, extra=lambda cfg, prefix: {}) -> list[dict]:
    """One entry per compared configuration and point; ``pick(rows)`` chooses configurations."""
    out = []
    for (batch, budget, setting), here in summary.groupby(["global_batch", "epochs", "setting"], sort=True):
        bases = here[here.optimizer.isin(BASELINES)]
        chosen = pick(bases, baseline=True)
        excluded = [f"{r.optimizer}{', ' + r.label if r.label else ''} ({r.n_diverged}/{r.n_seeds} seeds diverged)"
                    for _, r in bases[bases.n_diverged > 0].iterrows()]
        for opt in [o for o in COMPARED if o in set(here.optimizer)]:
            for _, cfg in pick(here[here.optimizer == opt], baseline=False).iterrows():
                base = None if chosen.empty else chosen.iloc[0]
                out.append({"global_batch": int(batch), "epochs": float(budget), "setting": setting,
                            "optimizer": opt, "baseline": None if base is None else base.optimizer,
                            **_side(cfg, ""), **_side(base, "baseline_"), **compare(cfg, base),
                            "baselines_excluded": excluded, **_paper(int(batch), scale, gains),
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


def _every_nlcg(rows: pd.DataFrame, baseline: bool) -> pd.DataFrame:
    if baseline:
        ok = rows[rows.top1_mean.notna()]
        return ok.loc[[ok.top1_mean.idxmax()]] if len(ok) else ok
    return rows


def _tuned(summary: pd.DataFrame, scale, gains) -> tuple[list[dict], str | None]:
    several = summary.groupby(["global_batch", "epochs", "setting", "optimizer"]).config_id.transform("nunique") > 1
    points = summary[several][["global_batch", "epochs", "setting"]].drop_duplicates()
    if points.empty:
        return [], None
    tuned = summary.merge(points, on=["global_batch", "epochs", "setting"])
    trained = tuned[tuned.n_diverged == 0]
    if trained.empty or trained.val_top1_mean.isna().any():
        return [], ("Several learning rates or hyperparameters were run, but val_top1 is missing: tuning on the "
                    "test set would be unfair, so the tuned comparison is skipped.")

    def chosen_lr(cfg, prefix):
        tried = tuned[(tuned.optimizer == cfg.optimizer) & (tuned.global_batch == cfg.global_batch)
                      & (tuned.epochs == cfg.epochs) & (tuned.setting == cfg.setting)]
        return {f"{prefix}chosen_base_lr": _num(cfg.base_lr), f"{prefix}val_top1_mean": _num(cfg.val_top1_mean),
                f"{prefix}configurations_tried": len(tried)}

    return _entries(tuned, _best_on("val_top1_mean"), scale, gains, chosen_lr), None


def build(runs: pd.DataFrame, reference: pd.DataFrame | None, paper_dataset: str = "cifar100") -> dict:
    """The claims document of one sweep's runs (see the module docstring for the rules)."""
    prep = stats.prepare(runs)
    summary = stats.summarize(prep)
    reference = reference if reference is not None and len(reference) else None
    gains = paper_gains(reference) if reference is not None else None
    paper_train = int(reference.train_size.iloc[0]) if reference is not None else stats.TRAIN_SIZES[paper_dataset]
    ours_train = stats.train_size(prep)
    scale = paper_train / ours_train
    claim, claim_batch, paper_epochs = PAPER_CLAIMS[paper_dataset]
    mixed = [{"config_id": r.config_id, "optimizer": r.optimizer, "label": r.label, "global_batch": int(r.global_batch),
              "epochs": float(r.epochs), "git_commits": r.git_commits}
             for _, r in summary.iterrows() if len(r.git_commits) > 1]
    tuned, tuned_note = _tuned(summary, scale, gains)
    doc = {
        "sweep": str(prep.sweep.iloc[0]), "dataset": str(prep.dataset.iloc[0]), "model": str(prep.model.iloc[0]),
        "train_size": ours_train, "paper_dataset": paper_dataset, "paper_train_size": paper_train,
        "paper_claim": claim, "paper_claim_batch": claim_batch, "paper_epochs": paper_epochs,
        "paper_source": None if reference is None else str(reference.source.iloc[0]),
        "interval_method": INTERVAL_METHOD, "seed_interval_method": SEED_INTERVAL_METHOD,
        "divergence_rule": DIVERGENCE_RULE, "baselines": list(BASELINES),
        "claims": _entries(summary, _every_nlcg, scale, gains),
        "tuned_rule": TUNED_RULE, "tuned_claims": tuned, "tuned_note": tuned_note,
        "mixed_commits": mixed,
        "configurations": [{"config_id": r.config_id, "optimizer": r.optimizer, "label": r.label,
                            "global_batch": int(r.global_batch), "epochs": float(r.epochs), "n_seeds": int(r.n_seeds),
                            "n_diverged": int(r.n_diverged), "top1_mean": _num(r.top1_mean),
                            "top1_ci95": _ci(r.top1_low, r.top1_high), "val_top1_mean": _num(r.val_top1_mean),
                            "base_lr": _num(r.base_lr), "seeds": r.seeds, "git_commits": r.git_commits}
                           for _, r in summary.iterrows()],
    }
    doc["caveats"] = caveats(doc, summary, gains)
    return doc


def caveats(doc: dict, summary: pd.DataFrame, gains: pd.DataFrame | None) -> list[str]:
    """What separates our runs from the paper's study: budget, dataset, steps per run, reach in batch."""
    out = []
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


def _pm(mean, ci, n: int) -> str:
    if mean is None:
        return f"undefined ({n} seeds)"
    return f"{mean:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}] over {n} seeds" if ci else
                            f" ({n} seed{'s' if n > 1 else ''}, no interval)")


def _claim_lines(entries: list[dict], tuned: bool) -> list[str]:
    out = []
    for e in entries:
        who = e["optimizer"] + (f" ({e['label']})" if e["label"] else "")
        base = "no baseline" if e["baseline"] is None else \
            e["baseline"] + (f" ({e['baseline_label']})" if e["baseline_label"] else "")
        where = f"batch {e['global_batch']}" + (f" (the paper's {e['paper_batch']})" if e["paper_batch"] else "") + \
            f", {e['epochs']:g} epochs" + (f", {e['setting']}" if e["setting"] else "")
        gain = "no gain" if e["gain_points"] is None else f"{e['gain_points']:+.1f} points"
        ci = f", 95 % [{e['ci95_points'][0]:+.1f}, {e['ci95_points'][1]:+.1f}]" if e["ci95_points"] else ""
        lrs = f"; chosen base_lr {e['chosen_base_lr']:g} vs {e['baseline_chosen_base_lr']:g} on validation" \
            if tuned and e["baseline"] is not None else ""
        paper = "" if e["paper_gain_points"] is None else \
            f"; the paper at {e['paper_reference_batch']}: {e['paper_gain_points']:+.1f} points"
        div = f" ({e['n_diverged']}/{e['n_seeds']} seeds diverged)" if e["n_diverged"] else ""
        theirs = "" if e["baseline"] is None else \
            " " + _pm(e["baseline_top1_mean"], e["baseline_top1_ci95"], e["baseline_n_seeds"])
        out.append(f"- **{e['verdict']}** at {where}: {who} {_pm(e['top1_mean'], e['top1_ci95'], e['n_seeds'])}{div} "
                   f"against {base}{theirs}: {gain}{ci}{lrs}{paper}."
                   + (f" {e['reason']}." if e["reason"] else "")
                   + (f" Excluded baselines: {'; '.join(e['baselines_excluded'])}." if e["baselines_excluded"] else ""))
    return out or ["- No NLCG configuration beside a baseline here: nothing to compare."]


def markdown(doc: dict, reference: pd.DataFrame | None = None) -> str:
    """claims.md: the document in prose."""
    cfgs = pd.DataFrame(doc["configurations"])
    n_div = int(cfgs.n_diverged.sum())
    out = [f"# Claims: {doc['sweep']}", "",
           f"Ours: {doc['dataset']}, {doc['model']}, {len(cfgs)} configurations, {int(cfgs.n_seeds.sum())} finished "
           f"runs ({n_div} diverged), budgets {', '.join(f'{b:g}' for b in sorted(cfgs.epochs.unique()))} epochs.", "",
           f"Means over the seeds of one configuration (never across configurations), intervals: "
           f"{doc['seed_interval_method']}. Gains: {doc['interval_method']}. Verdict: holds when the interval is "
           "above 0, fails when below, inconclusive otherwise (and with fewer than 2 seeds on a side).", "",
           f"Divergence: {doc['divergence_rule']}", "", "## NLCG against the best baseline (chosen on test top-1)", ""]
    out += _claim_lines(doc["claims"], tuned=False) + [""]
    if doc["tuned_claims"] or doc["tuned_note"]:
        out += ["## Tuned: each optimizer at its best configuration on validation", "", doc["tuned_rule"], ""]
        out += ([doc["tuned_note"]] if doc["tuned_note"] else _claim_lines(doc["tuned_claims"], tuned=True)) + [""]
    if doc["mixed_commits"]:
        out += ["## Seeds from different commits", ""]
        out += [f"- {m['optimizer']}{', ' + m['label'] if m['label'] else ''} at batch {m['global_batch']}, "
                f"{m['epochs']:g} epochs (config {m['config_id']}): commits {', '.join(m['git_commits'])}."
                for m in doc["mixed_commits"]] + [""]
    out += ["## The paper's claim", "", f"> {doc['paper_claim']}", ""]
    if reference is not None and len(reference):
        gains = paper_gains(reference)
        big = gains[gains.index >= doc["paper_claim_batch"]]
        out.append(f"- Paper ({doc['paper_source']}): at batch {', '.join(map(str, big.index))} its NLCG gain over "
                   f"its best baseline is {', '.join(f'{x:+.1f}' for x in big.nlcg_gain_points)} points.")
    else:
        out.append("- The paper publishes no table for this study: only the claim above (paper_gain_points: null).")
    out += [f"- {c}" for c in doc["caveats"]]
    return "\n".join(out) + "\n"

