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
    assert list(runs.run_id) == ["a", "b"] and list(runs.columns[:3]) == ["run_id", "sweep", "status"]
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
