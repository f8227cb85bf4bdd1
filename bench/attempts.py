"""A sweep's memory of attempts that did not finish: native crashes counted, failures tried once per job.

A run's claim (bench.leases) is the record that an attempt started. A process that dies natively (SIGSEGV in
a kernel, SIGABRT from glibc, the OOM killer's SIGKILL) writes no row and leaves its claim behind; the next
claimant takes the claim over and records the dead attempt as a ``crashed`` row (``record_dead``): the
signal and the innermost Python frames from the crashed rank's faulthandler report (``FaultLog``), its host
and its job. A run with ``max_crashes`` crashed rows is skipped, with a line saying why and how to retry
(``--max-crashes``); without that bound a run that kills its process would be retried by every invocation
for ever, taking every packed group of the job down each time.

A sweep invocation is one ``job`` (``new_job``: a name shared by all its ranks); every row a run writes
carries it, and a run with a ``failed`` row of this job is not tried again by any group of the job
(``Past.failed_here``): a deterministic failure costs one attempt per invocation, the next one retries it.
A run whose last ``max_failures`` rows in a row are ``failed`` (3; ``--max-failures``, ``[launch]
max_failures``) is skipped like a crashed one, with a line saying how to retry it: a run that fails every
time would otherwise cost an attempt of every invocation for ever.

A claim left behind by an attempt that did store its row (killed between its row and its release, or its
release timed out) is no dead attempt: ``record_dead`` is given the run's rows, read by name, and records
nothing when one of them is that attempt's (the claim's job), whatever a lagging listing showed.

A process stopped from outside (SIGTERM: mpirun ending the job after another rank crashed, a cancelled
cluster job) marks its claim ``interrupted`` (``stop_on_sigterm``): not its run's fault, not counted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import faulthandler
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench import leases, results
from bench.config import RunConfig

MAX_CRASHES = 2  # crashed attempts after which a sweep skips a run (--max-crashes, [launch] max_crashes)
MAX_FAILURES = 3  # failed rows in a row after which a sweep skips a run (--max-failures, [launch] max_failures)


def new_job() -> str:
    """A fresh job name: the start time and a random suffix (a valid file name)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


@dataclass
class Past:
    """What the runs table says about earlier attempts: crashed rows per run_id (and the last one's error),
    the failed rows that end each run's rows (``failed_in_a_row``, and the last one's error), and the
    run_ids that failed or crashed in this job."""

    crashes: dict = field(default_factory=dict)
    last_crash: dict = field(default_factory=dict)
    failed_here: set = field(default_factory=set)
    failed_in_a_row: dict = field(default_factory=dict)
    last_failure: dict = field(default_factory=dict)

    @classmethod
    def of(cls, runs, job: str) -> Past:
        past = cls()
        if "status" not in runs or not len(runs):
            return past
        keys = [k for k in ("started_at", "attempt") if k in runs]
        if keys:  # the order of the attempts, as load_runs gives it (run_rows gives files in listing order)
            runs = runs.sort_values(keys, kind="stable", na_position="last")
        crashed = runs[runs.status == "crashed"]
        past.crashes = crashed.groupby("run_id").size().to_dict()
        if "error" in crashed:
            past.last_crash = crashed.groupby("run_id").error.last().to_dict()
        errors = runs.error if "error" in runs else [""] * len(runs)
        for run_id, status, error in zip(runs.run_id, runs.status, errors, strict=True):
            if status == "failed":
                past.failed_in_a_row[run_id] = past.failed_in_a_row.get(run_id, 0) + 1
                past.last_failure[run_id] = error
            else:
                past.failed_in_a_row.pop(run_id, None)
        if "job" in runs:
            here = runs[(runs.job == job) & runs.status.isin(results.RETRIED)]
            past.failed_here = set(here.run_id)
        return past

    def skip_reason(self, run_id: str, max_crashes: int, max_failures: int = MAX_FAILURES) -> str:
        """Why a sweep skips ``run_id`` now ("" if it does not)."""
        return self._skip(run_id, max_crashes, max_failures)[1]

    def skipped(self, run_id: str, max_crashes: int, max_failures: int = MAX_FAILURES) -> str:
        """"crashed" or "failed" if a sweep skips ``run_id`` now, and for which limit; else ""."""
        return self._skip(run_id, max_crashes, max_failures)[0]

    def _skip(self, run_id: str, max_crashes: int, max_failures: int) -> tuple[str, str]:
        n = self.crashes.get(run_id, 0)
        if n >= max_crashes:
            return "crashed", (f"crashed {n} time(s), the limit (last: {self.last_crash.get(run_id, '?')}); "
                               f"to try it again: --max-crashes {n + 1}")
        n = self.failed_in_a_row.get(run_id, 0)
        if n >= max_failures:
            return "failed", (f"failed {n} time(s) in a row, the limit (last: {self.last_failure.get(run_id, '?')});"
                              f" to try it again: --max-failures {n + 1}")
        return "", ""


def crash_row(cfg: RunConfig, workers: int, previous: dict, text: str) -> dict:
    """The runs-table row of a dead attempt: what the claim and the config say (no measurements)."""
    started = previous.get("claimed_at")
    return {
        **cfg.ids(workers), "sweep": cfg.sweep,  # run_id, config_id, id_version, data_check
        "status": "crashed", "error": text, "optimizer": cfg.optimizer,
        "hparams": json.dumps(cfg.resolved_hparams(), sort_keys=True), "dataset": cfg.dataset,
        "model": cfg.model, "global_batch": cfg.global_batch, "workers": workers, "seed": cfg.seed,
        "base_lr": cfg.base_lr,
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds")
        if isinstance(started, int | float) else "",
        "host": str(previous.get("host", "")), "job": str(previous.get("job", "")),
        **cfg.component_columns(),  # role; each component's origin, reference, version, source hash; plugins
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }


def record_dead(cfg: RunConfig, workers: int, claim: leases.Claim, rows=None) -> tuple[bool, str]:
    """If ``claim`` took over a dead attempt: store a ``crashed`` row when it counts as one; returns
    (counted, what happened). (False, "") when the claim took over nothing.

    ``rows``: the run's rows read by name after claiming (bench.results.run_rows, columns status and job).
    One of the claim's job (not a crashed row, which a later claimant writes) is that attempt's own: it
    stored its row and died, or failed to release, before its claim was removed; nothing is recorded then.
    A run is tried once per job, so a row of that job is that attempt's."""
    if claim.previous is None:
        return False, ""
    job = claim.previous.get("job")
    if rows is not None and isinstance(job, str) and job and "job" in rows and len(rows):
        if ((rows.job == job) & (rows.status != "crashed")).any():
            where = f"{claim.previous.get('host', '?')} (pid {claim.previous.get('pid', '?')})"
            return False, f"on {where} stored its row but left its claim behind (killed, or its release failed)"
    counted, text = leases.dead_attempt(cfg.results_dir, claim.previous)
    if counted:
        results.append_run(cfg.results_dir, crash_row(cfg, workers, claim.previous, text), [])
    return counted, text


class FaultLog:
    """Python's faulthandler writing to this rank's file of the job (``leases.fault_log``) for the life of
    the sweep: a native crash leaves its signal and Python stack there. The file is removed at a normal end
    (then the job's folder, once empty); a crashed process leaves it as evidence for the next claimant."""

    def __init__(self, results_dir: str | Path, job: str, world_rank: int):
        self.path = leases.fault_log(results_dir, job, world_rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w")  # noqa: SIM115 - open for the process's life, closed in close()
        faulthandler.enable(file=self._file, all_threads=True)

    def close(self) -> None:
        faulthandler.enable(file=sys.stderr, all_threads=True)
        self._file.close()
        with contextlib.suppress(OSError):
            if self.path.stat().st_size == 0:
                self.path.unlink()
                self.path.parent.rmdir()  # fails while other ranks' files are there: the last one removes it

    def __enter__(self) -> FaultLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stop_on_sigterm(current_claim) -> None:
    """On SIGTERM, mark the claim ``current_claim()`` returns (if any) interrupted and end the process at once
    (exit 143). Leaving the claim in place keeps the evidence: if a peer of the same group crashed, that is
    what the next claimant records."""

    def handler(signum, frame):
        held = current_claim()
        if held is not None:
            held.mark_interrupted()
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
