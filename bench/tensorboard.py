"""TensorBoard event files of a run attempt: the history table's scalars as they are logged, and the config.

Layout: ``<output_dir>/<sweep>/tensorboard/<run_id>-a<attempt>/`` (the attempt number the runs row will get:
bench.results), written by the chief only, so ``tensorboard --logdir results/<sweep>/tensorboard`` (``make
tensorboard PROFILE=...``) shows every run of a study, one curve per attempt. Each history row becomes scalars at
its optimizer step: a logged step's numbers under ``train/`` (loss, lr, time_s, the noise scale and its norms,
every optimizer diagnostic such as NLCG's alpha and beta), an evaluation's under ``eval/`` (top1, top5,
eval_loss, val_top1), and ``train/images_per_s`` of the steps since the last logged one. The run's config is
the text summary ``config`` at step 0. Non-finite values are written as they are: the events say what the
history says, nothing more.

The writer is ``tf.summary``'s: it buffers, and flushes every ``FLUSH_S`` seconds and on ``close``, so a logged
step costs the host a few microseconds per scalar and the device nothing. ``read`` reads a folder back record
by record (the tests compare it with the history table value by value).
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import tensorflow as tf

DIR = "tensorboard"
FLUSH_S = 10  # tf.summary's flush period: a running job's curves are at most this old
# history columns that are not measurements: the row's keys (bench.train) and the batch sizes of the noise scale
NOT_SCALARS = ("run_id", "attempt", "step", "epoch", "b_small", "b_big")
EVAL_KEYS = ("top1", "top5", "eval_loss", "val_top1")


def directory(results_dir: str | Path, run_id: str, attempt: int) -> Path:
    """Where attempt ``attempt`` of run ``run_id`` writes its events."""
    return Path(results_dir) / DIR / f"{run_id}-a{attempt}"


def scalars(row: dict) -> dict[str, float]:
    """The TensorBoard tags and values of one history row: ``eval/KEY`` for an evaluation's numbers (the row
    holds ``top1``), else ``train/KEY`` for every number of a logged step, ``NOT_SCALARS`` left out."""
    group = "eval" if "top1" in row else "train"
    out = {}
    for key, value in row.items():
        if key in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if group == "eval" and key not in EVAL_KEYS:
            continue  # an evaluation row repeats the train clock (time_s): it belongs to the train curves
        out[f"{group}/{key}"] = float(value)
    return out


def images_per_s(row: dict, last: tuple[int, float] | None, global_batch: int) -> float | None:
    """The throughput of the block of steps a logged step's ``row`` ends: ``global_batch`` x the steps since the
    ``last`` logged step over the training time between them (``time_s``: optimizer steps only, compilation and
    evaluations not counted, as bench.train clocks them); None for the first step of an attempt (its time is
    the compilation's, not counted in ``time_s``)."""
    if last is None or not row["step"] > last[0] or not row["time_s"] > last[1]:
        return None
    return global_batch * (row["step"] - last[0]) / (row["time_s"] - last[1])


class EventLog:
    """One attempt's event folder. ``log(row)`` per history row, in order; ``close()`` at the end (idempotent).
    A logged step's row also gives ``train/images_per_s`` (``images_per_s``)."""

    def __init__(self, folder: str | Path, config: dict, global_batch: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.global_batch = global_batch
        self._last = None  # (step, time_s) of the last logged step
        self._writer = tf.summary.create_file_writer(str(self.folder), flush_millis=FLUSH_S * 1000)
        with self._writer.as_default():
            tf.summary.text("config", "```\n" + json.dumps(config, indent=1, sort_keys=True) + "\n```", step=0)

    def log(self, row: dict) -> None:
        values = scalars(row)
        if "top1" not in row and "time_s" in row:
            rate = images_per_s(row, self._last, self.global_batch)
            if rate is not None:
                values["train/images_per_s"] = rate
            self._last = (row["step"], row["time_s"])
        with self._writer.as_default():
            for tag, value in values.items():
                tf.summary.scalar(tag, value, step=int(row["step"]))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def read(folder: str | Path) -> tuple[dict[str, dict[int, float]], str]:
    """The scalars ({tag: {step: value}}) and the config text of an event folder, from its files: the reader
    the tests compare with the history table (the event protos of each TFRecord)."""
    out, text = {}, ""
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                if value.tag == "config":
                    text = tensor.item().decode() if tensor.shape == () else tensor.ravel()[0].decode()
                    continue
                out.setdefault(value.tag, {})[int(event.step)] = float(tensor)
    return out, text


def same(a: float, b: float) -> bool:
    """Equal as TensorBoard stores them (float32), NaN equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-30) or float(tf.cast(a, tf.float32)) == b
