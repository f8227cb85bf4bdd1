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
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from bench import atomic, faults

PROGRESS = "progress.json"


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

    def restore(self) -> tuple[int, dict, list[dict]]:
        """(step to resume after, saved progress, saved history rows); (0, {}, []) when there is none."""
        step, progress, history = 0, {}, []
        if self.world.is_chief and (self.directory / PROGRESS).exists():
            progress = json.loads((self.directory / PROGRESS).read_text())
            self.state.restore(str(self.directory / progress["checkpoint"])).assert_existing_objects_matched()
            history = pd.read_parquet(self.directory / progress["history"]).to_dict("records")
            step = int(progress["step"])
        if self.world.size > 1:
            import horovod.tensorflow as hvd

            from bench import distributed

            step = int(hvd.broadcast(tf.constant(step, tf.int64), root_rank=0, name="resume_step"))
            if step:
                distributed.broadcast_state(self.model, self.optimizer, extra=self.extra)
                local = self.directory / f"local-{self.world.rank}-{step}.npz"
                if local.exists():
                    with np.load(local) as f:
                        for i, v in enumerate(self.model.non_trainable_variables):
                            v.assign(f[f"v{i}"])
        return step, progress, history

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
            record = {**progress, "step": step, "checkpoint": path.name, "history": hist_name}
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
