"""The sweep's bookkeeping as its store grows: how long a chief takes to choose its next run (issue 29).

Before each run it claims, a sweep's chief reads the runs table (bench.sweep.claim_next). With N runs
finished in the folder, reading every file again costs O(N) per claim and O(N^2) per sweep; the chief's
``RunsReader`` reads the files published since its last read. ``claim_times`` measures, at each size N, in
one run: the chief's steady-state choice (one new file since its last claim, as in a sweep), its first choice
(every file read: a sweep process starting on a finished folder), and the full re-read the steady state
replaced (``results.load_runs``, what a claim cost before). The folder is written as the trainer writes it
(``results.append_run``: one runs file and one history file per run, rows with the trainer's columns).
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench import attempts, results, sweep
from bench.perf.ratios import entry, side
from bench.provenance import provenance

LABELS = {1000: "claim_ms_1k", 10000: "claim_ms_10k"}


@functools.cache
def _machine() -> dict:
    return provenance()


def stored_row(cfg, status: str = "complete") -> dict:
    """A runs row with the columns a trained run's row has (ids, config, provenance, measured figures)."""
    row = attempts.crash_row(cfg, 1, {"job": "bench-store", "host": "h", "claimed_at": time.time()}, "")
    measured = {c: 0.5 for c in ("final_train_loss", "top1", "top5", "val_top1", "wall_time_s", "train_time_s",
                                 "compile_time_s", "eval_time_s", "images_per_s", "images_per_s_ci95", "peak_lr")}
    return {**row, **_machine(), **measured, "status": status, "error": None, "steps": 10, "epochs": 1.0,
            "per_worker_batch": cfg.per_worker_batch, "accumulation": 1, "image_size": cfg.image_size,
            "steps_to_target": None, "noise_scale": 123.0}


def _publish(folder: Path, cfg) -> None:
    """What ``results.append_run`` publishes for a first attempt (same files, names and bytes), without its
    fsyncs and exclusive links, which make writing 10,000 runs take minutes and change nothing read here."""
    name = f"{cfg.run_id(1)}-a1.parquet"
    history = pd.DataFrame([{"step": 1, "epoch": 0.1, "loss": 2.0, "lr": 0.1, "run_id": cfg.run_id(1), "attempt": 1}])
    row = pd.DataFrame([{**stored_row(cfg), "attempt": 1, "schema_version": results.RUNS_SCHEMA}])
    row = row[[c for c in results.RUN_COLUMNS if c in row] + [c for c in row if c not in results.RUN_COLUMNS]]
    for sub, df in ((results.HISTORY_DIR, history), (results.RUNS_DIR, row)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / name).write_bytes(results._parquet_bytes(df))


def _sweep_file(folder: Path, runs: int) -> Path:
    path = folder / "store.toml"
    path.write_text(f'sweep = "store"\noutput_dir = "{folder / "out"}"\nsteps = 2\nglobal_batch = 64\n'
                    f"[grid]\nseed = [{', '.join(map(str, range(runs)))}]\n")
    return path


def _ms(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1e3


def _claim(s, group) -> None:
    """One choice of the next run, as a sweep's chief makes it; the claim released, the run marked taken."""
    got, held = sweep.claim_next(s, 1, group, say=lambda _: None)
    held.release()
    group.tried.add(got.run_id(1))


def claim_times(sizes=(1000, 10000), steady_rounds: int = 5, say=print) -> dict:
    """{label: entry} for each N in ``sizes``: the claim's milliseconds with N runs finished (see the module)."""
    out = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
            s = sweep.load(_sweep_file(Path(tmp), n + steady_rounds + 2))
            folder = s.runs[0].results_dir
            t0 = time.perf_counter()
            for cfg in s.runs[:n]:
                _publish(folder, cfg)
            written_s = time.perf_counter() - t0
            group = sweep.Group("bench-store", 0, [0])
            results._readers.clear()

            first = _ms(_claim, s, group)
            steady = []
            for cfg in s.runs[n + 1:n + 1 + steady_rounds]:  # as in a sweep: one run finished since the last claim
                results.append_run(folder, stored_row(cfg), [{"step": 1, "epoch": 0.1, "loss": 2.0, "lr": 0.1}])
                steady.append(_ms(_claim, s, group))
            full = [_ms(results.load_runs, folder) for _ in range(2)]
            reader = results.runs_reader(folder, sweep._data_dirs(s))
            label = LABELS.get(n, f"claim_ms_{n}")
            out[label] = entry(
                side(f"the chief's choice of its next run with {n:,} runs finished, one new since its last claim "
                     "(bench.sweep.claim_next)", "ms", steady, files_read_per_claim=reader.files_read,
                     first_claim_ms=first, finished_runs=n, store_written_s=written_s),
                side("the full read each claim made before (results.load_runs of the folder)", "ms", full),
                target=None, note="the numerator is the figure (ms); the ratio is what the incremental read saves")
            say(f"  claim with {n:,} finished runs: {statistics.mean(steady):.1f} ms (first {first:.0f} ms, "
                f"full read {statistics.mean(full):.0f} ms)")
    return out
