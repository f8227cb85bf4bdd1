"""The critical batch (plots.critical_batch): the hyperbola fit against SciPy and known values, the bootstrap
interval's coverage, the 20 % rule on exact curves, and the tables and figures from a runs table."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import lsq_linear

from plots import critical_batch as cb

BATCHES = np.array([64, 128, 256, 512, 1024, 2048, 4096, 8192], dtype=float)


def _steps(s_min, e_min, batches=BATCHES):
    return s_min + e_min / batches


def test_fit_is_the_non_negative_relative_least_squares_scipy_solves():
    rng = np.random.default_rng(0)
    for trial in range(200):
        b = np.sort(rng.choice(BATCHES, size=rng.integers(3, 8), replace=False))
        # some curves pull S_min or E_min below 0 (falling faster than 1 / B, or rising): the bound binds
        s = _steps(rng.uniform(0, 300), rng.uniform(0, 1e5), b) * rng.lognormal(0, 0.4, len(b)) \
            * (b / b[0]) ** rng.uniform(-0.5, 0.3)
        got = cb.fit(b, s)
        a = np.stack([1 / s, 1 / (b * s)], axis=1)
        want = lsq_linear(a, np.ones(len(b)), bounds=(0, np.inf), method="bvls").x
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * max(1.0, *want), err_msg=str(trial))
    rows = np.stack([_steps(100, 5e4), _steps(10, 1e5)])  # row by row when given a matrix
    np.testing.assert_allclose(np.array(cb.fit(BATCHES, rows)).T, [[100, 5e4], [10, 1e5]], rtol=1e-9)


def test_fit_recovers_s_min_and_e_min_from_noisy_steps():
    rng = np.random.default_rng(1)
    s_min, e_min = 120.0, 6.0e4  # B_crit = 500, inside the batches
    got = np.array([cb.fit(BATCHES, _steps(s_min, e_min) * rng.lognormal(0, 0.03, len(BATCHES)))
                    for _ in range(200)])
    assert np.median(got[:, 0]) == pytest.approx(s_min, rel=0.03)
    assert np.median(got[:, 1]) == pytest.approx(e_min, rel=0.03)
    assert np.median(cb.b_crit(got[:, 0], got[:, 1])) == pytest.approx(500, rel=0.05)
    assert cb.b_crit(0.0, 5.0) == math.inf and math.isnan(cb.b_crit(0.0, 0.0))


def test_bootstrap_interval_covers_the_true_critical_batch():
    # 100 seeded studies of 4 seeds at 8 batches with 8 % noise per seed: the 95 % interval over seeds must
    # cover the true B_crit in most of them (a percentile bootstrap with 4 seeds runs a little narrow).
    s_min, e_min = 120.0, 6.0e4
    covered, widths = 0, []
    for repeat in range(100):
        rng = np.random.default_rng(100 + repeat)
        points = {int(b): _steps(s_min, e_min, b) * rng.lognormal(0, 0.08, 4) for b in BATCHES}
        out = cb.bootstrap(points, draws=500, seed=repeat)
        low, high = out["b_crit_ci"]
        covered += low <= 500 <= high
        widths.append(high / low)
    assert covered >= 85, covered
    assert np.median(widths) < 3  # and it is an interval worth having, not everything


def test_twenty_percent_rule_on_exact_power_laws():
    # S = c B^-a: steps over perfect scaling grow as (B / B0)^(1 - a), linear in log B, so the interpolation
    # is exact: B_20 = B0 1.2^(1 / (1 - a))
    for a in (0.3, 0.6, 0.9):
        got = cb.twenty_percent(BATCHES, 1e6 * BATCHES ** -a)
        assert got == pytest.approx(64 * 1.2 ** (1 / (1 - a)), rel=1e-12)
    # perfect scaling up to 1024, then B^-0.5: the crossing is 1024 x 1.2^2
    s = np.where(BATCHES <= 1024, 1e6 / BATCHES, 1e6 / 1024 * (BATCHES / 1024) ** -0.5)
    assert cb.twenty_percent(BATCHES, s) == pytest.approx(1024 * 1.44, rel=1e-12)
    assert cb.twenty_percent(BATCHES, 1e6 / BATCHES) == math.inf  # perfect scaling throughout


# ---- from a runs table ---------------------------------------------------------------------------------------


def _runs(curves: dict, seeds=3, noise=0.05, missed=(), epochs=lambda b: 2.0, base_lr=0.1, slower=1.0):
    """Runs rows with steps_to_target from S = S_min + E_min / B per optimizer (seeded noise); ``missed``:
    (optimizer, batch) whose last seed did not reach the target; ``epochs(batch)``: the budget; ``slower``:
    a factor on every run's steps."""
    rng = np.random.default_rng(7)
    rows = []
    for opt, (s_min, e_min) in curves.items():
        for b in BATCHES:
            for seed in range(seeds):
                reach = _steps(s_min, e_min, b) * rng.lognormal(0, noise) * slower
                if (opt, int(b)) in missed and seed == seeds - 1:
                    reach = np.nan
                ep = float(epochs(int(b)))
                config = {"optimizer": opt, "global_batch": int(b), "epochs": ep, "seed": seed, "base_lr": base_lr}
                rows.append({"run_id": f"{opt}-{int(b)}-{seed}-{ep}-{base_lr}", "status": "complete", "optimizer": opt,
                             "global_batch": int(b), "top1": 0.8, "epochs": ep, "steps": 1000, "seed": seed,
                             "dataset": "fashion_mnist", "model": "resnet8", "workers": 1, "target_top1": 0.7,
                             "steps_to_target": reach, "noise_scale": 400.0 + 10 * seed,
                             "config": json.dumps(config)})
    return pd.DataFrame(rows)


CURVES = {"momentum": (120.0, 6.0e4), "rmsprop": (150.0, 4.5e4), "nlcg-fr": (60.0, 1.2e5)}  # B_crit 500, 300, 2000


def test_fits_and_comparison_from_the_runs_table():
    runs = _runs(CURVES, missed={("momentum", 8192)})
    fitted = cb.fits(runs, draws=400).set_index("optimizer")
    assert fitted.loc["momentum"].left_out == [8192] and 8192 not in fitted.loc["momentum"].batches
    for opt, (s_min, e_min) in CURVES.items():
        low, high = fitted.loc[opt].b_crit_ci  # coverage is the test above's; here: near the truth, inside
        assert fitted.loc[opt].b_crit == pytest.approx(e_min / s_min, rel=0.15)
        assert low <= fitted.loc[opt].b_crit <= high and high / low < 2, (opt, low, high)
    assert fitted.loc["momentum"].b_simple == pytest.approx(410.0)
    [entry] = cb.comparison(fitted.reset_index())
    assert entry["baseline"] == "momentum" and entry["nlcg"] == "nlcg-fr"  # the baseline with the largest B_crit
    assert entry["ratio"] == pytest.approx(fitted.loc["nlcg-fr"].b_crit / fitted.loc["momentum"].b_crit)
    assert entry["ratio_low"] > 1 and entry["verdict"] == "holds"
    # the same steps under two names: the interval holds 1, inconclusive
    one = _runs({"momentum": CURVES["momentum"]})
    same = pd.concat([one, one.assign(optimizer="nlcg-pr", run_id="x" + one.run_id,
                                      config=one.config.str.replace("momentum", "nlcg-pr"))])
    [entry] = cb.comparison(cb.fits(same, draws=400))
    assert entry["ratio_low"] < 1 < entry["ratio_high"] and entry["verdict"] == "inconclusive"
    # worse scaling fails
    worse = _runs({"momentum": CURVES["nlcg-fr"], "nlcg-pr": CURVES["rmsprop"]})
    assert cb.comparison(cb.fits(worse, draws=400))[0]["verdict"] == "fails"
    # steps that do not fall with the batch: E_min = 0, B_crit = 0, and a ratio to it is inf, not an error
    flat = _runs({"momentum": (500.0, 0.0), "nlcg-fr": CURVES["nlcg-fr"]}, noise=0.0)
    [entry] = cb.comparison(cb.fits(flat, draws=50))
    assert entry["b_crit_baseline"] == 0 and entry["ratio"] == math.inf and entry["verdict"] == "holds"


def test_each_batch_takes_its_tuned_choice_across_budgets_and_learning_rates():
    # budgets growing with the batch (as in experiments/mini_scaling.toml) make one series, not one per budget
    growing = _runs(CURVES, epochs=lambda b: 2 if b <= 512 else 4 if b <= 2048 else 8 if b <= 4096 else 16)
    fitted = cb.fits(growing, draws=200).set_index("optimizer")
    assert sorted(fitted.index) == sorted(CURVES) and all(len(b) == len(BATCHES) for b in fitted.batches)
    assert fitted.loc["momentum"].chosen[64] == "2 ep" and fitted.loc["momentum"].chosen[8192] == "16 ep"
    for opt, (s_min, e_min) in CURVES.items():
        assert fitted.loc[opt].b_crit == pytest.approx(e_min / s_min, rel=0.15)
    # a second learning rate 30 % slower everywhere, and at 1024 the first one missing a seed: the faster is
    # chosen where every seed reached, the slower fills 1024, and the fit is the faster curve's
    fast = _runs(CURVES, missed={("momentum", 1024)})
    slow = _runs(CURVES, base_lr=0.2, slower=1.3)
    tuned = cb.fits(pd.concat([fast, slow]), draws=200).set_index("optimizer")
    assert len(tuned) == len(CURVES)  # base_lr is a tuning field: not a series of its own
    assert tuned.loc["momentum"].chosen[512] == "2 ep, base_lr=0.1"
    assert tuned.loc["momentum"].chosen[1024] == "2 ep, base_lr=0.2" and tuned.loc["momentum"].left_out == []
    one = cb.fits(fast, draws=200).set_index("optimizer")
    assert tuned.loc["rmsprop"].mean_steps == pytest.approx(one.loc["rmsprop"].mean_steps)
    at_1024 = tuned.loc["momentum"].mean_steps[tuned.loc["momentum"].batches.index(1024)]
    assert at_1024 == pytest.approx(1.3 * _steps(*CURVES["momentum"], 1024), rel=0.1)
    # a second budget at the largest batches that takes more steps is never chosen
    longer = _runs(CURVES, epochs=lambda b: 32, slower=1.5)
    both = cb.fits(pd.concat([growing, longer[longer.global_batch >= 4096]]), draws=200).set_index("optimizer")
    assert both.loc["nlcg-fr"].chosen[8192] == "16 ep"
    assert both.loc["nlcg-fr"].b_crit == pytest.approx(fitted.loc["nlcg-fr"].b_crit)


def test_steps_to_target_from_the_history_when_the_runs_have_none():
    runs = _runs({"momentum": CURVES["momentum"]}, seeds=1).assign(steps_to_target=np.nan, target_top1=0.0)
    hist = pd.DataFrame([{"run_id": r, "step": s, "top1": 0.3 if s < 40 + k else 0.9, "epoch": s / 100}
                         for k, r in enumerate(runs.run_id) for s in range(10, 200, 10)])
    prep, target = cb.steps_to_target(runs, hist)
    assert target == pytest.approx(0.72)  # 90 % of the best mean final top-1 (0.8)
    np.testing.assert_array_equal(prep.reach, [40 + 10 * math.ceil(k / 10) for k in range(len(runs))])


def test_figures_draw_with_at_most_three_panels_per_row():
    runs = _runs(CURVES)
    fig = cb.critical_batch(runs)
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == 2  # the fits, and the summary
    lines = [ln for ln in axes[0].get_lines() if ln.get_label().startswith("nlcg-fr: B_crit")]
    assert len(lines) == 1
    hist = pd.DataFrame([{"run_id": r, "step": s, "epoch": s / 10, "noise_scale": 300.0 + s}
                         for r in runs.run_id for s in (5, 10)])
    fig = cb.noise_scale(runs, hist)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == len(BATCHES)
    assert fig.get_size_inches()[0] <= 3 * 4.4 + 1e-9  # three panels per row at most
    assert not [ax for ax in cb.noise_scale(runs, hist.assign(noise_scale=np.nan)).axes if ax.axison]


def test_noise_mapping_takes_the_early_estimates_and_the_last_and_divides_each_batch_by_them():
    from plots import claims, claims_text

    runs = _runs({"momentum": CURVES["momentum"], "nlcg-fr": CURVES["nlcg-fr"]}, seeds=2)
    runs = runs[runs.global_batch.isin([512, 1024, 4096])]
    # 20 logged steps per run: B_simple 100 + k over the first 2 (the first 10 %), 1000 after; the runs
    # table's last estimate 2000 for momentum, 5000 for nlcg-fr; one run has no estimate at all
    rows = []
    for k, r in enumerate(runs.itertuples()):
        for step in range(1, 21):
            rows.append({"run_id": r.run_id, "step": step, "epoch": step / 10,
                         "noise_scale": (np.nan if k == 0 else 100.0 + k if step <= 2 else 1000.0)})
    hist = pd.DataFrame(rows)
    runs = runs.assign(noise_scale=np.where(runs.optimizer == "momentum", 2000.0, 5000.0))
    runs.loc[runs.index[0], "noise_scale"] = np.nan
    m = cb.noise_mapping(runs, hist)
    starts = [100.0 + k for k in range(1, len(runs))]
    assert m["start"] == pytest.approx(np.median(starts))
    assert m["end"] == pytest.approx(np.median(runs.noise_scale.dropna()))
    assert m["n_runs"] == len(runs) - 1
    assert m["by_optimizer"]["momentum"]["end"] == 2000.0 and m["by_optimizer"]["nlcg-fr"]["end"] == 5000.0
    assert m["by_optimizer"]["nlcg-fr"]["start"] == pytest.approx(np.median(starts[len(runs) // 2 - 1:]))
    assert [b["global_batch"] for b in m["batches"]] == [512, 1024, 4096]
    assert m["batches"][2]["over_end"] == pytest.approx(4096 / m["end"])
    assert cb.noise_mapping(runs, hist.assign(noise_scale=np.nan)) is None
    # into claims.json (beside the paper's batch by steps per epoch) and claims.md
    doc = {"noise_scale_mapping": claims._noise(runs, hist, scale=50000 / 60000),
           "noise_scale_rule": claims.NOISE_RULE, "noise_scale_published": claims.PUBLISHED_NOISE}
    assert doc["noise_scale_mapping"]["batches"][1]["paper_batch"] == round(1024 * 50000 / 60000)
    json.dumps(doc, allow_nan=False)
    text = "\n".join(claims_text.noise_lines(doc))
    assert f"| 4096 | {round(4096 * 5 / 6):,} | {4096 / m['start']:.2f} | {4096 / m['end']:.2f} |" in text
    assert "momentum 10" in text and "-> 2,000" in text
    assert claims_text.noise_lines({"noise_scale_mapping": None}) == []
