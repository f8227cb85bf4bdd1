"""The sweep's incremental read of its store (bench.results.RunsReader) against the full read it replaces.

Reference: ``results.load_runs`` (and the column-limited ``results._runs``), which read every file again. The
reader must give exactly their frame whatever happens to the folder (files added by this process or another,
rewritten, removed, unreadable, of a newer schema, of the first identity rule), and read only the files that
are new when nothing else happened.
"""

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
from test_config import write_fashion_files
from test_results import first_rule_row

from bench import config, results, sweep
from conftest import ROOT


def realistic(cfg, workers=1, status="complete", started="2026-12-01T00:00:00+00:00", **kw) -> dict:
    """A runs row with the trainer's kinds of columns: ids, config JSON, strings, floats, nullable ints."""
    return {**cfg.ids(workers), "sweep": cfg.sweep, "status": status, "optimizer": cfg.optimizer,
            "hparams": json.dumps(cfg.resolved_hparams(), sort_keys=True), "dataset": cfg.dataset,
            "workers": workers, "global_batch": cfg.global_batch, "seed": cfg.seed, "started_at": started,
            "top1": 0.5 + cfg.seed / 1000, "error": "boom" if status == "failed" else None,
            "steps_to_target": None if cfg.seed % 3 else 40 + cfg.seed, "id_version": config.ID_VERSION,
            "config": json.dumps(cfg.to_dict(), sort_keys=True), **kw}


def configs(data_dir, n, start=0, **kw):
    return [config.make({"dataset": "fashion_mnist", "data_dir": str(data_dir), "seed": s, "steps": 2, **kw})
            for s in range(start, start + n)]


def same(reader, folder, data_dirs=None, columns=None):
    """reader.load() equals the full read, frame for frame (values, dtypes, column order, row order)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the full read names an unreadable file at every call
        full = results.load_runs(folder, data_dirs) if columns is None else results._runs(folder, columns, data_dirs)
    got = reader.load(columns)
    pd.testing.assert_frame_equal(got, full)
    return got


@pytest.fixture
def data(tmp_path):
    write_fashion_files(tmp_path / "fm")
    return tmp_path / "fm"


def test_a_growing_store_is_read_file_by_new_file_and_equals_the_full_read(tmp_path, data):
    folder = tmp_path / "s"
    reader = results.RunsReader(folder)
    assert reader.load().empty and list(reader.load().columns) == list(results.load_runs(folder).columns)
    cfgs = configs(data, 12)
    for c in cfgs[:5]:
        results.append_run(folder, realistic(c, status="failed" if c.seed == 2 else "complete",
                                             started=f"2026-12-01T00:00:0{c.seed}+00:00"), [{"step": 1, "loss": 1.0}])
    same(reader, folder)
    assert reader.files_read == 5
    # new columns and types: a column only later files have, an int column null so far, a retried attempt
    results.append_run(folder, realistic(cfgs[5], my_metric=3.0, noise_scale=12.5), [])
    results.append_run(folder, realistic(cfgs[2], started="2026-11-30T00:00:00+00:00"), [])  # sorts first
    got = same(reader, folder)
    assert reader.files_read == 2 and "my_metric" in got and got.my_metric.notna().sum() == 1
    assert got.attempt[got.run_id == cfgs[2].run_id(1)].tolist() == [2, 1]  # by started_at, then attempt
    same(reader, folder)
    assert reader.files_read == 0
    for columns in (["run_id", "status"], ["run_id", "status", "job", "error", "started_at", "attempt"]):
        same(reader, folder, columns=columns)
        assert reader.files_read == 0
    # rows of the first identity rule get today's ids from the file they are read in, as load_runs gives them
    old = configs(data, 2, start=20, eval_batch=500)
    for c in old:
        results.append_run(folder, first_rule_row(c, 1, started_at="2026-12-02T00:00:00+00:00"), [])
    got = same(reader, folder)
    assert reader.files_read == 2 and set(got.legacy_run_id.dropna()) == {first_rule_row(c, 1)["run_id"] for c in old}
    assert {c.run_id(1) for c in configs(data, 2, start=20)} <= set(got.run_id)
    for c in cfgs[6:]:
        results.append_run(folder, realistic(c), [])
        same(reader, folder)
        assert reader.files_read == 1
    assert results.completed_ids(folder) == set(reader.load().query("status == 'complete'").run_id)


def test_a_changed_removed_or_unreadable_file_reads_the_folder_again_and_still_equals(tmp_path, data):
    folder = tmp_path / "s"
    cfgs = configs(data, 6)
    for c in cfgs[:4]:
        results.append_run(folder, realistic(c), [])
    reader = results.RunsReader(folder)
    same(reader, folder)
    runs_dir = folder / results.RUNS_DIR
    victim = runs_dir / f"{cfgs[1].run_id(1)}-a1.parquet"
    # rewritten in place (not what append_run does, but what a user's tool may): another size
    pd.DataFrame([realistic(cfgs[1], status="failed", attempt=1, extra_note="edited")]).to_parquet(victim, index=False)
    got = same(reader, folder)
    assert reader.files_read == 4 and got.status[got.run_id == cfgs[1].run_id(1)].tolist() == ["failed"]
    victim.unlink()
    same(reader, folder)
    assert reader.files_read == 3
    (runs_dir / f"{cfgs[4].run_id(1)}-a1.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.warns(UserWarning, match="skipping unreadable results file"):
        same(reader, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named once, when first read
        reader.load()
    results.append_run(folder, realistic(cfgs[5]), [])
    same(reader, folder)
    assert reader.files_read == 1
    # a legacy single runs.parquet appearing in front of every file: read again, in its place (first)
    pd.DataFrame([{"run_id": "legacy", "sweep": "s", "status": "complete", "top1": 0.1, "attempt": 1}]).to_parquet(
        folder / results.RUNS, index=False)
    got = same(reader, folder)
    assert "legacy" in set(got.run_id)


def test_a_newer_versions_row_is_refused_as_the_full_read_refuses_it(tmp_path, data):
    folder = tmp_path / "s"
    [a, b] = configs(data, 2)
    results.append_run(folder, realistic(a), [])
    reader = results.RunsReader(folder)
    same(reader, folder)
    results.append_run(folder, realistic(b, id_version=config.ID_VERSION + 1), [])
    with pytest.raises(results.NewerVersionError, match=b.run_id(1)):
        results.load_runs(folder)
    with pytest.raises(results.NewerVersionError, match=b.run_id(1)):
        reader.load()


def test_rows_written_by_another_process_meanwhile_are_all_seen(tmp_path, data):
    """A writer process appends while this one reads in a loop: every read is a prefix-consistent state of the
    store (ids a subset of the end's, each equal to a full read of some moment), and the last read equals the
    full read. Repeated at varied moments (the writer sleeps a different amount between files each round)."""
    folder = tmp_path / "s"
    writer = textwrap.dedent(f"""
        import json, sys, time
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
        from test_store_incremental import configs, realistic
        from bench import results
        pause = float(sys.argv[1]); start = int(sys.argv[2])
        for c in configs({str(data)!r}, 15, start=start):
            results.append_run({str(folder)!r}, realistic(c), [])
            time.sleep(pause)
    """)
    reader = results.RunsReader(folder)
    for round_, pause in enumerate((0.0, 0.003, 0.011, 0.02)):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(pause), str(100 * round_)], cwd=ROOT)
        seen = []
        while proc.poll() is None:
            seen.append(set(reader.load().run_id))
        assert proc.wait() == 0
        final = same(reader, folder)
        assert all(s <= set(final.run_id) for s in seen)
        assert all(a <= b for a, b in zip(seen, seen[1:], strict=False))  # reads only grow
        assert len(final) == 15 * (round_ + 1)


def test_the_sweeps_claim_reads_only_the_new_files(tmp_path, data, monkeypatch):
    path = tmp_path / "grid.toml"
    path.write_text(textwrap.dedent(f"""
        sweep = "inc"
        dataset = "fashion_mnist"
        data_dir = "{data}"
        output_dir = "{tmp_path / 'out'}"
        steps = 2
        global_batch = 64
        [grid]
        seed = {list(range(8))}
    """))
    s = sweep.load(path)
    folder = s.runs[0].results_dir
    for c in s.runs[:5]:
        results.append_run(folder, realistic(c), [])
    read = []
    real = results.pq.read_table
    monkeypatch.setattr(results.pq, "read_table", lambda p, *a, **k: read.append(p) or real(p, *a, **k))
    group = sweep.Group("job", 0, [0])
    got, claim = sweep.claim_next(s, 1, group)
    assert got is s.runs[5] and len(read) == 5
    claim.release()
    group.tried.add(got.run_id(1))
    results.append_run(folder, realistic(s.runs[6]), [])
    read.clear()
    got, claim = sweep.claim_next(s, 1, group)
    assert got is s.runs[7] and len(read) == 1  # the one file published since the first claim
    claim.release()


def test_thousands_of_runs_read_incrementally_equal_the_full_read(tmp_path, data):
    """A store of 1,500 run files in the real layout (written as the trainer writes them): the reader's frame
    equals the full read's after the first read and after each of a few more files."""
    folder = tmp_path / "s"
    cfgs = configs(data, 1503)
    rng = np.random.default_rng(0)
    for c in cfgs[:1500]:
        status = rng.choice(["complete", "failed", "diverged"], p=[0.8, 0.1, 0.1])
        results.append_run(folder, realistic(c, status=str(status)), [])
    reader = results.RunsReader(folder)
    same(reader, folder)
    assert reader.files_read == 1500
    for c in cfgs[1500:]:
        results.append_run(folder, realistic(c), [])
        same(reader, folder)
        assert reader.files_read == 1
