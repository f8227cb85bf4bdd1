"""``figures/<profile>/index.html``: one results folder's report as ONE self-contained page, for a reader who
opens a file rather than a notebook: the primary claim and its verdict first, then every figure with the
claims.json entries it shows beside it, then the table of runs and where they ran.

Self-contained because the page is mailed, archived and opened offline: the figures are base64 PNG data URIs,
the CSS is inline, the fonts are the system's, and a Content-Security-Policy (``default-src 'none'``; images
only from ``data:``; the one style block and the one script admitted by their SHA-256) makes the browser refuse
any request the page might otherwise make. The script is ours and inline: on load it checks that every image
decoded (``complete`` and ``naturalWidth > 0``) and writes the count into ``<body data-images=...>``, which
tests/test_site.py reads back in a headless Chromium; the page reads the same without it.

Every string from the data (claims.json's document, the runs table, a figure's name) goes through
``html.escape``: an optimizer, label or run id is text, never markup. Built with the standard library (string
formatting) only. Which claims a figure shows is decided here (``SUPPORTS``, ``_supported``) from the same
functions that draw it (``stats.shared_budgets``, ``figures.claim_panel``), and the page says the rule beside
each figure; a figure this module does not know is shown with "no claims.json entry is mapped to it".

``page(doc, runs, figures)`` returns the HTML; ``write(out_dir, doc, runs, figures)`` writes it atomically
(bench.atomic.replace: a temp file, fsync, os.replace), so a reader never sees half a page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import os
from pathlib import Path

import pandas as pd

from bench import atomic
from plots import figures as figures_mod
from plots import stats
from plots.inference import p_text, signed_interval

NAME = "index.html"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VERDICTS = ("holds", "fails", "inconclusive")  # the verdicts that get a colour; any other is plain text
PROVENANCE = (("tf_version", "TensorFlow"), ("keras_version", "Keras"), ("horovod_version", "Horovod"),
              ("mpi_version", "MPI"), ("git_commit", "git commit"), ("host", "host"))
RUN_COLUMNS = ("status", "optimizer", "global batch", "epochs", "seed", "top-1", "wall time", "run id")

# what each figure draws (README "Reading the results"); a figure not listed is shown under its name
FIGURE_TEXT = {
    "top1_vs_batch": "Final top-1 against the global batch, per optimizer and configuration (the paper's figure 9).",
    "top1_vs_epoch_budget": "Final top-1 against the epoch budget, one panel per batch run at several budgets; each "
                            "budget is its own run (the paper's figures 10 and 11).",
    "loss_vs_epoch": "Training loss against epochs, one panel per (batch, budget) (the paper's figure 6).",
    "loss_vs_epoch_at_claim": "Training loss against epochs at the primary claim's batch and its longest budget "
                              "(figure 6 as the paper draws it).",
    "wall_time": "Training loss against training time: optimizer steps only, compilation and evaluation excluded "
                 "(the paper's figure 8).",
    "wall_time_at_claim": "Training loss against training time at the primary claim's batch (figure 8 as the paper "
                          "draws it).",
    "top1_during_training": "Test top-1 at the evaluations part-way through each run: a learning curve, not a "
                            "budget.",
    "steps_to_target": "Steps until the test top-1 first reaches the target, against the batch (log-log), with "
                       "perfect scaling dashed (Shallue et al. 2019).",
    "critical_batch": "Steps to the target against examples per optimizer, McCandlish et al.'s fitted hyperbola and "
                      "B_crit with bootstrap intervals, the 20 % rule, and the measured noise scale B_simple.",
    "noise_scale": "The gradient noise scale B_simple against epochs, one panel per batch.",
    "tuning_curve": "A search's best validation top-1 against the number of trials, one panel per (batch, budget): "
                    "median and 95 % band over random subsets of each optimizer's trials.",
    "performance_profile": "AlgoPerf's performance profile: per optimizer, the fraction of (batch, budget) cells "
                           "where its chosen trial's top-1 error is within tau of the cell's best.",
    "ablation": "Top-1 of the study's optimizers and of every variant (ablations, other rules) at the primary claim's "
                "batch, seeds as points; beside it the study's optimizers against the batch, with the paper's table "
                "on a second axis.",
    "diagnostics": "At the primary claim's batch, over the budget: the scheduled learning rate of every series, and "
                   "NLCG's alpha, beta and preconditioner spread for the series that log them.",
}
# how each figure maps onto claims.json, said beside it ({...}: filled in by _supported)
SUPPORTS = {
    "top1_vs_batch": "Its points are the configurations' mean final top-1 at the budgets run at every batch "
                     "({budgets} epochs). Beside it: claims.json's <code>claims</code> (and <code>tuned_claims</code>) "
                     "at those budgets, each a method under test ({methods}) against the best baseline at one "
                     "batch: the gap between two of its points at one x.",
    "top1_vs_epoch_budget": "One panel per batch run at two budgets or more ({batches}). Beside it: claims.json's "
                            "<code>claims</code> at those batches, one per budget; the primary claim "
                            "(<code>primary.per_budget</code>) pools the budgets of its batch.",
    "at_claim": "One panel: the primary claim's batch at the longest budget run there ({panel}). Beside it: the "
                "primary claim's comparison at that budget (<code>primary.per_budget</code>) and claims.json's "
                "<code>claims</code> of that cell; the curves are the training behind their final top-1.",
    "curves": "No number of claims.json is read from this figure: it shows how the runs behind every comparison "
              "trained.",
    "steps_to_target": "Steps to claims.json's <code>target_top1</code> ({target}) at one budget. The critical "
                       "batch (<code>critical_batch</code>, beside it) is fitted from these steps, each batch at its "
                       "tuned choice of budget and learning rate.",
    "critical_batch": "claims.json's <code>critical_batch</code>: per method under test, its B_crit over the best "
                      "baseline's (the largest B_crit), the ratio's 95 % bootstrap interval and its verdict (holds "
                      "when the interval is above 1).",
    "noise_scale": "claims.json's <code>noise_scale_mapping</code>: B_simple at the start and the end of training "
                   "and each batch as a multiple of both.",
    "tuning_curve": "claims.json's <code>search.chosen</code>: the curve's right end at each batch is the chosen "
                    "trial's validation top-1; a curve still rising there says more trials could move the choice.",
    "performance_profile": "claims.json's <code>tuned_claims</code>: each cell's chosen trials, judged on their "
                           "confirmation reruns, are the errors the ratios are taken of.",
    "ablation": "claims.json's <code>variants</code>: each bar is a <code>series</code> entry (a variant's chosen "
                "configuration); beside it the <code>comparisons</code>, each variant against a study optimizer at one "
                "cell, with Holm's verdict over the variant family.",
    "diagnostics": "claims.json's <code>variants.diagnostics</code>: the same history, summarised per series over "
                   "every logged step of every seed.",
}
AT_CLAIM = ("loss_vs_epoch_at_claim", "wall_time_at_claim")
CURVES = ("loss_vs_epoch", "wall_time", "top1_during_training")

CSS = """
:root { --fg: #1c1c1f; --muted: #5a5a63; --line: #d8d8de; --panel: #f5f6f8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 12px 20px 48px; }
h1 { font-size: 1.55rem; margin: .5em 0 .1em; }
h2 { font-size: 1.25rem; margin: 1.8em 0 .6em; padding-bottom: .2em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 0 0 .3em; }
p { margin: .4em 0; }
.muted { color: var(--muted); }
.small { font-size: .88em; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .9em; }
nav a { margin-right: 1em; }
.primary { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; }
.primary h2 { margin-top: .3em; }
.headline { font-size: 1.15rem; margin: .3em 0; }
.verdict { display: inline-block; padding: 0 .55em; border-radius: .8em; font-weight: 600; }
.holds { background: #d9f2df; color: #0e5c27; }
.fails { background: #fbdedc; color: #96190f; }
.inconclusive { background: #fff0c7; color: #6e4f00; }
figure { margin: 0; }
img { display: block; width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
.figure { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 12px 24px;
          align-items: start; margin: 0 0 36px; }
@media (max-width: 900px) { .figure { grid-template-columns: minmax(0, 1fr); } }
.figure > div p { font-size: .92em; }
h1, h2, h3 { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; border: 1px solid var(--line); border-radius: 6px; margin: .4em 0; }
table { border-collapse: collapse; width: 100%; font-size: .86em; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
.runs td, .runs th, .nowrap td, .nowrap th { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 16px; margin: .4em 0; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
""".strip()

# ours, inline: every <img> decoded? The answer goes into <body data-images="N ok, K broken">.
SCRIPT = """
addEventListener("load", function () {
  var all = Array.prototype.slice.call(document.images);
  var broken = all.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute("data-images", all.length + " ok=" + (all.length - broken.length)
                             + " broken=" + broken.length);
});
""".strip()


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# no request of any kind: images from data: only, the one style and the one script by their hashes
CSP = (f"default-src 'none'; img-src data:; style-src {_sha(CSS)}; script-src {_sha(SCRIPT)}; base-uri 'none'; "
       "form-action 'none'")


# ---- formatting: every string from the data through esc -------------------------------------------------


def esc(x) -> str:
    """``x`` as HTML text (quotes too: the same helper serves attributes)."""
    return html.escape("" if x is None else str(x), quote=True)


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT


def _fmt(x, spec: str, none: str = "-") -> str:
    """``x`` formatted by ``spec`` (escaped); ``none`` for a missing value; a string (e.g. "inf") as it is."""
    if _missing(x):
        return esc(none)
    if isinstance(x, str):
        return esc(x)
    try:
        return esc(format(x, spec))
    except (TypeError, ValueError):
        return esc(x)


def _verdict(v) -> str:
    """A verdict as a coloured badge (the class only from VERDICTS: data never becomes a class name)."""
    cls = f"verdict {v}" if v in VERDICTS else "verdict"
    return f'<span class="{cls}">{esc(v or "-")}</span>'


def _who(name, label) -> str:
    return esc(name if not label else f"{name} ({label})")


def _gain(gain, ci) -> str:
    if _missing(gain):
        return "undefined"
    return esc(f"{gain:+.2f}" + (f" {signed_interval(*ci)}" if ci else ""))


def _n_seeds(n) -> str:
    return esc(f"{n} seed{'' if n == 1 else 's'}")


def _seeds(seeds) -> str:
    return esc(", ".join(str(s) for s in seeds) if seeds else "none")


def _table(head: list[str], rows: list[list[str]], num: tuple = (), cls: str = "") -> str:
    """A table in a horizontally scrolling box; ``head`` plain text (escaped here), ``rows`` cells of HTML built
    by this module's helpers; ``num``: the indices of right-aligned columns."""
    def cell(tag, i, x):
        return f'<{tag} class="num">{x}</{tag}>' if i in num else f"<{tag}>{x}</{tag}>"

    ths = "".join(cell("th", i, esc(h)) for i, h in enumerate(head))
    trs = "\n".join("<tr>" + "".join(cell("td", i, x) for i, x in enumerate(r)) + "</tr>" for r in rows)
    attrs = f' class="{cls}"' if cls else ""
    return f'<div class="scroll"><table{attrs}><thead><tr>{ths}</tr></thead>\n<tbody>\n{trs}\n</tbody></table></div>'


# ---- the primary claim -------------------------------------------------------------------------------------


def primary_section(doc: dict) -> str:
    """The primary claim first: what it compares, at which batch and budgets, its gain with the 95 % interval,
    p, the verdict, and per budget the seeds that judged it (and those that chose the configurations)."""
    p = doc["primary"]
    base = "the best baseline" if p["baseline"] == "best" else p["baseline"]
    how = "declared in the sweep file's [claim]" if p.get("declared") else "the default: no [claim] in the sweep file"
    budgets = ", ".join(f"{b:g}" for b in p.get("budgets") or [])
    paper = f" (the paper's {p['paper_batch']:,} by steps per epoch)" if p.get("paper_batch") else ""
    if p.get("gain_points") is None:
        result = f"no test: {esc(p.get('reason') or 'no budget with 2 seeds or more on each side')}"
    else:
        robust = ("robust: decided on seeds that chose nothing" if p.get("robust") else
                  "not robust: the seeds that judged also chose the configurations"
                  if p.get("judged_on") != "confirmation seeds" else "")
        gain = f"{p['gain_points']:+.2f}"
        result = (f"gain <strong>{esc(gain)} points</strong> of top-1, 95 % "
                  f"{esc(signed_interval(*p['ci95_points']))}, {esc(p_text(p.get('p_value')))}, over "
                  f"{esc(p.get('budgets_tested'))} budget(s), judged on {esc(p.get('judged_on'))}"
                  + (f"; {esc(robust)}" if robust else "")
                  + (f". Left out: {esc(p['reason'])}" if p.get("reason") else ""))
    rows = [[_fmt(b["epochs"], "g"), _who(p["optimizer"], b.get("label")), _fmt(b.get("top1_mean"), ".4f", "undefined"),
             _seeds(b.get("seeds")), _who(b.get("baseline"), b.get("baseline_label")),
             _fmt(b.get("baseline_top1_mean"), ".4f", "undefined"), _seeds(b.get("baseline_seeds")),
             _fmt(b.get("gain_points"), "+.2f"), esc(b.get("judged_on")), _seeds(b.get("chosen_on_seeds"))]
            for b in p.get("per_budget") or []]
    table = _table(["epochs", "optimizer", "top-1", "seeds", "baseline", "top-1", "seeds", "gain (points)",
                    "judged on", "chosen on seeds"], rows, num=(0, 2, 5, 7), cls="nowrap") if rows else \
        "<p>No budget of the claim has both sides run.</p>"
    confirm = doc.get("confirm_seeds") or []
    seeds = (f"Confirmation seeds {_seeds(confirm)} judge; seeds {_seeds(doc.get('choosing_seeds'))} chose the "
             "configurations." if confirm else
             f"Seeds {_seeds(doc.get('choosing_seeds'))} both choose the configurations and judge them (no "
             "confirmation seeds declared).")
    return f"""<section class="primary" id="primary">
<h2>Primary claim {_verdict(p.get("verdict"))}</h2>
<p class="headline">{esc(p["optimizer"])} against {esc(base)} at batch {esc(p["global_batch"])}{esc(paper)}, pooled
over {esc(budgets)} epochs: <strong>{esc(p.get("verdict"))}</strong>.</p>
<p>{result}.</p>
<p class="small muted">{esc(how)}; declaration: {esc(doc.get("declaration"))}; test: {esc(p.get("test"))}, alpha
{esc(p.get("alpha"))}. {seeds}</p>
{table}
<p class="small muted">The paper's claim: {esc(doc.get("paper_claim"))}.</p>
</section>"""


# ---- figures and the claims they show ---------------------------------------------------------------------


def _claim_rows(entries: list[dict]) -> str:
    """claims.json comparisons (``claims`` / ``tuned_claims``) as a table: where, who against whom, gain, verdicts."""
    rows = []
    for e in entries:
        where = f"{e['global_batch']}" + (f" ({e['paper_batch']:,})" if e.get("paper_batch") else "") + \
            f", {e['epochs']:g} ep" + (f", {e['setting']}" if e.get("setting") else "")
        who = (f"{_who(e['optimizer'], e.get('label'))} {_fmt(e.get('top1_mean'), '.4f', 'undefined')} "
               f"({_n_seeds(e.get('n_seeds'))}) vs {_who(e.get('baseline') or 'no baseline', e.get('baseline_label'))}"
               f" {_fmt(e.get('baseline_top1_mean'), '.4f', 'undefined')} ({_n_seeds(e.get('baseline_n_seeds'))})")
        tuned = " (tuned)" if "chosen_base_lr" in e else ""
        adjusted = "" if e.get("p_value") is None else f" Holm: {_verdict(e.get('verdict_adjusted'))}"
        rows.append([esc(where) + esc(tuned), who, _gain(e.get("gain_points"), e.get("ci95_points")),
                     esc(p_text(e.get("p_value"))) if e.get("p_value") is not None else "-",
                     _verdict(e.get("verdict")) + adjusted + (" robust" if e.get("robust") else "")])
    return _table(["batch (paper's), budget", "comparison: mean top-1", "gain [95 %]", "p", "verdict"], rows)


def _critical_rows(doc: dict) -> str:
    """claims.json's ``critical_batch``: each method's B_crit beside the best baseline's, the ratio and verdict."""
    rows = [[esc(c.get("method", c.get("nlcg"))), _fmt(c.get("b_crit_nlcg"), ".0f", "undefined"), esc(c["baseline"]),
             _fmt(c.get("b_crit_baseline"), ".0f", "undefined"),
             _fmt(c.get("ratio"), ".2f", "undefined") + " [" + _fmt(c.get("ratio_low"), ".2f", "undefined") + ", "
             + _fmt(c.get("ratio_high"), ".2f", "undefined") + "]" + (" extrapolated" if c.get("extrapolated") else ""),
             _verdict(c.get("verdict"))] for c in doc.get("critical_batch") or []]
    if not rows:
        return ("<p>claims.json has no critical-batch comparison for this folder: it needs 3 batches or more where "
                "every seed reached the target (<code>mini_scaling</code>).</p>")
    return _table(["method", "B_crit", "best baseline", "B_crit", "ratio [95 %]", "verdict"], rows, num=(1, 3))


def _noise_rows(doc: dict) -> str:
    m = doc.get("noise_scale_mapping")
    if not m:
        return "<p>claims.json has no noise-scale estimates for this folder (runs with one batch size).</p>"
    head = (f"<p>B_simple over {esc(m.get('n_runs'))} runs: start {_fmt(m.get('start'), ',.0f')}, end "
            f"{_fmt(m.get('end'), ',.0f')}.</p>")
    rows = [[esc(b["global_batch"]), _fmt(b.get("paper_batch"), ","), _fmt(b.get("over_start"), ".2f"),
             _fmt(b.get("over_end"), ".2f")] for b in m.get("batches") or []]
    return head + _table(["batch", "paper's batch", "/ B_simple at start", "at end"], rows, num=(0, 1, 2, 3))


def _methods(doc: dict) -> str:
    """The methods under test by name (claims.json's ``roles``; documents without roles: the paper's two NLCGs)."""
    names = [o for o, r in (doc.get("roles") or {}).items() if r == "method"]
    return esc(", ".join(names) if names else "NLCG-FR, NLCG-PR")


def _entries(doc: dict) -> list[dict]:
    return list(doc.get("claims") or []) + list(doc.get("tuned_claims") or [])


def _supported(name: str, doc: dict, runs: pd.DataFrame, prep: pd.DataFrame) -> tuple[str, str]:
    """(the rule, as HTML, that maps figure ``name`` onto claims.json; the entries it shows, as HTML), from the
    functions that draw the figure (``prep``: ``stats.prepare(runs)``, as the figures have it), so the two cannot
    drift apart."""
    if name == "top1_vs_batch":
        budgets = stats.shared_budgets(prep)
        shown = [e for e in _entries(doc) if e["epochs"] in budgets]
        return (SUPPORTS[name].format(budgets=esc(", ".join(f"{b:g}" for b in budgets) or "none"),
                                      methods=_methods(doc)),
                _claim_rows(shown) if shown else "<p>No comparison at these budgets.</p>")
    if name == "top1_vs_epoch_budget":
        per = prep.groupby("global_batch").budget.nunique() if len(prep) else pd.Series(dtype=int)
        batches = sorted(int(b) for b in per[per >= 2].index)
        shown = [e for e in _entries(doc) if e["global_batch"] in batches]
        return (SUPPORTS[name].format(batches=esc(", ".join(map(str, batches)) or "none")),
                _claim_rows(shown) if shown else "<p>No batch was run at two budgets or more.</p>")
    if name in AT_CLAIM:
        panel = figures_mod.claim_panel(runs, doc["primary"]["global_batch"])
        if panel is None:
            return SUPPORTS["at_claim"].format(panel="none"), "<p>No finished runs at the claim's batch.</p>"
        batch, budget = panel
        per = [b for b in doc["primary"].get("per_budget") or [] if b["epochs"] == budget]
        shown = [e for e in _entries(doc) if (e["global_batch"], e["epochs"]) == (batch, budget)]
        rows = [[_fmt(b["epochs"], "g"), _who(doc["primary"]["optimizer"], b.get("label")),
                 _fmt(b.get("top1_mean"), ".4f", "undefined"), _who(b.get("baseline"), b.get("baseline_label")),
                 _fmt(b.get("baseline_top1_mean"), ".4f", "undefined"), _fmt(b.get("gain_points"), "+.2f")]
                for b in per]
        body = ("<h3>Primary claim at this budget</h3>" + _table(["epochs", "optimizer", "top-1", "baseline", "top-1",
                                                                  "gain"], rows, num=(0, 2, 4, 5))
                if rows else "<p>The primary claim has no comparison at this budget.</p>")
        body += ("<h3>Exploratory comparisons of this cell</h3>" + _claim_rows(shown)) if shown else ""
        return SUPPORTS["at_claim"].format(panel=esc(f"batch {batch}, {budget:g} epochs")), body
    if name in CURVES:
        return SUPPORTS["curves"], ""
    if name == "steps_to_target":
        target = doc.get("target_top1")
        written = doc.get("target_top1_written") or []
        note = ("<p>Runs written under target_top1 " + esc(", ".join(f"{w['target_top1']:g} ({w['runs']} runs)"
                                                                    for w in written))
                + ": every run's steps re-evaluated at the one above.</p>") if len(written) > 1 else ""
        return SUPPORTS[name].format(target=_fmt(target, "g", "none")), note + _critical_rows(doc)
    if name == "critical_batch":
        return SUPPORTS[name], _critical_rows(doc)
    if name == "noise_scale":
        return SUPPORTS[name], _noise_rows(doc)
    if name in ("tuning_curve", "performance_profile") and doc.get("search"):
        if name == "performance_profile":
            return SUPPORTS[name], _claim_rows(doc.get("tuned_claims") or []) if doc.get("tuned_claims") else \
                "<p>No confirmed comparison yet.</p>"
        rows = [[esc(c["optimizer"]), esc(c["global_batch"]), _fmt(c["epochs"], "g"),
                 esc("none feasible" if c["trial"] is None else c["trial"]), _fmt(c.get("val_top1"), ".4f", "-"),
                 esc(f"{c['n_infeasible']} / {c['n_trials']}"),
                 esc(", ".join(f"{k} at its {side}" for k, side in c["boundary"]) or "-")]
                for c in doc["search"]["chosen"]]
        return SUPPORTS[name], _table(["optimizer", "batch", "epochs", "trial", "val top-1", "infeasible",
                                       "at a boundary"], rows, num=(1, 2, 3, 4))
    if name == "ablation" and doc.get("variants"):
        rows = [[esc(e["series"]), esc(e["global_batch"]), _fmt(e["epochs"], "g"), esc(e["against"]),
                 _fmt(e.get("gain_points"), "+.2f"),
                 esc(f"[{e['ci95_points'][0]:+.2f}, {e['ci95_points'][1]:+.2f}]") if e.get("ci95_points") else "-",
                 _fmt(e.get("p_holm"), ".3g"), _verdict(e["verdict_adjusted"])]
                for e in doc["variants"]["comparisons"]]
        return SUPPORTS[name], _table(["variant", "batch", "epochs", "against", "gain", "95 %", "p (Holm)",
                                       "verdict"], rows, num=(1, 2, 4, 6))
    if name == "diagnostics" and doc.get("variants"):
        rows = [[esc(d["series"]), esc(d["runs"]), _fmt(d.get("alpha_mean"), ".4f"), _fmt(d.get("beta_mean"), ".3f"),
                 _fmt(d.get("beta_at_cap"), ".0%"), _fmt(d.get("precond_min_median"), ".2g")]
                for d in doc["variants"]["diagnostics"]]
        return SUPPORTS[name], _table(["series", "runs", "alpha mean", "beta mean", "beta at cap",
                                       "precond min (median)"], rows, num=(1, 2, 3, 4, 5))
    return "No claims.json entry is mapped to this figure.", ""


def _png(name: str, value) -> bytes:
    """Figure ``name``'s PNG: bytes as given, or a path's content; ValueError naming the figure when it is not a
    PNG (a browser would show a broken image and say nothing of which figure it was)."""
    data = bytes(value) if isinstance(value, bytes | bytearray) else Path(value).read_bytes()
    if data[:8] != PNG_MAGIC:
        raise ValueError(f"figure {name!r} ({'bytes' if isinstance(value, bytes | bytearray) else value}): not a PNG")
    return data


def _pdf(value) -> str | None:
    """The name of the PDF beside a figure given as a path (the report writes both into the page's folder)."""
    if isinstance(value, bytes | bytearray):
        return None
    pdf = Path(value).with_suffix(".pdf")
    return pdf.name if pdf.is_file() else None


def _slug(name: str) -> str:
    """An id for a figure's anchor: letters, digits, - and _ only."""
    return "fig-" + "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in str(name))


def figure_section(name: str, value, doc: dict, runs: pd.DataFrame, prep: pd.DataFrame) -> str:
    """One figure (embedded) and, beside it, what it draws, how it maps onto claims.json and those entries."""
    rule, body = _supported(name, doc, runs, prep)
    src = "data:image/png;base64," + base64.b64encode(_png(name, value)).decode("ascii")
    what = FIGURE_TEXT.get(name, "")
    pdf = _pdf(value)
    return f"""<section class="figure" id="{esc(_slug(name))}">
<figure>
<img src="{src}" alt="{esc(name + (': ' + what if what else ''))}">
<figcaption class="small muted"><code>{esc(name)}</code>{f' (<a href="{esc(pdf)}">PDF</a>)' if pdf else ''}</figcaption>
</figure>
<div>
<h3>{esc(name)}</h3>
<p class="small">{esc(what)}</p>
<p class="small muted">{rule}</p>
{body}
</div>
</section>"""


# ---- the runs and where they ran ---------------------------------------------------------------------------


def _wall(seconds) -> str:
    if _missing(seconds):
        return "-"
    s = float(seconds)
    return f"{s:.0f} s" if s < 60 else f"{int(s // 60)} min {s % 60:02.0f} s" if s < 3600 else \
        f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _epochs(row: dict) -> str:
    """The run's budget in epochs (stats.budget_epochs: the configured one unless a step budget was set)."""
    try:
        return f"{stats.budget_epochs(row):g}"
    except (KeyError, TypeError, ValueError):
        return _fmt(row.get("epochs"), "g")


def runs_table(runs: pd.DataFrame) -> str:
    """Every run attempt of the folder (failed and crashed too: the status says so), by batch, optimizer,
    budget and seed: plain HTML, no sorting script. Top-1 only for a complete run: a diverged run has no
    accuracy (older rows wrote 0.0) and a failed or crashed one's is no result."""
    if runs.empty:
        return "<p>No runs.</p>"
    def col(r, k):
        return r.get(k) if k in r else None

    records = runs.to_dict("records")
    records.sort(key=lambda r: (float(col(r, "global_batch") or 0), figures_mod._order(str(col(r, "optimizer"))),
                                _epochs(r), float(col(r, "seed") or 0), str(col(r, "started_at") or "")))
    rows = []
    for r in records:
        attempt = col(r, "attempt")
        again = f" (attempt {int(attempt)})" if not _missing(attempt) and int(attempt) > 1 else ""
        top1 = col(r, "top1") if col(r, "status") == "complete" else None  # diverged: none; failed: no result
        rows.append([esc(col(r, "status")), esc(col(r, "optimizer")), _fmt(col(r, "global_batch"), "d"),
                     esc(_epochs(r)), _fmt(col(r, "seed"), "d"), _fmt(top1, ".4f"),
                     esc(_wall(col(r, "wall_time_s"))), f"<code>{esc(col(r, 'run_id'))}</code>{esc(again)}"])
    counts = runs.status.astype(str).value_counts() if "status" in runs else pd.Series(dtype=int)
    summary = ", ".join(f"{esc(k)} {n}" for k, n in counts.items())
    return f"<p>{len(runs)} run attempts: {summary}.</p>" + _table(list(RUN_COLUMNS), rows, num=(2, 3, 4, 5, 6),
                                                                   cls="runs")


def provenance_section(runs: pd.DataFrame) -> str:
    """The versions, commit and host the runs recorded (each distinct value with its number of runs), and when
    they started."""
    items = []
    for column, title in PROVENANCE:
        values = runs[column].dropna().astype(str) if column in runs else pd.Series(dtype=str)
        values = values[values != ""]
        text = "; ".join(f"{v} ({n} run{'s' if n != 1 else ''})" for v, n in values.value_counts().items()) \
            if len(values) else "not recorded"
        items.append((title, text))
    started = pd.to_datetime(runs.started_at, utc=True, errors="coerce").dropna() if "started_at" in runs else []
    when = "not recorded" if not len(started) else \
        f"{started.min():%Y-%m-%d %H:%M:%S} to {started.max():%Y-%m-%d %H:%M:%S} UTC"
    items.append(("started", when))
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


# ---- the page ----------------------------------------------------------------------------------------------


def page(doc: dict, runs: pd.DataFrame, figures: dict) -> str:
    """The whole page: the primary claim, then every figure (``figures``: name -> PNG bytes or a PNG's path, in
    the order given) with the claims it shows, then the runs and their provenance."""
    prep = stats.prepare(runs)
    shown = [figure_section(name, value, doc, runs, prep) for name, value in figures.items()]
    nav = "".join(f'<a href="#{esc(_slug(n))}">{esc(n)}</a> ' for n in figures)
    about = (f"{esc(doc.get('dataset'))} / {esc(doc.get('model'))}, {esc(doc.get('train_size'))} training images; "
             f"stands for the paper's {esc(doc.get('paper_dataset'))} study by steps per epoch")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">
<meta name="referrer" content="no-referrer">
<title>{esc(doc.get("sweep"))}: nlcg-bench report</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{esc(doc.get("sweep"))}: nlcg-bench report</h1>
<p class="muted">{about}. Every number below is claims.json's
(<a href="claims.json">claims.json</a>, in prose: <a href="claims.md">claims.md</a>).</p>
{primary_section(doc)}
<h2 id="figures">Figures and the claims they show</h2>
<nav class="small">{nav}</nav>
<p class="small muted">Means over the seeds of one configuration; intervals: {esc(doc.get("seed_interval_method"))}.
Gains: {esc(doc.get("interval_method"))}. Exploratory verdicts: Holm over a family of {esc(doc.get("family_size"))};
only the primary claim and Holm verdicts are claims.</p>
{chr(10).join(shown)}
<h2 id="runs">Runs</h2>
{runs_table(runs)}
<h2 id="provenance">Provenance</h2>
{provenance_section(runs)}
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


def write(out_dir: str | Path, doc: dict, runs: pd.DataFrame, figures: dict) -> Path:
    """``out_dir/index.html`` written atomically (a reader sees the old page or the new one, never half);
    returns its path."""
    path = Path(out_dir) / NAME
    text = page(doc, runs, figures).encode("utf-8")
    atomic.replace(path, lambda f: f.write(text), f"{os.getpid()}")
    return path
