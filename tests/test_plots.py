"""Figures and the claims report against hand-made tables with known answers."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from bench import results
from conftest import ROOT, run_cli
from plots import figures, report

REFERENCE = ROOT / "experiments" / "paper_reference.csv"


def _run(rid, opt, batch, top1, status="complete", seed=0, **kw):
    return {"run_id": rid, "sweep": "toy", "status": status, "optimizer": opt, "global_batch": batch, "top1": top1,
            "epochs": 3.0, "steps": 30, "dataset": "fashion_mnist", "model": "resnet8", "seed": seed, "workers": 2,
            "target_top1": 0.0, "steps_to_target": np.nan, "config": json.dumps({"synthetic_train_size": 1}), **kw}


RUNS = pd.DataFrame([
    _run("a0", "momentum", 256, 0.80), _run("a1", "momentum", 256, 0.84, seed=1),
    _run("b", "nlcg-fr", 256, 0.81), _run("c", "rmsprop", 256, 0.83),
    _run("d", "momentum", 4096, 0.30), _run("e", "nlcg-fr", 4096, 0.60), _run("f", "rmsprop", 4096, 0.0,
                                                                                 status="diverged"),
    _run("g", "rmsprop", 4096, 0.9, status="failed"),  # not a result: never drawn, never counted
])


def _history(runs):
    rows = []
    for rid in runs.run_id:
        rows += [{"run_id": rid, "step": s, "epoch": s / 10, "loss": 2.0 / s, "time_s": 0.1 * s} for s in (1, 2, 3)]
        rows.append({"run_id": rid, "step": 3, "epoch": 0.3, "time_s": 0.3, "top1": 0.5, "loss": np.nan})
    return pd.DataFrame(rows)


def _line(ax, label):
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return line


def test_top1_vs_batch_means_over_seeds_marks_divergence_and_maps_paper_batches():
    ref = pd.read_csv(REFERENCE)
    ref = ref[ref.dataset == "cifar100"]
    ax = figures.top1_vs_batch(RUNS, ref).axes[0]
    mom = ax.containers[[c.get_label() for c in ax.containers].index("momentum (ours)")]
    x, y = mom.lines[0].get_data()
    assert list(x) == [256, 4096] and np.allclose(y, [0.82, 0.30])  # mean of seeds 0.80 and 0.84
    crosses = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert [tuple(c.get_offsets()[0]) for c in crosses] == [(4096, 0.0)]  # the diverged rmsprop run
    paper = _line(ax, "nlcg-fr (paper: cifar100 resnet32, 200 ep)")
    px, py = paper.get_data()
    # same steps per epoch: paper batch 16384 on 50k images <-> 16384 * 60000 / 50000 on Fashion-MNIST
    assert px[-1] == pytest.approx(16384 * 1.2) and py[-1] == 0.56
    assert [t.get_text() for t in ax.get_xticklabels()] == ["256\n(213)", "4096\n(3413)"]


@pytest.mark.parametrize("name", ["loss_vs_epoch", "wall_time", "top1_vs_epochs"])
def test_curve_figures_have_one_panel_per_batch_and_one_line_per_finished_run(name):
    fig = figures.FIGURES[name](RUNS, _history(RUNS))
    assert [ax.get_title() for ax in fig.axes] == ["global batch 256", "global batch 4096"]
    assert len(fig.axes[0].get_lines()) == 4 and len(fig.axes[1].get_lines()) == 3  # the failed run is left out
    x, y = fig.axes[1].get_lines()[0].get_data()
    if name == "top1_vs_epochs":
        assert list(y) == [0.5]
    else:
        assert np.allclose(y, [2.0, 1.0, 2 / 3]) and np.allclose(x, [0.1, 0.2, 0.3])


def test_steps_to_target_reads_the_first_evaluation_reaching_the_target():
    rows = []
    for rid, curve in {"a0": [0.5, 0.7, 0.8], "a1": [0.6, 0.75, 0.8], "b": [0.72, 0.8, 0.81],
                       "c": [0.3, 0.4, 0.5]}.items():
        rows += [{"run_id": rid, "step": 10 * (k + 1), "top1": t} for k, t in enumerate(curve)]
    hist = pd.DataFrame(rows)
    runs = RUNS[RUNS.run_id.isin(["a0", "a1", "b", "c"])]
    np.testing.assert_array_equal(figures.first_reach(runs, hist, 0.7).to_numpy(), [20, 20, 10, np.nan])
    ax = figures.steps_to_target(runs, hist, target=0.7).axes[0]
    heights = sorted(round(p.get_height()) for p in ax.patches)
    # momentum (a0: 20, a1: 20) -> 20, nlcg-fr (b) -> 10, rmsprop (c) never: hatched up to its budget of 30
    assert heights == [10, 20, 30] and ax.get_title() == "Steps to test top-1 >= 0.7 (given)"
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert [round(p.get_height()) for p in hatched] == [30]
    # default target: 90 % of the best final top-1 (0.84 -> 0.75)
    assert "0.75 (90 % of the best final top-1)" in figures.steps_to_target(runs, hist).axes[0].get_title()
    empty = figures.steps_to_target(runs, hist.iloc[:0]).axes[0]
    assert "no evaluations" in empty.texts[0].get_text()


def test_claims_compute_gains_from_the_tables():
    ref = pd.read_csv(REFERENCE)
    ref = ref[ref.dataset == "cifar100"]
    paper = report.gains(ref)
    assert paper.loc[16384, "nlcg_gain_points"] == pytest.approx(100 * (0.560 - 0.370))
    assert paper.loc[2048, "nlcg_gain_points"] == pytest.approx(100 * (0.639 - 0.649))
    text = report.claims(RUNS, ref)
    # ours at 4096: nlcg-fr 0.60 vs best baseline max(momentum 0.30, diverged rmsprop 0) -> +30.0
    assert "NLCG-FR 0.6000 against the best baseline 0.3000: +30.0 points" in text
    # at 256: 0.81 vs max(momentum 0.82, rmsprop 0.83) -> -2.0
    assert "-2.0 points" in text and "at batch 16384 the gain is +19.0 points" in text
    assert "7 finished runs (1 diverged" in text and "does not reach the claim's batch" in text


def test_report_cli_writes_every_figure_and_refuses_an_empty_folder(tmp_path):
    folder = tmp_path / "results" / "toy"
    for _, r in RUNS.iterrows():
        hist = _history(RUNS[RUNS.run_id == r.run_id]).to_dict("records")
        results.append_run(folder, r.to_dict(), hist)
    p = run_cli(["report", str(folder), "--out", str(tmp_path / "figs"), "--reference", str(REFERENCE)])
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "figs" / "toy"
    names = sorted(f.name for f in out.iterdir())
    assert names == sorted([f"{n}.{e}" for n in figures.FIGURES for e in ("png", "pdf")] + ["claims.md"])
    assert all(Path(out, n).stat().st_size > 1000 for n in names)
    assert "+30.0 points" in (out / "claims.md").read_text() and "# Claims: toy" in p.stdout
    empty = run_cli(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "figs")])
    assert empty.returncode == 2 and "no finished runs" in empty.stderr


def test_profiles_expand_and_the_reference_table_is_the_papers():
    from bench import sweep

    assert [len(sweep.load(ROOT / "experiments" / f"{p}.toml").runs) for p in
            ("mini", "cifar100_resnet32", "imagenet_resnet50")] == [8, 32, 12]
    ref = pd.read_csv(REFERENCE)
    assert len(ref) == 32 and set(ref.optimizer) == {"nlcg-fr", "rmsprop", "momentum", "sgd"}
    assert ref.set_index(["global_batch", "optimizer"]).loc[(256, "nlcg-fr"), "top1"] == 0.684
