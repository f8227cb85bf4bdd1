"""A study's variants (the [[grid]] tables named ``variant = "NAME"``, bench.grid): ablations of the method, other
rules for the baselines, other optimizers. Each is drawn and compared on its own, never pooled with the study's
runs (``split``), against the study's own optimizers its table lists in ``compare`` (default: its own optimizer's
study runs and the method under test) at every (batch, budget) cell both ran, with Welch's interval and Holm's
adjustment over the folder's variant comparisons (``build``); claims.md ends with a paragraph generated from those
numbers (``paragraph``). Figures: ``ablation`` (every variant's top-1 at its cells, seeds as points, beside the
study's optimizers against the batch and the paper's table on a second axis) and ``diagnostics`` (NLCG's alpha,
beta and preconditioner spread over training against the scheduled rates).

A variant or reference with several configurations at one cell (a grid of rates) is chosen on validation: the
highest mean val_top1 over its seeds, a diverged seed making a configuration infeasible; it is then judged on test
top-1 on the same seeds (stated in claims.md: a choice on validation images, not on fresh seeds)."""

from __future__ import annotations

import json
import math

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from bench import study as study_mod
from plots import claims, figures, inference, stats

matplotlib.use("Agg")

CHOICE_RULE = ("A variant (or reference) with several configurations at a cell is chosen on validation: the highest "
               "mean val_top1 over its seeds (a configuration with a diverged seed is infeasible), then judged on "
               "test top-1 on the same seeds: a choice on held-out images, not on fresh seeds.")
# NLCG's per-step history columns the diagnostics read (bench.train logs them for NLCG-type optimizers)
DIAGNOSTICS = ("alpha", "beta", "precond_min", "precond_mean", "precond_max")
BETA_CAP = 0.999  # FR's beta at (or within rounding of) its cap of 1


def memberships(runs: pd.DataFrame, study: dict | None) -> tuple[pd.Series, pd.Series]:
    """Per row of ``runs``: whether it is one of the study's own runs, and the variants it belongs to
    (bench.study.memberships of its config JSON; a row without one is the study's)."""
    variants = (study or {}).get("variants")
    own, names = [], []
    for value in (runs.config if "config" in runs else [None] * len(runs)):
        cfg = json.loads(value) if isinstance(value, str) and value else None
        is_own, named = study_mod.memberships(cfg, variants) if cfg is not None else (True, [])
        own.append(is_own)
        names.append(named)
    return pd.Series(own, index=runs.index, dtype=bool), pd.Series(names, index=runs.index, dtype=object)


def split(runs: pd.DataFrame, study: dict | None) -> pd.DataFrame:
    """The study's own rows of ``runs`` (every row when no variant is declared)."""
    own, _ = memberships(runs, study)
    return runs[own]


def _choose(rows: pd.DataFrame) -> tuple[pd.Series | None, str]:
    """The configuration a cell's candidates stand for, and how it was chosen."""
    if len(rows) == 1:
        return rows.iloc[0], "its one configuration"
    ok = rows[(rows.n_diverged == 0) & rows.val_top1_mean.notna()]
    if ok.empty:
        why = "every configuration diverged" if (rows.n_diverged > 0).all() else "no val_top1 to choose on"
        return None, f"{len(rows)} configurations, none chosen: {why}"
    best = ok.loc[ok.val_top1_mean.idxmax()]
    return best, f"best validation mean of {len(rows)} configurations (base_lr {best.base_lr:g})"


def _series_name(variant: str, optimizer: str, optimizers: list[str]) -> str:
    return variant if len(optimizers) == 1 else f"{variant}: {optimizer}"


def _prepared(runs: pd.DataFrame, study: dict | None) -> pd.DataFrame:
    prep = stats.prepare(runs, tuple((study or {}).get("tuning_fields") or stats.DEFAULT_TUNING))
    own, names = memberships(prep, study)
    return prep.assign(own=own.to_numpy(), variants=names.to_numpy())


def _summary(prep: pd.DataFrame) -> pd.DataFrame:
    if prep.empty:
        return pd.DataFrame(columns=["config_id", "optimizer", "global_batch", "epochs", "n_seeds", "n_diverged",
                                     "top1_mean", "val_top1_mean", "base_lr", "top1_values", "label", "seeds",
                                     "top1_low", "top1_high"])
    return stats.summarize(prep)


def compare(variant: pd.Series | None, reference: pd.Series | None) -> dict:
    """gain_points (variant - reference, top-1 points), ci95_points, p_value, verdict and reason."""
    none = {"gain_points": None, "ci95_points": None, "p_value": None, "verdict": "inconclusive"}
    if variant is None or reference is None:
        return {**none, "reason": "no configuration chosen on " + ("the variant's" if variant is None else
                                                                    "the reference's") + " side"}
    if variant.config_id == reference.config_id:
        return {**none, "gain_points": 0.0, "reason": "the variant's choice is the study's own configuration (the "
                                                      "same runs): no test"}
    if variant.n_diverged:
        return {**none, "verdict": "fails", "reason": f"{variant.n_diverged}/{variant.n_seeds} seeds of the variant "
                                                      "diverged"}
    if reference.n_diverged:
        return {**none, "verdict": "holds", "reason": f"{reference.n_diverged}/{reference.n_seeds} seeds of the "
                                                      "reference diverged, none of the variant's"}
    out = claims.compare(variant, reference)
    return {k: out[k] for k in ("gain_points", "ci95_points", "p_value", "verdict", "reason")}


def build(runs: pd.DataFrame, study: dict | None, doc: dict, history: pd.DataFrame | None = None) -> dict | None:
    """claims.json ``variants``: every variant's chosen configuration per cell and its comparisons (Holm over
    the folder's variant comparisons), NLCG's diagnostics per series at the primary claim's batch, and the
    generated paragraph. None when the study declares no variants."""
    declared = ((study or {}).get("variants") or {}).get("variants")
    if not declared:
        return None
    prep = _prepared(runs, study)
    summary = _summary(prep)
    own_ids = set(prep.config_id[prep.own])
    members = {}
    for cid, names in zip(prep.config_id, prep.variants, strict=True):
        members.setdefault(cid, set()).update(names)
    method = doc["primary"].get("optimizer") or (study or {}).get("claim", {}).get("optimizer")
    series, entries = [], []
    for name, entry in declared.items():
        opts = entry.get("optimizers") or []
        rows = summary[summary.config_id.map(lambda c, n=name: n in members.get(c, ()))]
        for opt in opts:
            mine = rows[rows.optimizer == opt]
            for (batch, budget), cell in mine.groupby(["global_batch", "epochs"], sort=True):
                chosen, how = _choose(cell)
                label = _series_name(name, opt, opts)
                series.append({"series": label, "variant": name, "optimizer": opt, "global_batch": int(batch),
                               "epochs": float(budget), "chosen": how, "configurations": len(cell),
                               **claims._side(chosen, ""),
                               "base_lr": None if chosen is None else claims._num(chosen.base_lr),
                               "top1_values": [] if chosen is None else [float(x) for x in chosen.top1_values]})
                for against in entry.get("compare") or []:
                    refs = summary[summary.config_id.isin(own_ids) & (summary.optimizer == against)
                                   & (summary.global_batch == batch) & (summary.epochs == budget)]
                    if refs.empty:
                        continue
                    ref, ref_how = _choose(refs)
                    entries.append({"series": label, "variant": name, "optimizer": opt, "global_batch": int(batch),
                                    "epochs": float(budget), "against": against, "chosen": how,
                                    "reference_chosen": ref_how, **claims._side(chosen, ""),
                                    **claims._side(ref, "reference_"), **compare(chosen, ref)})
    adjusted = inference.holm([math.nan if e["p_value"] is None else e["p_value"] for e in entries])
    for e, p in zip(entries, adjusted, strict=True):
        e["p_holm"] = claims._num(p)
        e["verdict_adjusted"] = e["verdict"] if e["p_value"] is None else inference.verdict(e["gain_points"], p)
    out = {"choice_rule": CHOICE_RULE, "test": inference.EXPLORATORY_TEST, "adjustment": "holm",
           "family_size": sum(e["p_value"] is not None for e in entries), "method": method,
           "series": series, "comparisons": entries,
           "diagnostics": diagnostics_table(prep, history, doc["primary"].get("global_batch"))}
    out["paragraph"] = paragraph(doc, out)
    return out


def _named(prep: pd.DataFrame) -> list[str]:
    """A series name per prepared row: its variant's (with its optimizer when the variant runs several), or its
    optimizer's for the study's own runs."""
    out = []
    for own, names, opt in zip(prep.own, prep.variants, prep.optimizer, strict=True):
        out.append(opt if own or not names else names[0] + f" ({opt})")
    return out


def diagnostics_table(prep: pd.DataFrame, history: pd.DataFrame | None, batch: int | None) -> list[dict]:
    """Per series at ``batch`` (the study's optimizers, each variant) whose history has NLCG's columns: mean and
    lowest alpha, mean and median beta, the share of steps with beta at its cap, the preconditioner's mean and its
    lowest entry (median over logged steps), over every logged step of every seed."""
    if history is None or history.empty or batch is None or not set(DIAGNOSTICS) & set(history.columns):
        return []
    at = prep[prep.global_batch == batch]
    names = dict(zip(at.run_id, _named(at), strict=True))
    h = history[history.run_id.isin(names) & history.loss.notna()] if "loss" in history else history.iloc[:0]
    out = []
    for name, g in h.groupby(h.run_id.map(names), sort=True):
        if not any(c in g and g[c].notna().any() for c in DIAGNOSTICS):
            continue
        row = {"series": name, "runs": int(g.run_id.nunique()), "steps_logged": int(len(g))}
        for col, how in (("alpha", "mean"), ("alpha", "min"), ("beta", "mean"), ("beta", "median"),
                         ("precond_mean", "mean"), ("precond_min", "median"), ("precond_min", "min")):
            row[f"{col}_{how}"] = claims._num(getattr(g[col], how)()) if col in g and g[col].notna().any() else None
        row["beta_at_cap"] = claims._num((g.beta[g.beta.notna()] >= BETA_CAP).mean()) \
            if "beta" in g and g.beta.notna().any() else None
        out.append(row)
    return out


def _fmt_gain(e: dict) -> str:
    if e["p_value"] is None:  # no test: a divergence, the same runs, too few seeds
        number = f"{e['gain_points']:+.1f} points, " if e["gain_points"] is not None else ""
        return f"{number}{e['verdict']} ({e['reason']})" if e.get("reason") else f"{number}{e['verdict']}"
    ci = e["ci95_points"]
    return (f"{e['gain_points']:+.1f} points" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "")
            + f", {e['verdict_adjusted']} after Holm")


def paragraph(doc: dict, variants: dict) -> str:
    """Which component carries NLCG's gain at the primary claim's batch (or that none does), in words, from the
    primary claim and the variant comparisons alone."""
    p = doc["primary"]
    method = variants["method"]
    batch = p.get("global_batch")
    gain, ci, verdict = p.get("gain_points"), p.get("ci95_points"), p.get("verdict")
    chosen = sorted({b.get("baseline") for b in p.get("per_budget") or [] if b.get("baseline")})
    against = ("the best baseline" + (f" ({', '.join(chosen)})" if chosen else "")) if p.get("baseline") == "best" \
        else str(p.get("baseline"))
    head = (f"At batch {batch}, {method} against {against} reads "
            + (f"{gain:+.1f} points [{ci[0]:+.1f}, {ci[1]:+.1f}] ({verdict}, the primary claim)" if gain is not None
               and ci else f"no number ({verdict})") + ".")
    at = [e for e in variants["comparisons"] if e["global_batch"] == batch]
    ablations = [e for e in at if e["optimizer"] == method and e["against"] == method]
    others = [e for e in at if e["optimizer"] != method and e["against"] == method]
    own = [e for e in at if e["against"] == e["optimizer"] and e["optimizer"] != method]
    parts = [head]
    if ablations:
        parts.append("Against full " + method + ": " + "; ".join(f"{e['series']} {_fmt_gain(e)}" for e in ablations)
                     + ".")
    if own:
        parts.append("Against their own optimizer's study runs: " + "; ".join(f"{e['series']} {_fmt_gain(e)}"
                                                                             for e in own) + ".")
    if others:
        parts.append(f"Against {method}: " + "; ".join(f"{e['series']} {_fmt_gain(e)}" for e in others) + ".")
    carriers = [e["series"] for e in ablations if e["verdict_adjusted"] == "fails"]
    reach = [e["series"] for e in others if e["verdict_adjusted"] != "fails" and e["gain_points"] is not None]
    below = "below full " + method + " under Holm, or diverging where it does not"
    if verdict != "holds":
        verdict_text = (f"So the stand-in shows no gain of {method} over the baselines at this batch to explain (the "
                        f"primary claim is {verdict})")
        if carriers:
            verdict_text += "; but what " + ", ".join(carriers) + " removes matters to " + method + " itself (" + below + ")"
    elif carriers:
        verdict_text = "So the gain is carried by what " + ", ".join(carriers) + " removes (" + below + ")"
    elif ablations:
        verdict_text = (f"So no single component carries the gain: no ablation is below full {method} under Holm "
                        "(with these seeds, a loss smaller than its interval would go unseen)")
    else:
        verdict_text = f"No ablation of {method} ran at this batch, so no component can be named"
    if reach:
        verdict_text += ("; not significantly below " + method + " under Holm: " + ", ".join(reach))
    parts.append(verdict_text + ".")
    return " ".join(parts)


# ---- figures ------------------------------------------------------------------------------------------------


def _categories(prep: pd.DataFrame, summary: pd.DataFrame, doc_variants: dict, batch: int) -> list[tuple]:
    """(name, optimizer, top-1 per seed, mean, ci) at ``batch``: the study's optimizers, then each variant's
    chosen configuration."""
    out = []
    own = prep[prep.own & (prep.global_batch == batch)]
    for opt, g in own.groupby("optimizer", sort=False):
        cfgs = summary[summary.config_id.isin(set(g.config_id))]
        chosen, _ = _choose(cfgs)
        if chosen is not None:
            out.append((opt + _diverged(chosen.n_diverged, chosen.n_seeds), opt, list(chosen.top1_values),
                        chosen.top1_mean, (chosen.top1_low, chosen.top1_high)))
    for s in doc_variants["series"]:
        if s["global_batch"] == batch and s["config_id"] is not None:
            ci = s["top1_ci95"] or [math.nan, math.nan]
            mean = math.nan if s["top1_mean"] is None else s["top1_mean"]
            out.append((s["series"] + _diverged(s["n_diverged"], s["n_seeds"]), s["optimizer"], s["top1_values"],
                        mean, tuple(ci)))
    return out


def _diverged(n: int, of: int) -> str:
    return f" ({n}/{of} diverged)" if n else ""


def ablation(runs: pd.DataFrame, study: dict | None, doc: dict, reference: pd.DataFrame | None = None) -> Figure:
    """Left: top-1 of the study's optimizers and every variant at the primary claim's batch (seeds as points, the
    mean as a bar with its 95 % interval). Right: the study's optimizers against the batch (our batches mapped to
    the paper's by steps per epoch) with the paper's table on a second axis."""
    variants = doc.get("variants")
    if not variants:
        return figures._empty("no variants declared ([[grid]] tables named variant = \"NAME\")")
    prep = _prepared(runs, study)
    summary = _summary(prep)
    batch = doc["primary"].get("global_batch")
    cats = _categories(prep, summary, variants, batch)
    fig = Figure(figsize=(13, max(4.0, 0.42 * len(cats) + 1.6)), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.25, 1])
    for i, (name, opt, values, mean, ci) in enumerate(cats):
        c = figures.color(opt)
        y = len(cats) - 1 - i
        if not math.isnan(mean):
            left.barh(y, mean, color=c, alpha=0.25, height=0.7)
            if not any(math.isnan(x) for x in ci):
                left.errorbar(mean, y, xerr=[[mean - ci[0]], [ci[1] - mean]], color=c, capsize=3, lw=1)
        finite = [v for v in values if not math.isnan(v)]  # a diverged seed has no top-1: said in the label
        left.scatter(finite, [y] * len(finite), color=c, s=18, zorder=3)
    left.set_yticks(range(len(cats)), [c[0] for c in reversed(cats)], fontsize=8)
    finite = [v for c in cats for v in c[2] if not math.isnan(v)]
    if finite:
        left.set_xlim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.03))
    left.set_xlabel("test top-1 (points: seeds; bar: mean, 95 % interval)")
    paper = doc.get("primary", {}).get("paper_batch")
    left.set_title(f"at batch {batch}" + (f" (the paper's {paper:,} by steps per epoch)" if paper else ""), fontsize=10)
    left.grid(alpha=0.3, axis="x")
    scale = doc["paper_train_size"] / doc["train_size"]
    own = summary[summary.config_id.isin(set(prep.config_id[prep.own]))]
    for opt, g in own.groupby("optimizer", sort=False):
        pts = []
        for b, cell in g.groupby("global_batch"):
            chosen, _ = _choose(cell)
            if chosen is not None:
                pts.append((b * scale, chosen.top1_mean, chosen.top1_values))
        if not pts:
            continue
        c = figures.color(opt)
        right.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=c, label=f"{opt} (ours)", ms=4)
        for x, _, vals in pts:
            right.scatter([x] * len(vals), vals, color=c, s=10, alpha=0.5)
    right.set_xscale("log", base=2)
    right.set_xlabel(f"the paper's batch (ours x {scale:.2f}: the same steps per epoch)")
    right.set_ylabel(f"test top-1, {doc['dataset']} (ours)")
    right.grid(alpha=0.3)
    if reference is not None and len(reference):
        twin = right.twinx()
        shown = sorted(set(own.optimizer) & set(reference.optimizer))
        lo, hi = own.global_batch.min() * scale / 2, own.global_batch.max() * scale * 2
        for opt in shown:
            r = reference[(reference.optimizer == opt) & reference.global_batch.between(lo, hi)].sort_values(
                "global_batch")
            twin.plot(r.global_batch, r.top1, "--", marker="x", color=figures.color(opt), alpha=0.7,
                      label=f"{opt} (paper)")
        twin.set_ylabel(f"top-1, the paper's {figures.PAPER_STUDIES.get(doc['paper_dataset'], doc['paper_dataset'])} "
                        "(dashed)")
        handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        right.legend(handles=handles, fontsize=7, loc="lower left")
    else:
        right.legend(fontsize=7, loc="lower left")
    right.set_title("the study's optimizers against the batch", fontsize=10)
    fig.suptitle(f"{doc['sweep']}: variants and ablations (claims.md \"Variants\")", fontsize=11)
    return fig


def diagnostics(runs: pd.DataFrame, study: dict | None, doc: dict, history: pd.DataFrame | None) -> Figure:
    """At the primary claim's batch, over the fraction of the budget trained (mean over seeds): the scheduled
    learning rate of every series, and NLCG's alpha, beta and preconditioner spread (its lowest and mean entry)
    for every series that logs them (NLCG-FR, its ablations, momentum with NLCG's preconditioner)."""
    batch = doc["primary"].get("global_batch")
    if history is None or history.empty or "lr" not in history:
        return figures._empty("no training history")
    prep = _prepared(runs, study)
    at = prep[prep.global_batch == batch]
    if at.empty:
        return figures._empty(f"no runs at batch {batch}")
    names = dict(zip(at.run_id, _named(at), strict=True))
    steps = dict(zip(at.run_id, [_budget_steps(r) for r in at.to_dict("records")], strict=True))
    h = history[history.run_id.isin(names) & history.loss.notna()].copy()
    h["series"] = h.run_id.map(names)
    h["progress"] = h.step / h.run_id.map(steps)
    h["bin"] = (h.progress * 50).round() / 50
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    panels = [("lr", "scheduled learning rate (peak at the end of warm-up)", True),
              ("alpha", "NLCG's line-search step alpha", False),
              ("beta", "NLCG's beta (heavy-ball momentum: fixed 0.9)", False),
              ("precond_min", "preconditioner: lowest entry (thick), mean (thin)", True)]
    colours = matplotlib.colormaps["tab10"].colors
    for ax, (col, title, logy) in zip(axes, panels, strict=True):
        for k, (name, g) in enumerate(h.groupby("series", sort=True)):
            if col not in g or not g[col].notna().any():
                continue
            mean = g.groupby("bin")[col].mean()
            style, c = figures._STYLES[k % len(figures._STYLES)][0], colours[k % len(colours)]
            ax.plot(mean.index, mean.values, style, color=c, label=name, lw=1.4)
            if col == "precond_min" and "precond_mean" in g:
                pm = g.groupby("bin").precond_mean.mean()
                ax.plot(pm.index, pm.values, style, color=c, lw=0.7, alpha=0.6)
        if col == "beta":
            ax.axhline(0.9, color="gray", lw=0.8, ls="--")
        if logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("fraction of the budget trained")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"{doc['sweep']} at batch {batch}: NLCG's diagnostics against the baselines' schedule "
                 "(mean over seeds)", fontsize=11)
    return fig


def _budget_steps(row: dict) -> float:
    """A run's planned length in optimizer steps (a diverged run stopped short of it): its step budget, else its
    epoch budget of its training set (bench.train.budget_steps' rule)."""
    cfg = json.loads(row["config"]) if isinstance(row.get("config"), str) else {}
    if cfg.get("steps"):
        return float(cfg["steps"])
    if "epochs" in cfg and row.get("train_size") and not pd.isna(row.get("train_size")):
        return float(math.ceil(float(cfg["epochs"]) * float(row["train_size"]) / float(row["global_batch"])))
    return float(row["steps"])


def lines(doc: dict) -> list[str]:
    """claims.md's "Variants" section: the rule, one line per series and comparison, the diagnostics, and the
    paragraph (claims.md ends with it)."""
    v = doc.get("variants")
    if not v:
        return []
    out = ["## Variants: the method taken apart, the baselines' rule varied", "",
           f"Each variant is compared with the study's own runs at the cells both ran; {v['test']}, Holm over the "
           f"{v['family_size']} variant comparisons. {v['choice_rule']}", ""]
    for s in v["series"]:
        ci = s["top1_ci95"]
        out.append(f"- {s['series']} at batch {s['global_batch']}, {s['epochs']:g} epochs: top-1 "
                   + (f"{s['top1_mean']:.4f}" if s["top1_mean"] is not None else "-")
                   + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "") + f" over {s['n_seeds']} seed(s)"
                   + (f", {s['n_diverged']} diverged" if s["n_diverged"] else "") + f" ({s['chosen']}).")
    out += ["", "| variant | batch | epochs | against | variant top-1 | reference top-1 | gain (points) | 95 % | p | "
                "p (Holm) | verdict (Holm) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in v["comparisons"]:
        ci = e["ci95_points"]
        out.append(f"| {e['series']} | {e['global_batch']} | {e['epochs']:g} | {e['against']} | "
                   f"{_g(e['top1_mean'], '.4f')} | {_g(e['reference_top1_mean'], '.4f')} | "
                   f"{_g(e['gain_points'], '+.2f')} | " + (f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "-")
                   + f" | {_g(e['p_value'], '.3g')} | {_g(e['p_holm'], '.3g')} | **{e['verdict_adjusted']}**"
                   + (f" ({e['reason']})" if e.get("reason") else "") + " |")
    if v["diagnostics"]:
        out += ["", f"NLCG's diagnostics at batch {doc['primary'].get('global_batch')} (every logged step of every "
                    "seed):", "", "| series | runs | alpha mean | alpha min | beta mean | beta median | beta at cap | "
                                  "precond mean | precond min (median) | precond min (lowest) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for d in v["diagnostics"]:
            out.append(f"| {d['series']} | {d['runs']} | {_g(d['alpha_mean'], '.4f')} | {_g(d['alpha_min'], '.3f')} | "
                       f"{_g(d['beta_mean'], '.3f')} | {_g(d['beta_median'], '.3f')} | {_g(d['beta_at_cap'], '.0%')} | "
                       f"{_g(d['precond_mean_mean'], '.3f')} | {_g(d['precond_min_median'], '.2g')} | "
                       f"{_g(d['precond_min_min'], '.2g')} |")
    return out + [""]


def _g(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


FIGURES = ("ablation", "diagnostics")


def draw(name: str, runs: pd.DataFrame, study: dict | None, doc: dict, history: pd.DataFrame | None,
         reference: pd.DataFrame | None) -> Figure:
    if name == "ablation":
        return ablation(runs, study, doc, reference)
    return diagnostics(runs, study, doc, history)


