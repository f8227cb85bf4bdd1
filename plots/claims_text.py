"""claims.md, written from the claims document (plots.claims.build) alone: every number and verdict in the
prose is the JSON's, and each interval is printed at the precision that shows the sign that decided its
verdict (plots.inference.signed_interval)."""

from __future__ import annotations

import pandas as pd

from plots.inference import p_text, signed_interval


def _pm(mean, ci, n: int) -> str:
    if mean is None:
        return f"undefined ({n} seeds)"
    return f"{mean:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}] over {n} seeds" if ci else
                            f" ({n} seed{'s' if n > 1 else ''}, no interval)")


def _f4(x) -> str:
    return "undefined (a seed diverged)" if x is None else f"{x:.4f}"


def _g(x, fmt: str) -> str:
    """A critical-batch number: "inf" stays, None (NaN) is "undefined", else ``fmt``."""
    return "undefined" if x is None else x if isinstance(x, str) else format(x, fmt)


def _seeds(seeds) -> str:
    return ", ".join(map(str, seeds)) if seeds else "none"


def noise_lines(doc: dict) -> list[str]:
    """The stand-in in noise-scale terms: B_simple at the start and end, each batch as a multiple of both."""
    m = doc.get("noise_scale_mapping")
    if not m:
        return []
    out = ["## The stand-in in noise-scale terms", "", doc["noise_scale_rule"], "",
           f"B_simple over {m['n_runs']} runs: start {_g(m['start'], ',.0f')}, end {_g(m['end'], ',.0f')}; per "
           "optimizer: " + "; ".join(f"{o} {_g(d['start'], ',.0f')} -> {_g(d['end'], ',.0f')}"
                                      for o, d in m["by_optimizer"].items()) + ".", "",
           "| batch | paper's batch (steps per epoch) | batch / B_simple at start | at end |", "|---|---|---|---|"]
    out += [f"| {b['global_batch']} | {b['paper_batch']:,} | {_g(b['over_start'], '.2f')} | "
            f"{_g(b['over_end'], '.2f')} |" for b in m["batches"]]
    return out + ["", doc["noise_scale_published"], ""]


def against_lines(doc: dict) -> list[str]:
    """This sweep's claims beside other sweeps' at the same batches (report --against), budgets in steps."""
    blocks = doc.get("against") or []
    if not blocks:
        return []
    out = ["## Against other sweeps: the same batches at other budgets", "",
           "Each sweep's primary claim and its method-against-best-baseline comparisons at this sweep's batches; "
           "a budget is given in epochs and in optimizer steps (the paper's 90 epochs at 98,304 are ~1,170 "
           "steps). Exploratory verdicts are Holm-adjusted within their own sweep.", "",
           "| sweep | claim | optimizer | batch | epochs | steps | baseline | gain (points) [95 %] | verdict |",
           "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for block in blocks:
        if "missing" in block:
            notes.append(f"- {block['sweep']}: {block['missing']}.")
            continue
        if "dataset" in block and (block["dataset"], block["model"]) != (doc["dataset"], doc["model"]):
            notes.append(f"- {block['sweep']}: {block['dataset']} / {block['model']}, not this sweep's "
                         f"{doc['dataset']} / {doc['model']}.")
        for r in block["rows"]:
            ci = r["ci95_points"]
            gain = "undefined" if r["gain_points"] is None else \
                f"{r['gain_points']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
            out.append(f"| {r['sweep']} | {r['what']} | {r['optimizer']} | {r['global_batch']} | "
                       f"{', '.join(f'{e:g}' for e in r['epochs'])} | {', '.join(map(str, r['steps']))} | "
                       f"{r['baseline'] or '-'} | {gain} | {r['verdict']} |")
    return out + [""] + notes + ([""] if notes else [])


def primary_lines(doc: dict) -> list[str]:
    p = doc["primary"]
    how = "declared in the sweep file's [claim]" if p["declared"] else \
        "the default: no [claim] in the sweep file"
    budgets = ", ".join(f"{b:g}" for b in p["budgets"])
    out = [f"## Primary claim ({how})", "",
           f"{p['optimizer']} against the {'best baseline' if p['baseline'] == 'best' else p['baseline']} at batch "
           f"{p['global_batch']} (the paper's {p['paper_batch']} by steps per epoch), pooled over {budgets} epochs. "
           f"Test: {p['test']}.", ""]
    if p["gain_points"] is None:
        out.append(f"- **{p['verdict']}**: no test ({p['reason']}).")
    else:
        out.append(f"- **{p['verdict']}**: gain {p['gain_points']:+.2f} points, 95 % "
                   f"{signed_interval(*p['ci95_points'])}, {p_text(p['p_value'])}, over {p['budgets_tested']} "
                   f"budget(s), judged on {p['judged_on']}"
                   + ("; robust: decided on seeds that chose nothing." if p["robust"] else
                      "; not robust: the seeds that judged also chose the configurations." if
                      p["judged_on"] != "confirmation seeds" else ".")
                   + (f" Left out: {p['reason']}." if p["reason"] else ""))
    for b in p["per_budget"]:
        gain = "" if b["gain_points"] is None else f": {b['gain_points']:+.2f} points"
        out.append(f"  - {b['epochs']:g} epochs: {p['optimizer']}{' (' + b['label'] + ')' if b['label'] else ''} "
                   f"{_f4(b['top1_mean'])} over seeds {_seeds(b['seeds'])} against {b['baseline']}"
                   f"{' (' + b['baseline_label'] + ')' if b['baseline_label'] else ''} "
                   f"{_f4(b['baseline_top1_mean'])} over "
                   f"seeds {_seeds(b['baseline_seeds'])}{gain}; configurations chosen on {b['chosen_on']} top-1 of "
                   f"seeds {_seeds(b['chosen_on_seeds'])}, judged on {b['judged_on']}.")
    return out + [""]


def _claim_lines(entries: list[dict], tuned: bool) -> list[str]:
    out = []
    for e in entries:
        who = e["optimizer"] + (f" ({e['label']})" if e["label"] else "")
        base = "no baseline" if e["baseline"] is None else \
            e["baseline"] + (f" ({e['baseline_label']})" if e["baseline_label"] else "")
        where = f"batch {e['global_batch']}" + (f" (the paper's {e['paper_batch']})" if e["paper_batch"] else "") + \
            f", {e['epochs']:g} epochs" + (f", {e['setting']}" if e["setting"] else "")
        gain = "no gain" if e["gain_points"] is None else f"{e['gain_points']:+.2f} points"
        ci = f", 95 % {signed_interval(*e['ci95_points'])}, {p_text(e['p_value'])}" if e["ci95_points"] else ""
        adj = "" if e["p_value"] is None else \
            f" (Holm: **{e['verdict_adjusted']}**, adjusted {p_text(e['p_holm'])}{'; robust' if e['robust'] else ''})"
        lrs = f"; chosen base_lr {e['chosen_base_lr']:g} vs {e['baseline_chosen_base_lr']:g} on validation" \
            if tuned and e["baseline"] is not None else ""
        paper = "" if e["paper_gain_points"] is None else \
            f"; the paper at {e['paper_reference_batch']}: {e['paper_gain_points']:+.1f} points"
        div = f" ({e['n_diverged']}/{e['n_seeds']} seeds diverged)" if e["n_diverged"] else ""
        theirs = "" if e["baseline"] is None else \
            " " + _pm(e["baseline_top1_mean"], e["baseline_top1_ci95"], e["baseline_n_seeds"])
        out.append(f"- **{e['verdict']}**{adj} at {where}: {who} {_pm(e['top1_mean'], e['top1_ci95'], e['n_seeds'])}"
                   f"{div} against {base}{theirs}: {gain}{ci}{lrs}{paper}; baseline: {e['baseline_rule']}, judged on "
                   f"{e['judged_on']}." + (f" {e['reason']}." if e["reason"] else "")
                   + (f" Excluded baselines: {'; '.join(e['baselines_excluded'])}." if e["baselines_excluded"] else ""))
    return out or ["- No configuration of a method under test beside a baseline here: nothing to compare."]


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def search_lines(doc: dict) -> list[str]:
    """The tuning protocol (bench.search), each study's chosen trial and what the budget found."""
    s = doc.get("search")
    if not s:
        return []
    p = s["protocol"]
    out = ["## Tuning protocol: an equal-budget quasi-random search, chosen on validation, judged on fresh seeds", "",
           f"Sampler: scrambled {p['sampler'].capitalize()} (scipy.stats.qmc), seed {p['seed']}; budget: "
           f"{s['budget_statement']}, every trial trained at seed {p['choosing_seed']}; selection: {p['rule']}. "
           f"Confirmation seeds {_seeds(p['confirm_seeds'])}. The learning rate's range is {p['lr_range']}.", "",
           "| optimizer | space (field: range, scaling) | from |", "|---|---|---|"]
    for opt, space in p["spaces"].items():
        dims = "; ".join(f"{k}: {spec['feasible_points']}" if "feasible_points" in spec else
                         f"{k}: [{spec['min']:g}, {spec['max']:g}] {spec['scaling']}" for k, spec in space.items())
        out.append(f"| {opt} | {dims} | {p['space_sources'].get(opt, '')} |")
    out += ["", "Chosen trial of each study (validation top-1 of its trial; the trials it beat; parameters whose "
            "chosen value lies within 5 % of a range's end are flagged: the range may be too narrow there):", "",
            "| optimizer | batch | epochs | trial | val top-1 | infeasible / trials | chosen values | at a boundary |",
            "|---|---|---|---|---|---|---|---|"]
    for c in s["chosen"]:
        values = ", ".join(f"{k}={_value(v)}" for k, v in c["values"].items())
        edge = ", ".join(f"**{k} at its {side}**" for k, side in c["boundary"]) or "-"
        trial = "none feasible" if c["trial"] is None else str(c["trial"])
        val = "-" if c["val_top1"] is None else f"{c['val_top1']:.4f}"
        out.append(f"| {c['optimizer']} | {c['global_batch']} | {c['epochs']:g} | {trial} | {val} | "
                   f"{c['n_infeasible']} / {c['n_trials']} | {values} | {edge} |")
    if s["infeasible_by_batch"]:
        out += ["", "Infeasible trials (diverged, failed or never finished) per batch: "
                + "; ".join(f"{b['global_batch']}: {b['infeasible']} of {b['trials']} ({100 * b['fraction']:.0f} %)"
                            for b in s["infeasible_by_batch"]) + "."]
    rule = [r for r in s["lr_rule"] if r["slope"] is not None]
    if rule:
        out += ["", "Does the best learning rate follow the linear rule? The chosen peak rate's slope against the "
                "batch on log-log axes (1: linear, 0.5: square root, 0: one rate at every batch): "
                + "; ".join(f"{r['optimizer']} ({r['epochs']:g} epochs) {r['slope']:.2f}" for r in rule) + "."]
    if s["awaiting_confirmation"]:
        out += ["", "Awaiting their confirmation reruns (no claim is made on the trials themselves): "
                + "; ".join(f"{w['optimizer']} at {w['global_batch']}, {w['epochs']:g} epochs"
                            for w in s["awaiting_confirmation"]) + "."]
    return out + [""]


def _methods(doc: dict) -> str:
    """The methods under test, by name (the document's roles: plots.stats.roles), for a heading."""
    names = [o for o, r in (doc.get("roles") or {}).items() if r == "method"]
    return ", ".join(names) if names else "The methods under test"


def markdown(doc: dict) -> str:
    """claims.md: the document in prose."""
    cfgs = pd.DataFrame(doc["configurations"])
    n_div = int(cfgs.n_diverged.sum())
    ran = doc["confirm_seeds_run"]
    seeds = (f"Seeds: configurations are chosen on seeds {_seeds(doc['choosing_seeds'])}; confirmation seeds "
             f"{_seeds(ran)} chose nothing and judge every comparison at a cell where they ran." if ran else
             f"Seeds: {_seeds(doc['choosing_seeds'])} choose and judge: the declared confirmation seeds "
             f"{_seeds(doc['confirm_seeds'])} have no finished runs here." if doc["confirm_seeds"] else
             f"Seeds: {_seeds(doc['choosing_seeds'])}, which both choose the configurations and judge them (the "
             "sweep declares no confirm_seeds).")
    out = [f"# Claims: {doc['sweep']}", "",
           f"Ours: {doc['dataset']}, {doc['model']}, {len(cfgs)} configurations, {int(cfgs.n_seeds.sum())} finished "
           f"runs ({n_div} diverged), budgets {', '.join(f'{b:g}' for b in sorted(cfgs.epochs.unique()))} epochs. "
           + seeds, ""]
    out += primary_lines(doc) + search_lines(doc)
    out += [f"## Exploratory comparisons: a family of {doc['family_size']}, Holm-adjusted", "",
            f"Means over the seeds of one configuration (never across configurations), intervals: "
            f"{doc['seed_interval_method']}. Gains: {doc['interval_method']}; p-values: {doc['exploratory_test']}. "
            "The first verdict reads the interval alone (holds above 0, fails below, inconclusive otherwise and with "
            f"fewer than 2 seeds a side); the Holm verdict controls the family-wise error at {doc['alpha']} over all "
            f"{doc['family_size']} comparisons with an interval. Only the primary claim and Holm verdicts are "
            "claims; the rest is exploration.", "",
            f"Selection: {doc['selection_effect']}", "", f"Divergence: {doc['divergence_rule']}", "",
            f"### {_methods(doc)} against the best baseline"
            + (" (a search: no untuned comparison)" if doc.get("search") else " (chosen on test top-1)"), ""]
    out += (["- A search: its trials are candidates, not claims; the comparisons are the tuned ones below, each "
             "chosen trial judged on its confirmation reruns."] if doc.get("search") else
            _claim_lines(doc["claims"], tuned=False)) + [""]
    if doc["tuned_claims"] or doc["tuned_note"]:
        out += ["### Tuned: each optimizer at its best configuration on validation", "", doc["tuned_rule"], ""]
        out += ([doc["tuned_note"]] if doc["tuned_note"] else _claim_lines(doc["tuned_claims"], tuned=True)) + [""]
    if doc["critical_batch"]:
        out += [f"## Critical batch: {_methods(doc)}'s over the best baseline's", "", doc["critical_batch_rule"], ""]
        out += [f"- **{c['verdict']}**: {c['nlcg']} B_crit {_g(c['b_crit_nlcg'], '.0f')} against "
                f"{c['baseline']} {_g(c['b_crit_baseline'], '.0f')}: ratio {_g(c['ratio'], '.2f')}, "
                f"95 % [{_g(c['ratio_low'], '.2f')}, {_g(c['ratio_high'], '.2f')}]"
                + (" (extrapolated beyond the batches run)" if c["extrapolated"] else "") + "."
                for c in doc["critical_batch"]] + [""]
    out += noise_lines(doc) + against_lines(doc)
    if doc["mixed_commits"]:
        out += ["## Seeds from different commits", ""]
        out += [f"- {m['optimizer']}{', ' + m['label'] if m['label'] else ''} at batch {m['global_batch']}, "
                f"{m['epochs']:g} epochs (config {m['config_id']}): commits {', '.join(m['git_commits'])}."
                for m in doc["mixed_commits"]] + [""]
    out += ["## Across machines", "", doc["machines"], "", "## The paper's claim", "", f"> {doc['paper_claim']}", ""]
    if doc["paper_gains_at_claim"]:
        g = doc["paper_gains_at_claim"]
        out.append(f"- Paper ({doc['paper_source']}): at batch {', '.join(str(x['global_batch']) for x in g)} its NLCG "
                   f"gain over its best baseline is {', '.join(format(x['gain_points'], '+.1f') for x in g)} points.")
    else:
        out.append("- The paper publishes no table for this study: only the claim above (paper_gain_points: null).")
    out += [f"- {c}" for c in doc["caveats"]]
    if doc.get("variants"):  # the variants, and last the paragraph on which component carries the gain
        from plots import ablation

        out += [""] + ablation.lines(doc) + ["## Which component carries the gain", "", doc["variants"]["paragraph"]]
    return "\n".join(out) + "\n"
