"""The search's figures (plots.tuning_figures) against independent computations on hand-made runs tables."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from bench import results
from plots import report, tuning
from plots import tuning_figures as tf

CHOOSING, CONFIRM = 0, [1, 2]


def _study(trials: dict) -> dict:
    space = {"base_lr": {"min": 0.01, "max": 1.0, "scaling": "log"}}
    return {"sweep": "toy", "claim": None, "tuning_fields": ["base_lr", "trial"],
            "search": {"sampler": "halton", "seed": 0, "trials": dict(trials), "confirm_seeds": list(CONFIRM),
                       "choosing_seed": CHOOSING, "unequal_budget": False, "metric": "val_top1",
                       "spaces": {o: space for o in trials}}}


def _run(opt, batch, trial, seed, top1, val=math.nan, status=None, epochs=3.0):
    """A runs row of trial ``trial`` at ``seed``; NaN top-1 (and no status given) = diverged."""
    status = status or ("diverged" if math.isnan(top1) else "complete")
    lr = 0.1 + 0.01 * trial
    config = {"optimizer": opt, "global_batch": batch, "epochs": epochs, "steps": 0, "seed": seed, "trial": trial,
              "base_lr": lr, "sweep": "toy", "eval_every_epochs": 1.0, "validation_size": 100}
    return {"run_id": f"{opt}-{batch}-{trial}-s{seed}", "config_id": f"{opt}-{batch}-{trial}", "sweep": "toy",
            "status": status, "optimizer": opt, "global_batch": batch, "top1": top1, "val_top1": val,
            "epochs": epochs, "steps": int(10 * epochs), "dataset": "fashion_mnist", "model": "resnet8",
            "seed": seed, "workers": 2, "base_lr": lr, "target_top1": 0.0, "steps_to_target": np.nan,
            "config": json.dumps(config)}


def _trials(opt, batch, vals):
    """One study's trials at the choosing seed; NaN = a diverged trial."""
    return [_run(opt, batch, k, CHOOSING, math.nan if math.isnan(v) else 0.5, v) for k, v in enumerate(vals)]


# ---- an independent reference: every subset, the largest value, the linear quantile by hand ----------------


def _best_of_every_subset(vals, k):
    out = []
    for c in itertools.combinations(vals, k):
        finite = [v for v in c if not math.isnan(v)]
        out.append(max(finite) if finite else -math.inf)
    return out


def _linear_quantile(xs, p):
    """numpy's "linear" (Hyndman and Fan's 7th) quantile with -inf ranked lowest; NaN where -inf has weight."""
    s = sorted(xs)
    pos = (len(s) - 1) * p
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    if frac == 0:
        v = s[lo]
    else:
        v = -math.inf if s[lo] == -math.inf else s[lo] + frac * (s[lo + 1] - s[lo])
    return math.nan if v == -math.inf else v


VALS = [0.30, 0.50, math.nan, 0.40, 0.45]  # trial 2 diverged
ALL_BAD = [math.nan, math.nan]


def test_tuning_curve_data_equals_every_subset_exactly():
    runs = pd.DataFrame(_trials("momentum", 64, VALS) + _trials("nlcg-fr", 64, ALL_BAD))
    study = _study({"momentum": 5, "nlcg-fr": 2})
    rows = tuning.trials(runs, study)
    assert list(rows.feasible[rows.optimizer == "momentum"]) == [True, True, False, True, True]
    data = tf.tuning_curve_data(rows, subsets=500)
    assert list(data.columns) == ["optimizer", "global_batch", "epochs", "k", "median", "low", "high"]
    for opt, vals in (("momentum", VALS), ("nlcg-fr", ALL_BAD)):
        got = data[data.optimizer == opt].sort_values("k")
        assert list(got.k) == list(range(1, len(vals) + 1))
        for _, r in got.iterrows():
            best = _best_of_every_subset(vals, int(r.k))
            want = [_linear_quantile(best, p) for p in (0.5, 0.025, 0.975)]
            assert [r["median"], r.low, r.high] == pytest.approx(want, nan_ok=True), (opt, r.k)
            finite = np.array(best)[np.isfinite(best)]
            if len(finite) == len(best):  # no infeasible subset: numpy's own quantile agrees
                assert [r["median"], r.low, r.high] == pytest.approx(
                    list(np.quantile(finite, [0.5, 0.025, 0.975], method="linear")))
    one = data[(data.optimizer == "momentum") & (data.k == 1)].iloc[0]
    # k = 1: the five single trials [-inf, .3, .4, .45, .5]: the 2.5 % quantile leans on the diverged one
    assert math.isnan(one.low) and one["median"] == pytest.approx(0.40) and one.high == pytest.approx(0.495)
    full = data[data.k == data.groupby("optimizer").k.transform("max")].set_index("optimizer")
    assert list(full.loc["momentum", ["median", "low", "high"]]) == [0.5, 0.5, 0.5]  # k = n: the study's best
    assert full.loc["nlcg-fr", ["median", "low", "high"]].isna().all()  # every trial infeasible: no value
    assert data[data.optimizer == "nlcg-fr"][["median", "low", "high"]].isna().all().all()


def test_sampled_subsets_are_deterministic_and_within_the_exact_range():
    vals = [0.21, 0.35, 0.10, math.nan, 0.44, 0.30, 0.27, 0.40]
    rows = tuning.trials(pd.DataFrame(_trials("momentum", 128, vals)), _study({"momentum": 8}))
    a = tf.tuning_curve_data(rows, subsets=20, seed=3)
    pd.testing.assert_frame_equal(a, tf.tuning_curve_data(rows, subsets=20, seed=3))
    other = tf.tuning_curve_data(rows, subsets=20, seed=4)
    assert not np.allclose(a[["median", "low", "high"]].fillna(-1), other[["median", "low", "high"]].fillna(-1))
    for _, r in a.iterrows():
        k = int(r.k)
        best = _best_of_every_subset(vals, k)
        finite = [b for b in best if b > -math.inf]
        if math.comb(8, k) <= 20:  # k = 1, 7, 8: every subset, exactly
            want = [_linear_quantile(best, p) for p in (0.5, 0.025, 0.975)]
            assert [r["median"], r.low, r.high] == pytest.approx(want, nan_ok=True)
            continue
        assert min(finite) <= r.low <= r["median"] <= r.high <= max(finite), k
    assert list(a[a.k == 8][["median", "low", "high"]].iloc[0]) == [0.44] * 3
    assert a[a.k >= 2].low.notna().all()  # a pair always holds a feasible trial
    with pytest.raises(ValueError, match="subsets"):
        tf.tuning_curve_data(rows, subsets=0)


# ---- the performance profile ------------------------------------------------------------------------------

# per (optimizer, batch): choosing-seed val_top1 of trials 0 and 1, and the confirmation seeds' test top-1 of
# each trial (the non-chosen trial's confirmations are a trap: better, but never chosen)
CELLS = {("momentum", 64): ([0.6, 0.7], [[0.99, 0.99], [0.80, 0.82]]),
         ("nlcg-fr", 64): ([0.8, 0.7], [[0.85, 0.87], [0.99, 0.99]]),
         ("rmsprop", 64): ([0.5, 0.4], [[0.70, 0.74], [0.99, 0.99]]),
         ("momentum", 128): ([0.5, 0.6], [[0.99, 0.99], [0.60, 0.64]]),
         ("nlcg-fr", 128): ([0.9, 0.1], [[0.90, math.nan], [0.99, 0.99]]),  # a chosen seed diverged
         ("rmsprop", 128): ([0.4, math.nan], [[0.70, 0.72], [0.99, 0.99]])}  # trial 1 diverged: infeasible


def _profile_runs(cells=CELLS):
    rows = []
    for (opt, batch), (vals, confirms) in cells.items():
        rows += _trials(opt, batch, vals)
        for trial, tops in enumerate(confirms):
            rows += [_run(opt, batch, trial, s, t) for s, t in zip(CONFIRM, tops, strict=True)]
    return pd.DataFrame(rows)


STUDY3 = _study({"momentum": 2, "nlcg-fr": 2, "rmsprop": 2})


def test_performance_ratios_against_a_hand_computation():
    ratios = tf.performance_ratios(_profile_runs(), STUDY3)
    got = ratios.set_index(["global_batch", "optimizer"]).sort_index()
    assert list(ratios.columns) == ["global_batch", "epochs", "optimizer", "top1_mean", "ratio"]
    assert set(ratios.epochs) == {3.0} and len(ratios) == 6
    # batch 64: means .81, .86, .72 (errors .19, .14, .28); best nlcg-fr
    # batch 128: momentum .62 (error .38), nlcg-fr a diverged confirmation (inf), rmsprop .71 (error .29)
    want = {(64, "momentum"): (0.81, 0.19 / 0.14), (64, "nlcg-fr"): (0.86, 1.0), (64, "rmsprop"): (0.72, 2.0),
            (128, "momentum"): (0.62, 0.38 / 0.29), (128, "nlcg-fr"): (math.nan, math.inf),
            (128, "rmsprop"): (0.71, 1.0)}
    for key, (mean, ratio) in want.items():
        assert got.loc[key, "top1_mean"] == pytest.approx(mean, nan_ok=True), key
        assert got.loc[key, "ratio"] == pytest.approx(ratio), key

    taus = [1.0, 1.3, 1.35, 1.36, 1.99, 2.01, 4.0]
    prof = tf.performance_profile_data(_profile_runs(), STUDY3, taus=taus)
    rho = {o: list(g.sort_values("tau").rho) for o, g in prof.groupby("optimizer")}
    assert rho["momentum"] == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]  # 1.310 at 128, 1.357 at 64
    assert rho["nlcg-fr"] == [0.5] * 7  # the best at 64; inf at 128
    assert rho["rmsprop"] == [0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0]  # the best at 128; 2.0 at 64
    assert sum(r[0] for r in rho.values()) == 1.0  # tau = 1: each cell counted for its best optimizer
    default = tf.performance_profile_data(_profile_runs(), STUDY3)
    assert len(default) == 3 * 301 and default.tau.min() == 1.0 and default.tau.max() == 4.0


def test_an_optimizer_without_a_chosen_trial_is_never_within_tau():
    cells = {**CELLS, ("rmsprop", 128): ([math.nan, math.nan], [[0.99, 0.99], [0.99, 0.99]])}
    got = tf.performance_ratios(_profile_runs(cells), STUDY3).set_index(["global_batch", "optimizer"])
    assert got.loc[(128, "rmsprop"), "ratio"] == math.inf and math.isnan(got.loc[(128, "rmsprop"), "top1_mean"])
    assert got.loc[(128, "momentum"), "ratio"] == 1.0  # now the cell's best
    # an optimizer of the search with no run at all: inf in every cell
    got = tf.performance_ratios(_profile_runs(), _study({"momentum": 2, "nlcg-fr": 2, "rmsprop": 2, "lars": 2}))
    assert list(got.ratio[got.optimizer == "lars"]) == [math.inf, math.inf]
    assert tf.performance_ratios(_profile_runs(), {"tuning_fields": []}).empty  # a grid: no search


# ---- the figures ------------------------------------------------------------------------------------------


def _folder(tmp_path):
    """The profile's runs written to a results folder and read back (the report's path)."""
    folder = tmp_path / "toy"
    for r in _profile_runs().to_dict("records"):
        results.append_run(folder, r, [{"step": 1, "epoch": 0.1, "loss": 1.0, "time_s": 0.1}])
    return results.load_runs(folder), results.load_history(folder)


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_both_figures_draw_from_a_folder_and_say_so_without_a_search(tmp_path):
    runs, history = _folder(tmp_path)
    assert {"tuning_curve", "performance_profile"} <= set(report.FIGURES)
    fig = report.draw("tuning_curve", runs, history, None, "cifar100", study=STUDY3)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["global batch 64, 3 epochs", "global batch 128, 3 epochs"]
    assert "median and 95 % band over random subsets of the 2 trials" in fig.get_suptitle()
    data = tf.tuning_curve_data(tuning.trials(runs, STUDY3))
    line = next(ln for ln in axes[0].lines if ln.get_label().startswith("nlcg-fr"))
    want = data[(data.optimizer == "nlcg-fr") & (data.global_batch == 64)].sort_values("k")
    assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == pytest.approx(list(want["median"]))
    assert list(want["median"]) == pytest.approx([0.75, 0.8])  # k = 2: the better of 0.8 and 0.7
    assert len(axes[0].collections) == 3  # one band per optimizer

    fig = report.draw("performance_profile", runs, history, None, "cifar100", study=STUDY3)
    (ax,) = fig.axes
    assert ax.get_xlim() == (1.0, 4.0) and ax.get_xlabel() == "tau (top-1 error over the cell's best)"
    assert any("2 cell(s)" in t for t in _texts(fig))
    prof = tf.performance_profile_data(runs, STUDY3)
    for ln in ax.lines:
        rows = prof[prof.optimizer == ln.get_label()]
        assert list(ln.get_ydata()) == list(rows.rho) and list(ln.get_xdata()) == pytest.approx(list(rows.tau))
    assert sorted(ln.get_label() for ln in ax.lines) == ["momentum", "nlcg-fr", "rmsprop"]

    grid = {k: v for k, v in STUDY3.items() if k != "search"}
    for name in tf.FIGURES:
        for study in (grid, None):
            fig = report.draw(name, runs, history, None, "cifar100", study=study)
            assert any(t.startswith("not a search") for t in _texts(fig)), name
        fig.canvas.draw()
