"""Hyperparameter axes and named variants in a sweep file (bench.grid, issue 28): a "hparams.NAME" axis trains what
[optimizer_hparams] would (the same run ids), a variant's runs are found again from their rows' config JSON alone
(bench.study.memberships), and every refusal is one line naming the value and what is valid."""

import json

import pytest
import scipy.stats
from matplotlib.collections import PathCollection

from bench import grid, study
from bench.config import ConfigError
from bench.results import load_runs
from conftest import requires_horovod, run_cli
from plots import claims

TINY = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
eval_every_epochs = 0
steps = 4
"""


def _write(tmp_path, body, name="var.toml"):
    path = tmp_path / name
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\n{body}')
    return path


ABLATION = """
[[grid]]
global_batch = [64, 128]
optimizer = ["momentum", "nlcg-fr"]
seed = [0, 1]

[[grid]]
variant = "no line search"
global_batch = [128]
optimizer = ["nlcg-fr"]
seed = [0, 1]
"hparams.line_search" = ["none"]

[[grid]]
variant = "momentum 0.86"
global_batch = [128]
optimizer = ["momentum"]
seed = [0, 1]
"hparams.momentum" = [0.86]

[[grid]]
variant = "rates"
global_batch = [128]
optimizer = ["momentum"]
seed = [0, 1]
base_lr = [0.05, 0.1]

[[grid]]
variant = "preconditioned momentum"
compare = ["momentum", "nlcg-fr"]
global_batch = [128]
optimizer = ["momentum-bfgs"]
seed = [0]
"""


def test_a_hyperparameter_axis_trains_what_optimizer_hparams_would(tmp_path):
    axis = grid.load(_write(tmp_path, '[grid]\noptimizer = ["nlcg-fr"]\n"hparams.line_search" = ["none", "step"]\n'
                                      '"hparams.preconditioner" = ["none"]\n'))
    assert [(c.hparams["line_search"], c.hparams["preconditioner"]) for c in axis.runs] == [("none", "none"),
                                                                                          ("step", "none")]
    for value in ("none", "step"):  # the reference: the same run written with the table that existed before
        table = grid.load(_write(tmp_path, f'optimizer = "nlcg-fr"\n[optimizer_hparams.nlcg-fr]\nline_search = '
                                           f'"{value}"\npreconditioner = "none"\n', name=f"t{value}.toml"))
        assert table.runs[0].run_id(1) in {c.run_id(1) for c in axis.runs}
    assert "hparams.line_search" in axis.tuning and axis.variants == {}


def test_variants_are_recorded_and_found_again_from_the_rows_config_alone(tmp_path):
    sweep = grid.load(_write(tmp_path, ABLATION))
    by_id = {c.run_id(1): c for c in sweep.runs}
    # the study's own 8 runs, 2 + 2 + 1 new variant runs, and the rate 0.1 at 128 is the study's momentum run
    assert len(sweep.runs) == 8 + 2 + 2 + 2 + 1
    found = {}
    for rid, c in by_id.items():
        d = json.loads(json.dumps(c.to_dict()))  # what a runs row's config column holds
        found[rid] = study.memberships(d, json.loads(json.dumps(sweep.variants)))
    own = {rid for rid, (is_own, _) in found.items() if is_own}
    assert {by_id[r].run_id(1) for r in own} == {c.run_id(1) for c in sweep.runs
                                                   if c.optimizer in ("momentum", "nlcg-fr")
                                                   and c.hparams.get("line_search") is None
                                                   and c.hparams.get("momentum") is None and c.base_lr == 0.1}
    named = {rid: names for rid, (_, names) in found.items() if names}
    assert sorted(by_id[r].hparams.get("line_search") for r, n in named.items() if n == ["no line search"]) == \
        ["none", "none"]
    both = [r for r, (is_own, names) in found.items() if is_own and names]
    assert {(by_id[r].optimizer, by_id[r].global_batch, by_id[r].base_lr) for r in both} == {("momentum", 128, 0.1)}
    assert all(found[r][1] == ["rates"] for r in both)
    assert sweep.variants["variants"]["no line search"]["compare"] == ["nlcg-fr"]
    assert sweep.variants["variants"]["momentum 0.86"]["compare"] == ["momentum", "nlcg-fr"]
    assert sweep.variants["variants"]["preconditioned momentum"]["compare"] == ["momentum", "nlcg-fr"]
    # the claim is declared on the study's own runs: its default batch is theirs, not a variant's
    assert sweep.claim["global_batch"] == 128 and sweep.claim["optimizer"] == "nlcg-fr"
    # no variants declared: every run is the study's
    assert study.memberships({"optimizer": "momentum"}, None) == (True, [])


def test_study_json_records_the_variants(tmp_path):
    sweep = grid.load(_write(tmp_path, ABLATION))
    path = study.declare(sweep, "var.toml", "2026-12-04T00:00:00")
    doc = json.loads(path.read_text())
    assert doc["variants"] == json.loads(json.dumps(sweep.variants))
    assert study.declare(sweep, "var.toml", "2026-12-04T01:00:00") == path  # unchanged: not re-declared
    assert "previous" in json.loads(path.read_text()) and not json.loads(path.read_text())["previous"]


REFUSALS = [
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\ncompare = ["momentum"]\noptimizer = ["rmsprop"]\n',
     "compare", "variant"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = " x"\noptimizer = ["rmsprop"]\n', "variant", "name"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = 3\noptimizer = ["rmsprop"]\n', "variant = 3", "name"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = "v"\ncompare = ["nope"]\noptimizer = ["rmsprop"]\n',
     "compare", "optimizers"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = "v"\ncompare = ["rmsprop"]\noptimizer = ["rmsprop"]\n',
     "rmsprop has no runs", "valid: some of momentum"),
    ('[[grid]]\nvariant = "v"\noptimizer = ["rmsprop"]\n', "every [[grid]] table", "valid: at least one table"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = "v"\ncompare = ["momentum"]\noptimizer = ["rmsprop"]\n'
     '[[grid]]\nvariant = "v"\ncompare = ["momentum", "rmsprop"]\nseed = [1]\noptimizer = ["rmsprop"]\n',
     "variant 'v' has compare", "one list"),
    ('[grid]\noptimizer = ["momentum"]\n"hparams.momentum" = [0.5]\n[optimizer_hparams.momentum]\nmomentum = 0.6\n',
     "hparams.momentum", "one of them"),
    ('[grid]\noptimizer = ["momentum"]\n"hparams." = [0.5]\n', "'hparams.'", "hparams.NAME"),
    ('[grid]\noptimizer = ["momentum"]\n"hparams.betaz" = [0.5]\n', "betaz", "momentum"),
    ('[grid]\noptimizer = ["momentum"]\n"hparams.momentum" = 0.5\n', "hparams.momentum = 0.5", "non-empty list"),
    ('validation_size = 64\n[search]\ntrials = 2\nconfirm_seeds = [1]\n[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = "v"\n'
     'optimizer = ["rmsprop"]\n', "variant ('v')", "a sweep file of its own"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[f"case{i}" for i in range(len(REFUSALS))])
def test_every_bad_variant_or_hyperparameter_axis_is_one_line(tmp_path, case):
    body, *words = case
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        grid.load(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message


def test_set_of_a_hyperparameter_axis_is_refused(tmp_path):
    path = _write(tmp_path, '[grid]\noptimizer = ["momentum"]\n"hparams.momentum" = [0.5, 0.6]\n')
    for item in ("hparams.momentum=0.7", "hparams={momentum = 0.7}"):
        with pytest.raises(ConfigError, match=r"hparams\.momentum is a \[grid\] axis"):
            grid.load(path, [item])
    assert len(grid.load(path, ["base_lr=0.2"]).runs) == 2


E2E = """
validation_size = 128
log_every_steps = 1
[[grid]]
global_batch = [64]
optimizer = ["momentum", "nlcg-fr"]
seed = [0, 1, 2]

[[grid]]
variant = "no line search"
global_batch = [64]
optimizer = ["nlcg-fr"]
seed = [0, 1, 2]
"hparams.line_search" = ["none"]

[[grid]]
variant = "rates"
global_batch = [64]
optimizer = ["momentum"]
seed = [0, 1, 2]
base_lr = [0.05, 0.1, 0.2]

[[grid]]
variant = "preconditioned momentum"
compare = ["momentum", "nlcg-fr"]
global_batch = [64]
optimizer = ["momentum-bfgs"]
seed = [0, 1, 2]

[claim]
optimizer = "nlcg-fr"
baseline = "momentum"
"""


@requires_horovod
@pytest.mark.slow
def test_variants_are_compared_with_the_study_on_their_own_and_drawn(tmp_path):
    path = _write(tmp_path, E2E)
    p = run_cli(["sweep", str(path)], timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    folder = tmp_path / "results" / "var"
    runs = load_runs(folder)
    cfg = runs.config.map(json.loads)
    line = cfg.map(lambda c: c["hparams"].get("line_search"))
    lr = cfg.map(lambda c: c["base_lr"])
    top1 = lambda mask: runs[mask].sort_values("seed").top1.to_numpy()  # noqa: E731
    nlcg, no_ls = (runs.optimizer == "nlcg-fr") & line.isna(), (runs.optimizer == "nlcg-fr") & (line == "none")
    momentum = {x: (runs.optimizer == "momentum") & (lr == x) for x in (0.05, 0.1, 0.2)}
    bfgs = runs.optimizer == "momentum-bfgs"
    assert len(runs) == 18 and all(len(top1(m)) == 3 for m in [nlcg, no_ls, bfgs, *momentum.values()])

    from plots import report

    rep = report.prepare(folder, tmp_path / "figures")
    doc = rep.doc
    # the primary claim and the study's comparisons see the study's own runs alone
    own_ids = set(runs.config_id[nlcg | momentum[0.1]])
    assert {c["config_id"] for c in doc["configurations"]} == own_ids
    assert doc["primary"]["per_budget"][0]["top1_mean"] == pytest.approx(top1(nlcg).mean(), abs=1e-6)
    v = doc["variants"]
    # the rate variant is chosen on validation (the highest mean val_top1 of its 3 rates), then judged on test
    val = {x: runs[m].val_top1.mean() for x, m in momentum.items()}
    best = max(val, key=val.get)
    rates = next(s for s in v["series"] if s["series"] == "rates")
    assert rates["base_lr"] == best and rates["configurations"] == 3
    # every comparison against scipy's Welch test and interval of the runs' own top-1
    expect = {("no line search", "nlcg-fr"): (no_ls, nlcg), ("rates", "momentum"): (momentum[best], momentum[0.1]),
              ("rates", "nlcg-fr"): (momentum[best], nlcg), ("preconditioned momentum", "momentum"): (bfgs, momentum[0.1]),
              ("preconditioned momentum", "nlcg-fr"): (bfgs, nlcg)}
    got = {(e["series"], e["against"]): e for e in v["comparisons"]}
    assert set(got) == set(expect)
    p_values = {}
    for key, (a, b) in expect.items():
        e, ref = got[key], scipy.stats.ttest_ind(top1(a), top1(b), equal_var=False)
        assert e["gain_points"] == pytest.approx(100 * (top1(a).mean() - top1(b).mean()), abs=1e-4)
        if (a == b).all():  # the rate chosen is the study's own: the same runs, no test
            assert e["p_value"] is None and "the same runs" in e["reason"]
            continue
        if top1(a).var() + top1(b).var() > 0:
            ci = ref.confidence_interval(0.95)
            assert e["ci95_points"] == pytest.approx([100 * ci.low, 100 * ci.high], abs=1e-3)
            assert e["p_value"] == pytest.approx(ref.pvalue, rel=1e-4)
        p_values[key] = e["p_value"]
    # Holm's step-down recomputed by hand
    order = sorted(p_values, key=p_values.get)
    running = 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[key]))
        assert got[key]["p_holm"] == pytest.approx(running, rel=1e-4)
    # NLCG's diagnostics summarised from the history of the series that log them
    diag = {d["series"]: d for d in v["diagnostics"]}
    assert {"nlcg-fr", "no line search (nlcg-fr)", "preconditioned momentum (momentum-bfgs)"} <= set(diag)
    assert diag["no line search (nlcg-fr)"]["alpha_min"] == pytest.approx(1.0)  # line search off: alpha = 1
    # claims.md ends with the generated paragraph; the figures and the page show the variants
    text = claims.markdown(doc)
    assert text.rstrip().endswith(v["paragraph"]) and "## Variants" in text
    assert "Against full nlcg-fr: no line search" in v["paragraph"]
    left = rep.figures["ablation"].axes[0]
    ticks = [t.get_text() for t in left.get_yticklabels()]
    assert set(ticks) == {"momentum", "nlcg-fr", "no line search", "rates", "preconditioned momentum"}
    shown = sorted(x for c in left.collections if isinstance(c, PathCollection) for x in c.get_offsets()[:, 0])
    assert sorted(shown) == pytest.approx(sorted([*top1(nlcg), *top1(momentum[0.1]), *top1(no_ls),
                                                  *top1(momentum[best]), *top1(bfgs)]))
    beta = rep.figures["diagnostics"].axes[2]
    assert {ln.get_label() for ln in beta.get_lines() if not ln.get_label().startswith("_")} == \
        {name for name, d in diag.items() if d["beta_mean"] is not None} == {"nlcg-fr", "no line search (nlcg-fr)"}
    assert diag["preconditioned momentum (momentum-bfgs)"]["precond_min_min"] < 1  # its preconditioner acted
    rep.save()
    page = (tmp_path / "figures" / "index.html").read_text()
    assert "fig-ablation" in page and "fig-diagnostics" in page and "<code>variants.diagnostics</code>" in page
    assert "no line search" in page.split("fig-ablation", 1)[1]


def _doc(gain, low, high, verdict, ablations):
    primary = {"optimizer": "nlcg-fr", "baseline": "best", "global_batch": 64, "gain_points": gain,
               "ci95_points": [low, high], "verdict": verdict, "per_budget": [{"baseline": "momentum"}]}
    comparisons = [{"series": name, "optimizer": "nlcg-fr", "against": "nlcg-fr", "global_batch": 64, "gain_points": g,
                    "ci95_points": [g - 1, g + 1], "p_value": 0.01, "verdict": v, "verdict_adjusted": v, "reason": ""}
                   for name, g, v in ablations]
    return {"primary": primary}, {"method": "nlcg-fr", "comparisons": comparisons}


@pytest.mark.parametrize("primary, ablations, says", [
    ((8.0, 4.0, 12.0, "holds"), [("no line search", -6.0, "fails"), ("no preconditioner", -0.5, "inconclusive")],
     "So the gain is carried by what no line search removes"),
    ((8.0, 4.0, 12.0, "holds"), [("no preconditioner", -0.5, "inconclusive")],
     "So no single component carries the gain"),
    ((0.5, -2.0, 3.0, "inconclusive"), [("no line search", -6.0, "fails")],
     "no gain of nlcg-fr over the baselines at this batch to explain"),
])
def test_the_paragraph_names_what_carries_the_gain_from_the_numbers(primary, ablations, says):
    from plots import ablation

    doc, variants = _doc(*primary, ablations)
    text = ablation.paragraph(doc, variants)
    assert says in text and "against the best baseline (momentum)" in text
    assert f"{primary[0]:+.1f} points [{primary[1]:+.1f}, {primary[2]:+.1f}]" in text
