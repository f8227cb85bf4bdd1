"""Checkpoints of a run in progress: a long run that is killed or fails resumes where it stopped.

Layout: ``<output_dir>/<sweep>/checkpoints/<run_id>/``, written by the chief only:
  ``ckpt-<step>.*``            model weights + BN statistics, optimizer state (NLCG's buffers, alpha, ...),
                               the evaluation EMA of the weights (tf.train.Checkpoint, two kept)
  ``history-<step>.parquet``   the history rows logged so far
  ``progress.json``            the step, the checkpoint and history files of that step, the clock and the
                               run-row values so far; written last, by an atomic rename, so it always
                               names files that exist (the previous checkpoint is kept until the next save)
  ``local-<rank>-<step>.npz``  each rank's own BatchNorm statistics (per worker, not synchronised: docs/nlcg.md
                               s4), written by every rank
A checkpoint commits as one unit across ranks: every rank writes its BN file of the step, all ranks agree
that they did (a collective), then the chief writes the weights and history and publishes progress.json,
all ranks agree again, and only then are the files of older steps removed. A crash (or an error on any
rank, which fails every rank's next collective) at any point leaves progress.json naming the previous
step, whose files all still exist: a resumed run always starts from one consistent step.
Resuming restores on the chief and broadcasts to every rank, then each rank takes back its own BN
statistics (where its file is reachable: without a shared file system a rank keeps the chief's); the data
pipeline skips the steps already taken, so (on in-memory datasets) a resumed run is step for step the
uninterrupted one. The folder is removed once the run's rows are written as complete or diverged; a
failed run keeps it for its retry.

A checkpoint that cannot be restored (written by another version of this format, torn by a full disk, files
missing, objects that do not match the run's) would fail its run at every invocation for ever, so it is set
aside instead: the folder is renamed ``<run_id>.unusable-<time>`` (kept for inspection, never deleted) and
the run starts over from step 0, once, with one line saying so. A restore that failed half-way may have
assigned some variables already, so every rank snapshots its freshly built values before restoring and puts
them back: the run that starts over is the fresh run, bit for bit. Every rank reports whether its part (the
chief's files, each rank's BN file) restored, and all decide together (one collective), so no rank resumes
while another starts over.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from bench import atomic, faults, log

_log = log.get("bench.checkpoint")

PROGRESS = "progress.json"
# progress.json's layout, recorded in it as "format": a checkpoint of another format is set aside, not read.
# Checkpoints written before the format was recorded have format 1's layout.
FORMAT = 1
UNUSABLE = ".unusable-"  # <run_id>.unusable-<time>: a checkpoint set aside (restore() says why)


def directory(results_dir: str | Path, run_id: str) -> Path:
    """Where run ``run_id`` of a results folder keeps its checkpoint."""
    return Path(results_dir) / "checkpoints" / run_id


class RunCheckpoint:
    """Save and restore one run's state; every method is called on every rank."""

    def __init__(self, directory: str | Path, world, model, optimizer, extra_variables=()):
        self.directory = Path(directory)
        self.world = world
        self.model, self.optimizer = model, optimizer
        self.extra = list(extra_variables)
        self.state = tf.train.Checkpoint(model=model, optimizer=optimizer, extra=self.extra)
        self.manager = tf.train.CheckpointManager(self.state, str(self.directory), max_to_keep=2)
        self.token = uuid.uuid4().hex[:12]  # in temp names: two owners of one run never share a temp file

    def restore(self, say=_log.warning) -> tuple[int, dict, list[dict]]:
        """(step to resume after, saved progress, saved history rows); (0, {}, []) when there is none, or when
        the checkpoint cannot be restored: then it is set aside (``set_aside``) and ``say`` gets one line."""
        step, progress, history, fresh, error = 0, {}, [], None, None
        if self.world.is_chief and (self.directory / PROGRESS).exists():
            fresh = self._values()
            try:
                step, progress, history = self._read()
            except Exception as e:  # noqa: BLE001 - any error: unreadable, torn, other format, mismatched
                error, step, progress, history = e, 0, {}, []
                self._put_back(fresh)
        if self.world.size > 1:
            import horovod.tensorflow as hvd

            from bench import distributed

            step = int(hvd.broadcast(tf.constant(step, tf.int64), root_rank=0, name="resume_step"))
            if step:
                if fresh is None:  # a peer's own values, before the chief's overwrite them
                    fresh = self._values()
                distributed.broadcast_state(self.model, self.optimizer, extra=self.extra)
                mine, local = None, self.directory / f"local-{self.world.rank}-{step}.npz"
                try:
                    if local.exists():  # without a shared file system a rank keeps the chief's statistics
                        with np.load(local) as f:
                            for i, v in enumerate(self.model.non_trainable_variables):
                                v.assign(f[f"v{i}"])
                except Exception as e:  # noqa: BLE001 - every rank must reach the collective below
                    mine = e
                    _log.warning(f"rank {self.world.rank}: cannot restore its BN statistics of run "
                                 f"{self.directory.name} from {local}: {distributed.describe(e)}")
                flags = np.zeros(self.world.size, np.int32)
                flags[self.world.rank] = mine is not None
                bad = hvd.allreduce(tf.constant(flags), op=hvd.Sum, name="resume_restored").numpy()
                if bad.any():  # every rank starts over, from its own fresh values (equal: broadcast at build)
                    self._put_back(fresh)
                    if self.world.is_chief:
                        ranks = ", ".join(str(r) for r in np.flatnonzero(bad))
                        error = mine if mine is not None and bad.sum() == 1 else RuntimeError(
                            f"rank(s) {ranks} could not read their BN statistics local-<rank>-{step}.npz")
                    step, progress, history = 0, {}, []
        if error is not None and self.world.is_chief:
            from bench import distributed

            moved = self.set_aside()
            say(f"run {self.directory.name}: its checkpoint cannot be restored ({distributed.describe(error)}); "
                f"moved to {moved}; starting over from step 0")
        return step, progress, history

    def _read(self) -> tuple[int, dict, list[dict]]:
        """The chief's restore: progress.json checked, the state, the history; raises on anything amiss."""
        progress = json.loads((self.directory / PROGRESS).read_text())
        if not isinstance(progress, dict):
            raise ValueError(f"{PROGRESS} holds {type(progress).__name__}, not an object")
        version = progress.get("format", 1)
        if version != FORMAT:
            raise ValueError(f"{PROGRESS} has format {version!r}; this version reads format {FORMAT}")
        step = progress.get("step")
        if type(step) is not int or step < 1 or not isinstance(progress.get("checkpoint"), str) \
                or not isinstance(progress.get("history"), str) or not isinstance(progress.get("row"), dict) \
                or not isinstance(progress.get("blocks"), list):
            raise ValueError(f"{PROGRESS} lacks step, checkpoint, history, row or blocks")
        self.state.restore(str(self.directory / progress["checkpoint"])).assert_existing_objects_matched()
        history = pd.read_parquet(self.directory / progress["history"]).to_dict("records")
        return step, progress, history

    def _variables(self) -> list:
        # what tf.train.Checkpoint(model, optimizer, extra) tracks (and its save counter, which nothing reads)
        return [*self.model.variables, *self.optimizer.variables, *self.extra]

    def _values(self) -> list:
        return [np.array(v.numpy()) for v in self._variables()]  # copies: a restore may overwrite the buffers

    def _put_back(self, values: list) -> None:
        for v, value in zip(self._variables(), values, strict=True):
            v.assign(value)

    def set_aside(self) -> Path:
        """Rename this run's checkpoint folder ``<run_id>.unusable-<time>`` (kept, never deleted); the path.
        The next save starts a new folder."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.directory.with_name(f"{self.directory.name}{UNUSABLE}{stamp}")
        if target.exists():
            target = target.with_name(f"{target.name}-{self.token}")
        os.rename(self.directory, target)
        self.manager = tf.train.CheckpointManager(self.state, str(self.directory), max_to_keep=2)
        return target

    def save(self, step: int, progress: dict, history: list[dict]) -> None:
        """Checkpoint after ``step`` as one unit: BN files on every rank, agree, the chief writes and
        publishes, agree, then older files go."""
        local = self.directory / f"local-{self.world.rank}-{step}.npz"
        if self.world.size > 1:
            self.directory.mkdir(parents=True, exist_ok=True)
            values = {f"v{i}": v.numpy() for i, v in enumerate(self.model.non_trainable_variables)}
            atomic.replace(local, lambda f: np.savez(f, **values), self.token)
            faults.point("checkpoint", self.world.rank, step=step)
            self._barrier(f"ckpt_written_{step}")
        hist_name = f"history-{step}.parquet"
        if self.world.is_chief:
            path = Path(self.manager.save(checkpoint_number=step))
            atomic.replace(self.directory / hist_name,
                                lambda f: pd.DataFrame(history).to_parquet(f, index=False), self.token)
            record = {**progress, "format": FORMAT, "step": step, "checkpoint": path.name, "history": hist_name}
            atomic.replace(self.directory / PROGRESS, lambda f: f.write(json.dumps(record).encode()), self.token)
        if self.world.size > 1:
            self._barrier(f"ckpt_published_{step}")  # every rank knows progress.json names this step
        stale = [p for p in self.directory.glob(f"local-{self.world.rank}-*.npz") if p != local]
        if self.world.is_chief:
            stale += [p for p in self.directory.glob("history-*.parquet") if p.name != hist_name]
        for old in stale:
            old.unlink(missing_ok=True)

    def _barrier(self, name: str) -> None:
        import horovod.tensorflow as hvd

        # Horovod: a collective every rank must reach; an error on any rank fails it everywhere.
        hvd.allreduce(tf.constant(1.0), op=hvd.Sum, name=name)
