"""The primary claim: one test, declared before the data (the sweep file's ``[claim]``, bench.study.declaration),
at 0.05, with every seed and budget it covers.

At the claim's batch and each of its budgets: the claimed optimizer's configuration and the baseline's are
chosen on the choosing seeds (the baseline: the best of the baseline configurations, or of the named
baseline's, by validation top-1 when every candidate has it, else by test top-1; the claimed optimizer's
likewise when it has several configurations there). Each budget is then judged on the confirmation seeds
when the sweep declares them (both chosen configurations must have run there), else on the choosing seeds,
and the budgets are pooled by ``plots.inference.stratified_welch``.
"""

from __future__ import annotations

import math

import pandas as pd

from plots import inference


def _num(x):
    return None if x is None or math.isnan(float(x)) else round(float(x), 6)


def _choose(rows: pd.DataFrame) -> tuple[pd.Series | None, str]:
    """The best configuration among ``rows`` without a diverged seed, and on what it was chosen."""
    ok = rows[rows.n_diverged == 0]
    if ok.empty:
        return None, ""
    on = "val_top1_mean" if ok.val_top1_mean.notna().all() else "top1_mean"
    ok = ok[ok[on].notna()]
    if ok.empty:
        return None, ""
    return ok.loc[ok[on].idxmax()], "validation" if on == "val_top1_mean" else "test"


def _baselines(claim: dict) -> tuple:
    return tuple(claim.get("baselines") or ()) if claim["baseline"] == "best" else (claim["baseline"],)


def test(claim: dict, choose: pd.DataFrame, judge: pd.DataFrame, scale: float, confirm_only: bool = False) -> dict:
    """The primary claim's document entry: its declaration, the configurations chosen per budget, and the
    stratified test's gain, interval, p-value and verdict (see the module docstring)."""
    batch, budgets = int(claim["global_batch"]), [float(e) for e in claim["epochs"]]
    out = {"optimizer": claim["optimizer"], "baseline": claim["baseline"], "global_batch": batch,
           "paper_batch": int(round(batch * scale)), "budgets": budgets, "declared": bool(claim.get("declared")),
           "test": inference.PRIMARY_TEST, "alpha": inference.ALPHA,
           "confirm_seeds": list(claim.get("confirm_seeds") or []), "per_budget": [], "gain_points": None,
           "ci95_points": None, "p_value": None, "verdict": "inconclusive", "reason": "", "robust": False}
    strata, reasons, judged_on = [], [], set()
    for budget in budgets:
        here = choose[(choose.global_batch == batch) & (choose.epochs == budget)]
        mine = here[here.optimizer == claim["optimizer"]]
        nlcg, nlcg_on = _choose(mine)
        base, base_on = _choose(here[here.optimizer.isin(_baselines(claim))])
        if mine.empty or base is None:
            reasons.append(f"{budget:g} epochs: {'no ' + claim['optimizer'] if mine.empty else 'no baseline'} "
                           "configuration without a diverged seed")
            continue
        if nlcg is None:
            out.update(verdict="fails", reason=f"{claim['optimizer']} diverged at {budget:g} epochs "
                                               "(every configuration has a diverged seed)")
            return out
        sides = [judge[judge.config_id == c.config_id] for c in (nlcg, base)]
        confirmed = all(len(s) for s in sides)
        if confirm_only and not confirmed:  # a search judges on its confirmation reruns alone, never the trials
            reasons.append(f"{budget:g} epochs: the chosen trials' confirmation reruns are not all in")
            continue
        a, b = (s.iloc[0] for s in sides) if confirmed else (nlcg, base)
        judged_on.add("confirmation seeds" if confirmed else "the choosing seeds")
        row = {"epochs": budget, "config_id": nlcg.config_id, "label": nlcg.label, "chosen_on": nlcg_on,
               "chosen_on_seeds": list(nlcg.seeds), "baseline": base.optimizer, "baseline_label": base.label,
               "baseline_config_id": base.config_id, "baseline_chosen_on": base_on,
               "judged_on": "confirmation seeds" if confirmed else "the choosing seeds", "seeds": list(a.seeds),
               "baseline_seeds": list(b.seeds), "top1_mean": _num(a.top1_mean),
               "baseline_top1_mean": _num(b.top1_mean), "n_diverged": int(a.n_diverged),
               "baseline_n_diverged": int(b.n_diverged),
               "gain_points": _num(100 * (a.top1_mean - b.top1_mean))}
        out["per_budget"].append(row)
        if a.n_diverged:
            out.update(verdict="fails", reason=f"{a.n_diverged}/{a.n_seeds} {claim['optimizer']} seeds diverged "
                                               f"at {budget:g} epochs")
            return out
        if b.n_diverged or min(a.n_seeds, b.n_seeds) < 2:
            reasons.append(f"{budget:g} epochs: {a.n_seeds} vs {b.n_seeds} seeds"
                           + (f", {b.n_diverged} baseline seeds diverged" if b.n_diverged else "")
                           + ": left out of the test")
            continue
        strata.append((list(a.top1_values), list(b.top1_values)))
    out["judged_on"] = " and ".join(sorted(judged_on)) or None
    out["budgets_tested"] = len(strata)
    out["reason"] = "; ".join(reasons)
    if not strata:
        out["reason"] = out["reason"] or "no budget with 2 seeds or more on each side"
        return out
    r = inference.stratified_welch(strata)
    out.update(gain_points=_num(100 * r["gain"]), ci95_points=[_num(100 * r["low"]), _num(100 * r["high"])],
               p_value=_num(r["p_value"]), df=_num(r["df"]), verdict=inference.verdict(r["gain"], r["p_value"]))
    out["robust"] = out["verdict"] != "inconclusive" and out["judged_on"] == "confirmation seeds"
    return out
