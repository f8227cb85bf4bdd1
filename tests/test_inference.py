"""The claims' statistics against independent references: SciPy recomputes every interval and p-value,
statsmodels checks Holm's adjustment, the primary test keeps its 5 % error rate under the null and finds a
known effect, and the declaration comes from the sweep file, never from which runs have finished."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from bench import grid, study
from bench.config import ConfigError
from plots import claims, figures, inference, stats
from test_plots import _history, _seeds


def test_one_stratum_is_welchs_test_as_scipy_computes_it():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(0.6, 0.02, 3), rng.normal(0.58, 0.05, 4)
        r = inference.stratified_welch([(a, b)])
        ref = scipy.stats.ttest_ind(a, b, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert (r["low"], r["high"]) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
        assert inference.welch_p(a, b) == pytest.approx(ref.pvalue, rel=1e-12)


def test_strata_pool_the_mean_difference_with_satterthwaite_degrees_of_freedom():
    strata = [([0.60, 0.62, 0.61], [0.55, 0.50, 0.52]), ([0.70, 0.74], [0.69, 0.65, 0.66, 0.70])]
    r = inference.stratified_welch(strata)
    # independent re-derivation: Var(mean_k d_k) = sum_k (va/na + vb/nb) / K^2
    parts = [(np.var(x, ddof=1) / len(x), len(x) - 1) for pair in strata for x in map(np.asarray, pair)]
    gain = np.mean([np.mean(a) - np.mean(b) for a, b in strata])
    se = math.sqrt(sum(v for v, _ in parts)) / 2
    df = sum(v for v, _ in parts) ** 2 / sum(v**2 / d for v, d in parts)
    assert r["gain"] == pytest.approx(gain) and r["df"] == pytest.approx(df)
    assert r["p_value"] == pytest.approx(2 * scipy.stats.t.sf(gain / se, df))
    assert r["high"] - r["gain"] == pytest.approx(scipy.stats.t.ppf(0.975, df) * se)
    with pytest.raises(ValueError, match="need 2 or more"):
        inference.stratified_welch([([0.5], [0.4, 0.3])])


def test_the_primary_test_holds_about_5_percent_of_the_time_without_an_effect_and_finds_a_real_one():
    rng = np.random.default_rng(12345)

    def rate(effect: float, draws: int = 4000) -> float:
        held = 0
        for _ in range(draws):  # 3 budgets, 3 seeds a side, each budget its own level and spread
            strata = [(rng.normal(0.6 + k / 10 + effect, s, 3), rng.normal(0.6 + k / 10, s * 1.5, 3))
                      for k, s in enumerate((0.01, 0.03, 0.02))]
            r = inference.stratified_welch(strata)
            held += inference.verdict(r["gain"], r["p_value"]) == "holds"
        return held / draws

    null = rate(0.0)
    assert 0.015 <= null <= 0.035  # one-sided: half of the two-sided 5 % (binomial sd 0.0025 at 4000 draws)
    assert rate(0.06, 500) > 0.9


def test_holm_against_a_worked_example_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005]  # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 -> max 0.06
    assert inference.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(inference.holm([0.2, math.nan, 0.01])[1])  # NaN: not part of the family
    assert inference.holm([0.2, math.nan, 0.01])[::2] == pytest.approx([0.2, 0.02])  # a family of 2
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(1, 30))
        assert inference.holm(p) == pytest.approx(multipletests(p, method="holm")[1].tolist())


def test_intervals_are_printed_at_the_precision_that_shows_their_sign():
    assert inference.signed_interval(0.03, 3.1) == "[+0.03, +3.10]"
    assert inference.signed_interval(-0.004, 2.0) == "[-0.004, +2.000]"
    assert inference.signed_interval(1.5, 3.0) == "[+1.5, +3.0]"
    assert inference.signed_interval(-0.0, 0.0) == "[-0.0, +0.0]"  # exact zeros need no digits
    assert (inference.p_text(0.04999), inference.p_text(0.0012), inference.p_text(2e-5)) == \
        ("p = 0.04999", "p = 0.001", "p < 0.0001")
    assert inference.p_text(0.0501) == "p = 0.0501" and inference.p_text(0.3) == "p = 0.30"


def _table(rng, effect=0.0):
    rows = []
    for budget in (1.0, 2.0):
        cfg = {"epochs": budget}
        rows += _seeds(f"n{budget}-", "nlcg-fr", 4096, list(rng.normal(0.6 + effect, 0.02, 3)), cfg=cfg)
        rows += _seeds(f"p{budget}-", "nlcg-pr", 4096, list(rng.normal(0.6, 0.02, 3)), cfg=cfg)
        rows += _seeds(f"m{budget}-", "momentum", 4096, list(rng.normal(0.6, 0.02, 3)), cfg=cfg)
        rows += _seeds(f"r{budget}-", "rmsprop", 4096, list(rng.normal(0.58, 0.02, 3)), cfg=cfg)
    rows += _seeds("s", "momentum", 256, [0.8, 0.82, 0.81]) + _seeds("t", "nlcg-fr", 256, [0.79, 0.8, 0.8])
    return pd.DataFrame(rows)


def test_scipy_recomputes_every_interval_and_p_value_and_holm_runs_over_the_whole_family():
    runs = _table(np.random.default_rng(1), effect=0.05)
    doc = claims.build(runs, None)
    prep = stats.prepare(runs)
    top1 = {cid: g.sort_values("seed").top1.to_numpy() for cid, g in prep.groupby("config_id")}
    entries = doc["claims"]
    assert doc["family_size"] == len(entries) == 5 and doc["adjustment"] == "holm"
    for e in entries:
        a, b = top1[e["config_id"]], top1[e["baseline_config_id"]]
        ref = scipy.stats.ttest_ind(a, b, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert e["p_value"] == pytest.approx(ref.pvalue, abs=2e-6)
        assert e["ci95_points"] == [pytest.approx(100 * ci.low, abs=2e-4), pytest.approx(100 * ci.high, abs=2e-4)]
        assert e["baseline_rule"] == "best test mean of 2 baseline configurations" or e["global_batch"] == 256
    adjusted = inference.holm([e["p_value"] for e in entries])
    assert [e["p_holm"] for e in entries] == pytest.approx(adjusted, abs=2e-6)
    # the primary: nlcg-fr against the best baseline at 4096, both budgets, by default
    p = doc["primary"]
    assert (p["global_batch"], p["budgets"], p["declared"]) == (4096, [1.0, 2.0], False)
    strata = [(top1[b["config_id"]], top1[b["baseline_config_id"]]) for b in p["per_budget"]]
    assert p["p_value"] == pytest.approx(inference.stratified_welch(strata)["p_value"], abs=2e-6)
    text = claims.markdown(doc)
    assert "## Primary claim (the default" in text and f"a family of {doc['family_size']}, Holm-adjusted" in text
    assert f"**{p['verdict']}**: gain {p['gain_points']:+.2f} points" in text and not p["robust"]
    assert "not robust: the seeds that judged also chose" in text


def test_confirmation_seeds_judge_what_the_main_seeds_chose():
    # main seeds 0-2: momentum looks best by luck; confirmation seeds 3-5: rmsprop is in fact no worse
    rows = []
    for opt, main, confirm in (("nlcg-fr", [0.60, 0.61, 0.62], [0.70, 0.71, 0.72]),
                               ("momentum", [0.65, 0.66, 0.64], [0.50, 0.52, 0.51]),
                               ("rmsprop", [0.55, 0.56, 0.57], [0.60, 0.61, 0.62])):
        rows += [r for r in _seeds(opt[0], opt, 4096, main + confirm)]
    runs = pd.DataFrame(rows)
    study = {"claim": {"optimizer": "nlcg-fr", "baseline": "best", "global_batch": 4096, "epochs": [3.0],
                       "confirm_seeds": [3, 4, 5], "declared": True}, "tuning_fields": ["base_lr"]}
    doc = claims.build(runs, None, study=study)
    (e,) = doc["claims"]
    assert e["baseline"] == "momentum" and e["chosen_on_seeds"] == [0, 1, 2] and e["judged_on"] == "confirmation seeds"
    assert e["seeds"] == [3, 4, 5] and e["baseline_top1_mean"] == pytest.approx(0.51)  # momentum, judged on 3-5
    p = doc["primary"]
    assert p["per_budget"][0]["baseline"] == "momentum" and p["judged_on"] == "confirmation seeds"
    assert p["gain_points"] == pytest.approx(20.0) and p["verdict"] == "holds" and p["robust"]
    assert e["robust"] == (e["verdict_adjusted"] == "holds")
    assert doc["confirm_seeds"] == [3, 4, 5] and doc["choosing_seeds"] == [0, 1, 2]
    # another confirmation list: seeds 4-5 judge, 0-3 choose (seed 3 now chooses: rmsprop is still behind)
    other = claims.build(runs, None, study={**study, "claim": {**study["claim"], "confirm_seeds": [4, 5]}})
    assert other["claims"][0]["seeds"] == [4, 5] and other["primary"]["verdict"] == "holds"
    assert "confirmation seeds 3, 4, 5 chose nothing" in claims.markdown(doc)


def test_settings_do_not_depend_on_which_runs_have_finished():
    rows = (_seeds("a", "momentum", 4096, [0.6, 0.61], cfg={"bn_momentum": 0.9})
            + _seeds("b", "nlcg-fr", 4096, [0.62, 0.63], cfg={"bn_momentum": 0.9})
            + _seeds("c", "momentum", 4096, [0.5, 0.51], cfg={"bn_momentum": 0.99})
            + _seeds("d", "nlcg-fr", 4096, [0.55, 0.57], cfg={"bn_momentum": 0.99}))
    full = pd.DataFrame(rows)
    partial = full[~full.run_id.isin(["d0", "d1"])]  # nlcg-fr's runs at 0.99 pending
    settings = dict(zip(stats.prepare(full).run_id, stats.prepare(full).setting, strict=True))
    assert dict(zip(stats.prepare(partial).run_id, stats.prepare(partial).setting, strict=True)) == \
        {k: v for k, v in settings.items() if k not in ("d0", "d1")}
    assert settings["a0"] == "bn_momentum=0.9" and settings["c0"] == "bn_momentum=0.99"


def _sweep_file(tmp_path, claim: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(f'sweep = "s"\noutput_dir = "{tmp_path}"\ndataset = "synthetic"\n{claim}\n'
                    '[[grid]]\nglobal_batch = [256, 1024]\noptimizer = ["momentum", "nlcg-fr"]\nseed = [0, 1, 2]\n'
                    '[optimizer_overrides.momentum]\ninit_lr = 0.05\n')
    return str(path)


def test_the_declaration_is_read_from_the_sweep_file_and_checked(tmp_path):
    sweep = grid.load(_sweep_file(tmp_path, ""))
    assert sweep.claim == {"optimizer": "nlcg-fr", "baseline": "best", "baselines": ["momentum"], "global_batch": 1024,
                           "epochs": [3.0], "confirm_seeds": [], "declared": False}
    assert sweep.roles == {"momentum": "baseline", "nlcg-fr": "method"}  # the registry's, recorded in study.json
    assert sweep.tuning == ("base_lr", "init_lr")
    sweep = grid.load(_sweep_file(tmp_path, "[claim]\nglobal_batch = 256\nconfirm_seeds = [2]"))
    assert sweep.claim["global_batch"] == 256 and sweep.claim["confirm_seeds"] == [2] and sweep.claim["declared"]
    for bad, match in (("global_batch = 512", "global_batch = 512 is not run; valid: 256, 1024"),
                       ("confirm_seeds = [0, 1, 2]", "leave others to choose on"),
                       ("confirm_seeds = [7]", "must list seeds run"), ("optimizer = 'adamx'", "is unknown"),
                       ("epochs = [5]", "valid: \\[3.0\\]"), ("pooled = true", "valid keys")):
        with pytest.raises(ConfigError, match=match):
            grid.load(_sweep_file(tmp_path, f"[claim]\n{bad}"))


def test_declare_writes_study_json_once_and_keeps_a_changed_declaration_visible(tmp_path):
    first = grid.load(_sweep_file(tmp_path, ""))
    path = study.declare(first, "s.toml", "2026-01-01T00:00:00+00:00")
    doc = json.loads(path.read_text())
    assert doc["claim"]["global_batch"] == 1024 and doc["declared_at"].startswith("2026-01-01")
    study.declare(first, "s.toml", "2026-02-02T00:00:00+00:00")  # same declaration: the first time stays
    assert json.loads(path.read_text())["declared_at"].startswith("2026-01-01")
    redeclared = grid.load(_sweep_file(tmp_path, "[claim]\nglobal_batch = 256"))
    study.declare(redeclared, "s.toml", "2026-03-03T00:00:00+00:00")
    doc = json.loads(path.read_text())
    assert doc["claim"]["global_batch"] == 256 and doc["previous"][0]["claim"]["global_batch"] == 1024


def test_curve_figures_have_at_most_three_panels_a_row_and_the_papers_figures_one():
    rows = []
    for k, batch in enumerate((256, 512, 1024, 2048, 4096)):
        rows += _seeds(f"m{k}-", "momentum", batch, [0.6, 0.61]) + _seeds(f"n{k}-", "nlcg-fr", batch, [0.6, 0.62])
    runs = pd.DataFrame(rows)
    fig = figures.loss_vs_epoch(runs, _history(runs))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 5 and fig.get_size_inches()[0] <= 3 * 4.4 + 1e-9
    assert len({round(ax.get_position().x0, 3) for ax in shown}) == 3  # 3 columns, 2 rows
    one = figures.loss_vs_epoch_at_claim(runs, _history(runs), 1024)
    (ax,) = [a for a in one.axes if a.get_visible()]
    assert ax.get_title() == "global batch 1024, 3 epochs"
    assert [a.get_title() for a in figures.wall_time_at_claim(runs, _history(runs)).axes] == \
        ["global batch 4096, 3 epochs"]


def test_the_report_reads_the_sweeps_declaration_or_the_profile_of_an_older_folder(tmp_path):
    from plots import report

    assert report.study(tmp_path / "nothing") is None
    old = report.study(tmp_path / "mini")  # no study.json: experiments/mini.toml, read now and said so
    assert old["claim"]["global_batch"] == 4608 and old["claim"]["confirm_seeds"] == [3, 4, 5]
    assert "read at report time" in old["source"]
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps({"claim": {"global_batch": 256}, "tuning_fields": ["base_lr"]}))
    assert report.study(folder)["claim"] == {"global_batch": 256}
