"""bench.json's study_overhead, eval_share, recompile_per_run (bench.perf.sequence) and claim_ms_* (bench.perf.store):
the figures against a hand computation, and a real sequence and a real store."""

import math

import pytest

from bench import config
from bench.perf import sequence, store


def _row(batch, opt, compile_s, train_s, eval_s, elapsed_s, evals=3, steps=11):
    return {"global_batch": batch, "optimizer": opt, "seed": 0, "steps": steps, "compile_time_s": compile_s,
            "train_time_s": train_s,
            "eval_time_s": eval_s, "wall_time_s": elapsed_s - 0.1, "elapsed_s": elapsed_s, "evals": evals}


ROWS = [_row(4608, "momentum", 2.0, 1.5, 0.4, 5.0), _row(3072, "nlcg-pr", 3.0, 1.6, 0.5, 6.0),
        _row(4608, "momentum", 0.2, 1.5, 0.3, 2.5), _row(3072, "nlcg-pr", 0.1, 1.6, 0.3, 2.6),
        _row(4608, "momentum", 0.3, 1.4, 0.3, 2.4)]


def test_the_figures_are_the_definitions_computed_by_hand():
    f = sequence.figures(ROWS)
    elapsed = 5.0 + 6.0 + 2.5 + 2.6 + 2.4
    train, evaluation = 1.5 + 1.6 + 1.5 + 1.6 + 1.4, 0.4 + 0.5 + 0.3 + 0.3 + 0.3
    # each run's first step counts as one mean step of its 10 later ones, or as itself when shorter (the 4th)
    first_steps = 0.15 + 0.16 + 0.15 + 0.1 + 0.14
    assert f["study_overhead"] == pytest.approx((elapsed - train - first_steps - evaluation) / elapsed)
    assert f["eval_share"] == pytest.approx(1.8 / elapsed)
    # later runs of a shape (0.2, 0.1, 0.3) over the first of each (2.0, 3.0)
    assert f["recompile_per_run"] == pytest.approx((0.6 / 3) / (5.0 / 2))
    assert f["evals_per_run"] == 3 and f["eval_pass_s"] == pytest.approx(1.8 / 15)
    assert math.isnan(sequence.figures(ROWS[:2])["recompile_per_run"])  # no later run of any shape


def test_the_entries_carry_the_figures_and_the_baseline_beside_them():
    fresh = [dict(r, compile_time_s=2.0, elapsed_s=r["elapsed_s"] + 1.8) for r in ROWS]
    out = sequence.entries(ROWS, fresh)
    mine, theirs = sequence.figures(ROWS), sequence.figures(fresh)
    for key in ("study_overhead", "eval_share", "recompile_per_run"):
        assert out[key]["ratio"] == pytest.approx(mine[key]) and out[key]["without_reuse"] == pytest.approx(theirs[key])
    assert out["recompile_per_run"]["meets_target"] is True  # (0.6 / 3) / (5.0 / 2) = 0.08 <= 0.1
    assert out["study_overhead"]["target"] == 0.10 and out["eval_share"]["meets_target"] is None


def test_the_default_studys_runs_in_sequence_compile_once_per_shape():
    """Two real 1-thread processes training the study's own runs (the quick set: 8 runs of 4 shapes), one
    reusing the step per shape, one not. Deterministic, not a timing bound: a kept step traces nothing, so the
    later runs' first step is one ordinary step (~0.1 s here), against a trace and graph optimisation of 1-3 s."""
    cfg = config.make({"dataset": "fashion_mnist"})
    out = sequence.measure(cfg, quick=True)
    r = out["recompile_per_run"]
    assert r["figures"]["runs"] == 8 and r["figures_without_reuse"]["runs"] == 8
    assert r["ratio"] < 0.3 and r["ratio"] < r["without_reuse"]
    assert 0 < out["study_overhead"]["ratio"] < 1 and 0 < out["eval_share"]["ratio"] < 1
    assert r["figures"]["evals_per_run"] >= 2  # every 0.5 epoch of a 1-epoch budget, the last at its end


def test_the_claim_figure_reads_one_file_per_claim_on_a_real_store():
    out = store.claim_times((60,), steady_rounds=3, say=lambda _: None)
    e = out["claim_ms_60"]
    assert e["numerator"]["files_read_per_claim"] == 1 and e["numerator"]["n"] == 3
    assert e["numerator"]["finished_runs"] == 60 and e["denominator"]["n"] == 2
    assert all(x > 0 for x in e["numerator"]["samples"] + e["denominator"]["samples"])
