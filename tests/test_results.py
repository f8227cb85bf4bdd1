import os

import pandas as pd
import pytest

from bench import results


def row(run_id, status="complete", **kw):
    return {"run_id": run_id, "sweep": "s", "status": status, "top1": 0.5, **kw}


def test_append_and_load(tmp_path):
    results.append_run(tmp_path, row("a"), [{"run_id": "a", "step": 1, "loss": 2.0}])
    results.append_run(tmp_path, row("b", "diverged"), [{"run_id": "b", "step": 1, "loss": float("nan")}])
    runs = results.load_runs(tmp_path)
    assert list(runs.run_id) == ["a", "b"] and list(runs.columns[:4]) == ["run_id", "attempt", "sweep", "status"]
    assert len(results.load_history(tmp_path, "b")) == 1
    assert results.completed_ids(tmp_path) == {"a", "b"}


def test_failed_runs_are_not_completed_and_bad_status_rejected(tmp_path):
    results.append_run(tmp_path, row("a", "failed", error="boom"), [])
    assert results.completed_ids(tmp_path) == set()
    with pytest.raises(ValueError, match="complete"):
        results.append_run(tmp_path, row("x", "done"), [])


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    results.append_run(tmp_path, row("a"), [])
    before = (tmp_path / "runs.parquet").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError):
        results.append_run(tmp_path, row("b"), [])
    assert (tmp_path / "runs.parquet").read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_empty_store_has_schema(tmp_path):
    assert "top1" in results.load_runs(tmp_path).columns and results.load_history(tmp_path).empty


def test_a_retried_run_is_a_new_attempt_and_history_shows_the_latest(tmp_path):
    results.append_run(tmp_path, row("a", "failed", error="node lost"), [{"run_id": "a", "step": s, "loss": 9.0}
                                                                          for s in (1, 2, 3)])
    results.append_run(tmp_path, row("b"), [{"run_id": "b", "step": 1, "loss": 1.0}])
    results.append_run(tmp_path, row("a"), [{"run_id": "a", "step": s, "loss": 1.0} for s in (1, 2)])
    runs = results.load_runs(tmp_path)
    assert list(zip(runs.run_id, runs.attempt, runs.status, strict=True)) == [
        ("a", 1, "failed"), ("b", 1, "complete"), ("a", 2, "complete")]
    latest = results.load_history(tmp_path, "a")
    assert list(latest.step) == [1, 2] and (latest.loss == 1.0).all() and (latest.attempt == 2).all()
    assert len(results.load_history(tmp_path, "a", all_attempts=True)) == 5  # nothing is deleted
    assert sorted(results.load_history(tmp_path).run_id) == ["a", "a", "b"]


def test_history_written_before_attempts_existed_still_loads(tmp_path):
    pd.DataFrame([{"run_id": "old", "step": 1, "loss": 1.0}]).to_parquet(tmp_path / "history.parquet")
    results.append_run(tmp_path, row("new"), [{"run_id": "new", "step": 1, "loss": 2.0}])
    assert sorted(results.load_history(tmp_path).run_id) == ["new", "old"]
