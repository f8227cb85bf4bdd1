"""Figures, intervals and the claims against hand-made tables with known answers."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import results
from conftest import ROOT, run_cli
from plots import claims, figures, report, stats

REFERENCE = ROOT / "experiments" / "paper_reference.csv"
T975 = {1: 12.706205, 2: 4.302653, 4: 2.776445, 9: 2.262157, 30: 2.042272}  # printed t tables


def _run(rid, opt, batch, top1, status="complete", seed=0, cfg=None, **kw):
    """A runs row; ``cfg`` adds config fields (the config JSON is all there is to tell configurations apart
    in rows without a config_id column)."""
    config = {"optimizer": opt, "global_batch": batch, "epochs": 3.0, "steps": 0, "seed": seed, "base_lr": 0.1,
              "bn_momentum": 0.99, "sweep": "toy", "eval_every_epochs": 1.0, **(cfg or {})}
    return {"run_id": rid, "sweep": "toy", "status": status, "optimizer": opt, "global_batch": batch, "top1": top1,
            "epochs": config["epochs"], "steps": int(10 * config["epochs"]), "dataset": "fashion_mnist",
            "model": "resnet8", "seed": seed, "workers": 2, "target_top1": 0.0, "steps_to_target": np.nan,
            "config": json.dumps(config), **kw}


# Old layout (no config_id column); the diverged run has top1 0.0 as older trainers wrote it.
RUNS = pd.DataFrame([
    _run("a0", "momentum", 256, 0.80), _run("a1", "momentum", 256, 0.84, seed=1),
    _run("b", "nlcg-fr", 256, 0.81), _run("c", "rmsprop", 256, 0.83),
    _run("d", "momentum", 4096, 0.30), _run("e", "nlcg-fr", 4096, 0.60),
    _run("f", "rmsprop", 4096, 0.0, status="diverged"),
    _run("g", "rmsprop", 4096, 0.9, status="failed"),  # not a result: never drawn, never counted
])


def _seeds(prefix, opt, batch, values, cfg=None, **kw):
    """One configuration's seeds; NaN top-1 = a diverged seed."""
    return [_run(f"{prefix}{k}", opt, batch, v, status="diverged" if np.isnan(v) else "complete", seed=k, cfg=cfg,
                 **kw) for k, v in enumerate(values)]


def _history(runs):
    rows = []
    for rid in runs.run_id:
        rows += [{"run_id": rid, "step": s, "epoch": s / 10, "loss": 2.0 / s, "time_s": 0.1 * s} for s in (1, 2, 3)]
        rows.append({"run_id": rid, "step": 3, "epoch": 0.3, "time_s": 0.3, "top1": 0.5, "loss": np.nan})
    return pd.DataFrame(rows)


def _container(ax, label):
    labels = [c.get_label() for c in ax.containers]
    assert label in labels, labels
    return ax.containers[labels.index(label)]


def _bars(container):
    """(x, y, half-widths) of an errorbar container."""
    x, y = container.lines[0].get_data()
    segs = container.lines[2][0].get_segments()
    return np.asarray(x), np.asarray(y, dtype=float), np.array([(s[1][1] - s[0][1]) / 2 for s in segs])


def _t_by_integration(p, df):
    """Independent t quantile: trapezoid integral of Student's density, inverted on a fine grid."""
    t = np.linspace(0, 40, 400_001)
    norm = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    dens = norm * (1 + t**2 / df) ** (-(df + 1) / 2)
    cdf = 0.5 + np.concatenate([[0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(t))])
    return float(np.interp(p, cdf, t))


# ---- intervals ---------------------------------------------------------------------------------------


def test_t_quantile_matches_printed_tables_and_the_integrated_density():
    for df, t in T975.items():
        assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=2e-6)
    assert stats.t_quantile(0.025, 4) == pytest.approx(-2.776445, abs=2e-6)
    assert stats.t_quantile(0.975, 1e5) == pytest.approx(1.959964, abs=1e-4)  # the normal's
    for df in (2.5, 3.7, 7.3):  # Welch's degrees of freedom are not whole
        assert stats.t_quantile(0.975, df) == pytest.approx(_t_by_integration(0.975, df), abs=1e-4)


def test_mean_ci_is_student_t_over_seeds():
    mean, half, n = stats.mean_ci([0.5, 0.6, 0.7])
    assert (mean, n) == (pytest.approx(0.6), 3) and half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    mean, half, n = stats.mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half) and n == 1


def test_welch_interval_against_a_hand_computation():
    # equal spread and n: df = 2 (n - 1) = 4, se = sqrt(2 * 0.01^2 / 3)
    diff, low, high = stats.welch([0.60, 0.61, 0.62], [0.50, 0.51, 0.52])
    half = 2.776445 * math.sqrt(2 * 0.01**2 / 3)
    assert diff == pytest.approx(0.10) and (low, high) == (pytest.approx(0.10 - half), pytest.approx(0.10 + half))
    # unequal: Welch-Satterthwaite df by hand, t from the integrated density
    a, b = [0.6, 0.7, 0.8, 0.9], [0.5, 0.52]
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 2
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 1)
    half = _t_by_integration(0.975, df) * math.sqrt(va + vb)
    diff, low, high = stats.welch(a, b)
    assert diff == pytest.approx(0.24) and (diff - low, high - diff) == (pytest.approx(half, rel=1e-4),) * 2


def _claims_for(nlcg, base, **kw):
    runs = pd.DataFrame(_seeds("n", "nlcg-fr", 4096, nlcg) + _seeds("m", "momentum", 4096, base), **kw)
    (entry,) = claims.build(runs, None)["claims"]
    return entry


def test_verdicts_and_the_gain_interval_on_constructed_data():
    e = _claims_for([0.60, 0.61, 0.62], [0.50, 0.51, 0.52])
    half = 100 * 2.776445 * math.sqrt(2 * 0.01**2 / 3)
    assert e["verdict"] == "holds" and e["gain_points"] == pytest.approx(10.0)
    assert e["ci95_points"] == [pytest.approx(10 - half, abs=1e-5), pytest.approx(10 + half, abs=1e-5)]
    assert (e["n_seeds"], e["baseline_n_seeds"], e["baseline"]) == (3, 3, "momentum")
    assert e["top1_ci95"][1] - 0.61 == pytest.approx(4.302653 * 0.01 / math.sqrt(3), abs=1e-6)  # JSON: 6 decimals
    assert _claims_for([0.50, 0.51, 0.52], [0.60, 0.61, 0.62])["verdict"] == "fails"
    assert _claims_for([0.50, 0.60, 0.70], [0.55, 0.60, 0.65])["verdict"] == "inconclusive"
    one = _claims_for([0.9], [0.1, 0.11])  # one seed: a gain, no interval, no verdict
    assert one["verdict"] == "inconclusive" and one["gain_points"] == pytest.approx(79.5) and one["ci95_points"] is None
    # the paper's batch with the same steps per epoch (ImageNet), no published gain, the claim as text
    doc = claims.build(pd.DataFrame(_seeds("n", "nlcg-fr", 4096, [0.6, 0.7])), None, "imagenet")
    assert doc["claims"][0]["paper_batch"] == round(4096 * 1_281_167 / 60_000)
    assert doc["claims"][0]["paper_gain_points"] is None
    assert "more than 10 points" in doc["paper_claim"] and doc["interval_method"].startswith("Welch t interval")


# ---- configurations ------------------------------------------------------------------------------


def test_config_ids_of_old_rows_come_from_the_config_and_ignore_non_training_fields():
    from bench import config

    assert stats.NOT_TRAINING == config.NOT_TRAINING
    rows = pd.DataFrame([
        _run("s0", "momentum", 256, 0.8, seed=0), _run("s1", "momentum", 256, 0.8, seed=1,
                                                          cfg={"eval_every_epochs": 0.5, "sweep": "other"}),
        _run("x", "momentum", 256, 0.8, cfg={"bn_momentum": 0.9}), _run("w", "momentum", 256, 0.8, workers=4),
    ])
    key = stats.config_key(rows)
    assert key[0] == key[1] and len(set(key)) == 3  # seeds and cadence share one; bn_momentum, workers do not
    written = rows.assign(config_id=["c1", "c1", None, "c2"])
    assert list(stats.config_key(written)[[0, 1, 3]]) == ["c1", "c1", "c2"] and key[2] == stats.config_key(written)[2]
    prep = stats.prepare(rows)
    assert list(prep.label) == ["bn_momentum=0.99, workers=2", "bn_momentum=0.99, workers=2",
                                "bn_momentum=0.9, workers=2", "bn_momentum=0.99, workers=4"]


MIXED = pd.DataFrame(
    _seeds("lo", "momentum", 256, [0.50, 0.60], cfg={"bn_momentum": 0.9})
    + _seeds("hi", "momentum", 256, [0.80, 0.90])
    + _seeds("hj", "momentum", 4096, [0.20, 0.30])
    + _seeds("n", "nlcg-fr", 256, [0.70, 0.72, 0.74])
    + _seeds("nl", "nlcg-fr", 256, [0.52, 0.54], cfg={"bn_momentum": 0.9})
    + _seeds("m", "nlcg-fr", 4096, [0.4, 0.5])
)


def test_mixed_configurations_are_separate_series_never_averaged():
    ax = figures.top1_vs_batch(MIXED).axes[0]
    x, y, half = _bars(_container(ax, "momentum, bn_momentum=0.9 (ours)"))
    assert list(x) == [256] and y == pytest.approx([0.55]) and half == pytest.approx([12.706205 * 0.05 / 1.0])
    x, y, half = _bars(_container(ax, "momentum, bn_momentum=0.99 (ours)"))
    assert list(x) == [256, 4096] and y == pytest.approx([0.85, 0.25])
    assert half == pytest.approx([12.706205 * np.std([0.8, 0.9], ddof=1) / math.sqrt(2)] * 2)
    every_y = np.concatenate([c.lines[0].get_ydata() for c in ax.containers])
    assert not np.isclose(every_y, 0.70).any()  # the mean of both bn_momentum values never appears
    fig = figures.loss_vs_epoch(MIXED, _history(MIXED).assign(loss=lambda h: h.loss * (1 + h.run_id.str.len())))
    names = sorted(ln.get_label() for ln in fig.axes[0].get_lines())
    assert names == ["momentum, bn_momentum=0.9", "momentum, bn_momentum=0.99", "nlcg-fr, bn_momentum=0.9",
                     "nlcg-fr, bn_momentum=0.99"]
    # claims compare within one setting (a bn_momentum both optimizers ran): never NLCG at 0.9 against 0.99
    at_256 = {e["label"]: e for e in claims.build(MIXED, None)["claims"] if e["global_batch"] == 256}
    assert {k: (e["setting"], e["baseline_label"], e["baseline_top1_mean"]) for k, e in at_256.items()} == {
        "bn_momentum=0.9": ("bn_momentum=0.9", "bn_momentum=0.9", 0.55),
        "bn_momentum=0.99": ("bn_momentum=0.99", "bn_momentum=0.99", 0.85)}


def test_curves_mean_the_seeds_of_one_configuration_at_each_step():
    runs = pd.DataFrame(_seeds("s", "momentum", 256, [0.8, 0.9, 0.85]))
    hist = _history(runs)
    hist["loss"] *= hist.run_id.map({"s0": 1.0, "s1": 2.0, "s2": 3.0})
    for name in ("loss_vs_epoch", "wall_time", "top1_during_training"):
        fig = figures.FIGURES[name](runs, hist)
        (line,) = fig.axes[0].get_lines()
        x, y = line.get_data()
        if name == "top1_during_training":
            assert list(y) == [0.5] and "not epoch budgets" in fig.get_suptitle()
        else:
            assert np.allclose(y, [4.0, 2.0, 4 / 3])  # mean of 2/s, 4/s, 6/s
            assert np.allclose(x, [0.1, 0.2, 0.3])  # epoch s / 10 and time_s 0.1 s alike
    assert "train time" in figures.wall_time(runs, hist).axes[0].get_xlabel()
    assert "compilation and evaluation excluded" in figures.wall_time(runs, hist).axes[0].get_xlabel()


def test_diverged_seeds_are_marked_and_count_as_failures():
    runs = pd.DataFrame(_seeds("n", "nlcg-fr", 4096, [0.6, np.nan, 0.62]) + _seeds("m", "momentum", 4096,
                                                                                   [0.3, 0.31, 0.32])
                        + _seeds("r", "rmsprop", 4096, [0.9, np.nan]) + _seeds("p", "nlcg-pr", 4096, [0.5, 0.52]))
    summary = stats.summarize(stats.prepare(runs)).set_index("optimizer")
    assert summary.loc["nlcg-fr", ["n_seeds", "n_diverged"]].tolist() == [3, 1]
    assert np.isnan(summary.loc["nlcg-fr", "top1_mean"])  # not the mean of the two that survived
    ax = figures.top1_vs_batch(runs).axes[0]
    crosses = [c for c in ax.collections if c.get_gid() == "diverged" and len(c.get_offsets())]
    assert sorted(tuple(c.get_offsets()[0]) for c in crosses) == [(4096, 0.0), (4096, 0.0)]
    assert {t.get_text() for t in ax.texts} == {"1/3 div.", "1/2 div."}
    fr, pr = claims.build(runs, None)["claims"]
    assert fr["verdict"] == "fails" and fr["reason"] == "1/3 NLCG seeds diverged" and fr["gain_points"] is None
    # rmsprop (0.9 on its surviving seed) is no candidate: the best baseline is momentum, and it is said
    assert pr["baseline"] == "momentum" and pr["baselines_excluded"] == ["rmsprop (1/2 seeds diverged)"]
    assert pr["verdict"] == "holds"
    text = claims.markdown(claims.build(runs, None))
    assert "1/3 seeds diverged" in text and "Excluded baselines: rmsprop (1/2 seeds diverged)" in text


def test_seeds_of_one_configuration_from_different_commits_are_reported():
    runs = pd.DataFrame(_seeds("n", "nlcg-fr", 256, [0.6, 0.61]) + _seeds("m", "momentum", 256, [0.5, 0.52]))
    runs["git_commit"] = ["aaa", "bbb", "ccc", "ccc"]
    doc = claims.build(runs, None)
    (mixed,) = doc["mixed_commits"]
    assert mixed["optimizer"] == "nlcg-fr" and mixed["git_commits"] == ["aaa", "bbb"]
    text = claims.markdown(doc)
    assert "nlcg-fr at batch 256, 3 epochs (config " in text and "commits aaa, bbb" in text


def test_tuned_comparison_chooses_on_validation_and_reports_test():
    runs = pd.DataFrame(
        _seeds("a", "momentum", 4096, [0.72, 0.72], val_top1=0.70)
        + _seeds("b", "momentum", 4096, [0.71, 0.71], cfg={"base_lr": 0.2}, val_top1=0.75)
        + _seeds("n", "nlcg-fr", 4096, [0.600, 0.601], val_top1=0.6))
    doc = claims.build(runs, None)
    assert doc["claims"][0]["baseline_top1_mean"] == 0.72  # main claims: best baseline on test
    (tuned,) = doc["tuned_claims"]
    assert (tuned["chosen_base_lr"], tuned["baseline_chosen_base_lr"]) == (0.1, 0.2)
    assert tuned["baseline_top1_mean"] == 0.71 and tuned["baseline_label"] == "base_lr=0.2"
    assert tuned["baseline_configurations_tried"] == 2 and tuned["verdict"] == "fails"
    # an optimizer's own fields (a sweep's [optimizer_overrides]: here init_lr) are tuning, not a setting
    own = pd.DataFrame(_seeds("r", "rmsprop", 4096, [0.7, 0.7], cfg={"init_lr": 0.01}, val_top1=0.7)
                       + _seeds("s", "rmsprop", 4096, [0.8, 0.8], cfg={"init_lr": 0.01, "base_lr": 0.02},
                                val_top1=0.8) + _seeds("n", "nlcg-fr", 4096, [0.75, 0.76], val_top1=0.75))
    # declared by the sweep file (study.json's tuning_fields), not inferred from the runs that finished
    study = {"claim": None, "tuning_fields": ["base_lr", "init_lr"]}
    (tuned,) = claims.build(own, None, study=study)["tuned_claims"]
    assert tuned["setting"] == "" and tuned["baseline_chosen_base_lr"] == 0.02 and tuned["baseline_top1_mean"] == 0.8
    no_val = claims.build(runs.assign(val_top1=np.nan), None)
    assert no_val["tuned_claims"] == [] and "unfair" in no_val["tuned_note"]
    assert "tuning on the test set would be unfair" in claims.markdown(no_val)


def test_steps_to_target_needs_every_seed_and_draws_perfect_scaling():
    runs = pd.DataFrame(_seeds("a", "momentum", 256, [0.8, 0.8]) + _seeds("b", "momentum", 1024, [0.8, 0.8, 0.8])
                        + _seeds("c", "nlcg-fr", 256, [0.8, 0.8]))
    curves = {"a0": [0.5, 0.7], "a1": [0.7, 0.8], "b0": [0.75, 0.8], "b1": [0.1, 0.2], "b2": [0.75, 0.8],
              "c0": [0.2, 0.7], "c1": [0.1, 0.75]}
    hist = pd.DataFrame([{"run_id": rid, "step": 10 * (k + 1), "top1": t} for rid, c in curves.items()
                         for k, t in enumerate(c)])
    np.testing.assert_array_equal(figures.first_reach(runs, hist, 0.7).to_numpy(), [20, 10, 10, np.nan, 10, 20, 20])
    ax = figures.steps_to_target(runs, hist, target=0.7).axes[0]
    x, y, _ = _bars(_container(ax, "momentum"))
    assert list(x) == [256] and y == pytest.approx([15])  # 1024: 2 of 3 seeds reached, so no point
    assert [t.get_text() for t in ax.texts] == ["2/3"]
    assert list(_container(ax, "nlcg-fr").lines[0].get_ydata()) == [20]
    (perfect,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("perfect scaling")]
    assert np.allclose(perfect.get_data()[1], [15, 15 / 4])  # anchored at the best at 256: momentum's 15
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and "0.7 (given)" in ax.get_title()
    empty = figures.steps_to_target(runs, hist.iloc[:0]).axes[0]
    assert "no evaluations" in empty.texts[0].get_text()


def test_top1_vs_epoch_budget_has_a_panel_per_batch_with_several_budgets():
    runs = pd.DataFrame(_seeds("a", "momentum", 4096, [0.3, 0.4]) + _seeds("b", "momentum", 4096, [0.5, 0.6],
                                                                           cfg={"epochs": 6.0})
                        + _seeds("c", "momentum", 256, [0.8, 0.8]))
    fig = figures.top1_vs_epoch_budget(runs)
    assert [ax.get_title() for ax in fig.axes] == ["global batch 4096"]
    x, y, _ = _bars(_container(fig.axes[0], "momentum"))
    assert list(x) == [3.0, 6.0] and y == pytest.approx([0.35, 0.55])
    assert "no global batch" in figures.top1_vs_epoch_budget(RUNS).axes[0].texts[0].get_text()
    # top1_vs_batch: one panel per budget run at every batch; here only 3 epochs is
    assert [ax.get_title() for ax in figures.top1_vs_batch(runs).axes] == ["Top-1 against global batch, 3 epochs"]


def test_top1_vs_batch_maps_paper_batches_and_says_which_study_it_stands_for():
    ref = pd.read_csv(REFERENCE)
    ref = ref[ref.dataset == "cifar100"]
    fig = figures.top1_vs_batch(RUNS, ref, "cifar100")
    ax = fig.axes[0]
    _, y, _ = _bars(_container(ax, "momentum (ours)"))
    assert np.allclose(y, [0.82, 0.30])  # seeds 0.80 and 0.84 of one configuration
    (paper,) = [ln for ln in ax.get_lines() if ln.get_label() == "nlcg-fr (paper: cifar100 resnet32, 200 ep)"]
    px, py = paper.get_data()
    # same steps per epoch: paper batch 16384 on 50k images <-> 16384 * 60000 / 50000 on Fashion-MNIST
    assert px[-1] == pytest.approx(16384 * 1.2) and py[-1] == 0.56
    assert [t.get_text() for t in ax.get_xticklabels()] == ["256\n(213)", "4096\n(3413)"]
    assert "stands for: CIFAR-100 ResNet-32 (200 epochs) by steps per epoch" in fig.get_suptitle()
    assert "Student t over seeds" in fig.get_suptitle()
    fig = figures.top1_vs_batch(RUNS, ref.iloc[:0], "imagenet")
    assert "stands for: ImageNet ResNet-50" in fig.get_suptitle()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["256\n(5466)", "4096\n(87461)"]


def test_claims_of_the_old_fixture_against_the_papers_table():
    ref = pd.read_csv(REFERENCE)
    ref = ref[ref.dataset == "cifar100"]
    paper = claims.paper_gains(ref)
    assert paper.loc[16384, "nlcg_gain_points"] == pytest.approx(100 * (0.560 - 0.370))
    assert paper.loc[2048, "nlcg_gain_points"] == pytest.approx(100 * (0.639 - 0.649))
    doc = claims.build(RUNS, ref)
    small, large = doc["claims"]
    # 256: nlcg-fr 0.81 vs the best baseline rmsprop 0.83 (momentum 0.82); the paper's 213 -> nearest 256
    assert (small["baseline"], small["gain_points"], small["paper_reference_batch"]) == ("rmsprop", -2.0, 256)
    assert small["paper_gain_points"] == pytest.approx(100 * (0.684 - 0.651))
    # 4096: the diverged rmsprop is no candidate; momentum 0.30 -> +30 points, one seed each: inconclusive
    assert (large["baseline"], large["gain_points"], large["verdict"]) == ("momentum", 30.0, "inconclusive")
    assert large["paper_batch"] == 3413 and large["paper_reference_batch"] == 4096
    text = report.claims(RUNS, ref)
    assert "+30.00 points" in text and "at batch 16384 its NLCG gain over its best baseline is +19.0 points" in text
    assert "7 finished runs (1 diverged)" in text and "does not reach the claim's batch" in text
    assert "evidence about the trend, not a test of the claim" in text


def test_report_cli_writes_every_figure_and_the_claims_and_refuses_an_empty_folder(tmp_path):
    folder = tmp_path / "results" / "toy"
    for _, r in RUNS.iterrows():
        hist = _history(RUNS[RUNS.run_id == r.run_id]).to_dict("records")
        results.append_run(folder, r.to_dict(), hist)
    p = run_cli(["report", str(folder), "--out", str(tmp_path / "figs"), "--reference", str(REFERENCE)])
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "figs" / "toy"
    names = sorted(f.name for f in out.iterdir())
    assert names == sorted([f"{n}.{e}" for n in report.FIGURES for e in ("png", "pdf")] + ["claims.json", "claims.md",
                                                                                             "index.html"])
    assert all(Path(out, n).stat().st_size > 500 for n in names)
    doc = json.loads((out / "claims.json").read_text())
    assert {"claims", "tuned_claims", "interval_method", "paper_claim", "mixed_commits"} <= set(doc)
    assert [e["gain_points"] for e in doc["claims"]] == [-2.0, 30.0]
    assert "+30.00 points" in (out / "claims.md").read_text() and "# Claims: toy" in p.stdout
    empty = run_cli(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "figs")])
    assert empty.returncode == 2 and "nothing: no such results folder" in empty.stderr
    # --against: another sweep's claims at the same batches beside these, a folder without runs said so
    short = tmp_path / "results" / "short"
    for rows in (_seeds("s", "nlcg-fr", 4096, [0.5, 0.52], cfg={"epochs": 1.0}),
                 _seeds("t", "momentum", 4096, [0.3, 0.31], cfg={"epochs": 1.0})):
        for r in rows:
            results.append_run(short, {**r, "sweep": "short"}, _history(pd.DataFrame([r])).to_dict("records"))
    p = run_cli(["report", str(folder), "--out", str(tmp_path / "figs"), "--reference", str(REFERENCE),
                 "--against", str(short), "--against", str(tmp_path / "results" / "none")])
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((out / "claims.json").read_text())
    assert [b["sweep"] for b in doc["against"]] == ["toy", "short", "none"] and "missing" in doc["against"][2]
    assert p.stderr.count("warning: --against") == 1 and "none: no such folder" in p.stderr
    row = [r for r in doc["against"][1]["rows"] if r["what"] == "exploratory"]
    assert [(r["global_batch"], r["epochs"], r["steps"], r["gain_points"]) for r in row] == \
        [(4096, [1.0], [round(60000 / 4096)], pytest.approx(20.5))]
    text = (out / "claims.md").read_text()
    assert f"| short | exploratory | nlcg-fr | 4096 | 1 | {round(60000 / 4096)} | momentum | +20.50" in text
    assert "- none: " in text and "has no finished runs" in text


def test_profiles_expand_and_the_reference_table_is_the_papers():
    from bench import sweep

    assert [len(sweep.load(ROOT / "experiments" / f"{p}.toml").runs) for p in
            ("mini", "mini_28", "mini_tuned", "mini_invariance", "cifar100_resnet32", "imagenet_resnet50")
            ] == [156, 60, 72, 12, 32, 12]
    ref = pd.read_csv(REFERENCE)
    assert len(ref) == 32 and set(ref.optimizer) == {"nlcg-fr", "rmsprop", "momentum", "sgd"}
    assert ref.set_index(["global_batch", "optimizer"]).loc[(256, "nlcg-fr"), "top1"] == 0.684
