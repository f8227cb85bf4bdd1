"""One training run: data + model + optimizer, the compiled train step, evaluation, result rows.

config -> build -> loop -> record. Every rank runs this; only the chief shows progress and writes.
The global batch of a step is workers x micro_batch x accumulation examples; the gradient handed to
the optimizer is their exact mean (mean over micro-batches, then a Horovod average over workers),
and the loss handed with it is the global mean loss of the same examples (NLCG uses it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import shutil
import socket
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import optimizers
from bench import checkpoint, data, distributed, models, results, schedule
from bench.config import RunConfig
from bench.distributed import World

WARMUP_STEPS_EXCLUDED = 3  # the first steps compile the graph: kept out of images/s


def budget_steps(cfg: RunConfig, train_size: int) -> int:
    """The run's length in optimizer steps: ``steps`` if set, else ``epochs`` of the training set."""
    return cfg.steps if cfg.steps > 0 else max(1, math.ceil(cfg.epochs * train_size / cfg.global_batch))


def cross_entropy(labels, logits, num_classes: int, label_smoothing: float = 0.0):
    """Mean softmax cross-entropy; labels int [batch], logits [batch, num_classes]."""
    onehot = tf.one_hot(labels, num_classes)
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / num_classes
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))


def make_train_step(model, optimizer, lr_schedule, cfg: RunConfig, world: World, accumulation: int,
                    num_classes: int, after_step=None):
    """A tf.function(iterator) -> (loss, lr, diagnostics) that runs one optimizer step.

    It pulls ``accumulation`` micro-batches from the iterator, averages their gradients of
    (cross-entropy + L2), averages again over the workers, and applies the optimizer once; then
    ``after_step(step)`` (the weight EMA's update) if given.
    """
    variables = model.trainable_variables
    decayed = models.decayed_weights(model)

    def micro_step(iterator):
        images, labels = next(iterator)
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = cross_entropy(labels, logits, num_classes, cfg.label_smoothing)
            if cfg.weight_decay:
                loss += 0.5 * cfg.weight_decay * tf.add_n([tf.reduce_sum(tf.square(w)) for w in decayed])
        return loss, tape.gradient(loss, variables)

    @tf.function
    def train_step(iterator):
        loss, grads = micro_step(iterator)
        if accumulation > 1:  # Python int: the graph has a loop only when it needs one
            for _ in tf.range(accumulation - 1):
                tf.autograph.experimental.set_loop_options(
                    shape_invariants=[(g, tf.TensorShape(g.shape)) for g in grads])
                micro_loss, micro_grads = micro_step(iterator)
                loss += micro_loss
                grads = [g + mg for g, mg in zip(grads, micro_grads, strict=True)]
            loss /= accumulation
            grads = [g / accumulation for g in grads]
        grads, loss = distributed.mean_over_workers(grads, loss, world)
        lr = lr_schedule(optimizer.iterations)
        optimizer.apply(grads, variables, loss=loss)
        if after_step is not None:
            after_step(optimizer.iterations)
        return loss, lr, optimizer.diagnostics()

    return train_step


def make_weight_ema(variables, decay: float):
    """Shadow copies of ``variables`` and an ``update(step)`` that moves them towards the variables.

    decay_t = min(decay, (1 + t) / (10 + t)), as TF1's ExponentialMovingAverage with num_updates, which
    the authors' CIFAR code evaluates with; without the warm-up a 0.9999 average of a short run would
    still be mostly the initial weights.
    """
    shadow = [tf.Variable(v.value, trainable=False) for v in variables]

    def update(step):
        t = tf.cast(step, tf.float32)
        d = tf.minimum(decay, (1.0 + t) / (10.0 + t))
        for s, v in zip(shadow, variables, strict=True):
            s.assign(d * s + (1.0 - d) * v)

    return shadow, update


@contextlib.contextmanager
def swapped_in(variables, values):
    """Temporarily give ``variables`` the ``values`` (the EMA weights for an evaluation)."""
    backup = [tf.identity(v.value) for v in variables]
    for v, x in zip(variables, values, strict=True):
        v.assign(x)
    try:
        yield
    finally:
        for v, x in zip(variables, backup, strict=True):
            v.assign(x)


def make_eval_step(model, num_classes: int):
    """A tf.function(images, labels) -> [correct top-1, correct top-5, summed loss, count]."""
    k5 = min(5, num_classes)

    @tf.function(reduce_retracing=True)
    def eval_step(images, labels):
        logits = model(images, training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        top1 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32))
        top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k5), tf.float32))
        return tf.stack([top1, top5, tf.reduce_sum(losses), tf.cast(tf.size(labels), tf.float32)])

    return eval_step


def evaluate(eval_step, dataset, world: World) -> dict:
    """Top-1, top-5 and mean loss over the whole test split (each rank its shard, summed)."""
    totals = tf.zeros(4)
    for images, labels in dataset:
        totals += eval_step(images, labels)
    top1, top5, loss_sum, n = distributed.sum_over_workers(totals, world, "eval").numpy().tolist()
    return {"top1": top1 / n, "top5": top5 / n, "eval_loss": loss_sum / n}


def provenance() -> dict:
    """Where and with what a run ran: host, library versions, git commit."""
    import horovod

    def first_line(cmd, cwd=None):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=cwd)
            return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""

    repo = Path(__file__).resolve().parent.parent
    commit = first_line(["git", "rev-parse", "HEAD"], cwd=repo)
    dirty = first_line(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return {
        "host": socket.gethostname(),
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "horovod_version": horovod.__version__,
        "mpi_version": first_line(["mpirun", "--version"]),
        "git_commit": (commit + "-dirty" if dirty else commit) or "unknown",
    }


def _scalar(x) -> float:
    return float(np.asarray(x))


def run(cfg: RunConfig, world: World | None = None) -> dict:
    """Train one run; the chief appends its rows to ``cfg.results_dir``. Returns the runs row.

    Config and data problems raise ConfigError before anything is written. A non-finite global loss
    ends the run as ``diverged`` (every rank sees the same allreduced loss, so all stop together);
    an exception while training ends it as ``failed`` and is re-raised after the row is written.
    """
    world = world or distributed.init()
    data.check(cfg)
    info = data.info(cfg)
    micro, accumulation = distributed.split_batch(cfg.global_batch, world.size, cfg.per_worker_batch)
    steps = budget_steps(cfg, info.train_size)
    steps_per_epoch = info.train_size / cfg.global_batch
    eval_every = max(1, round(cfg.eval_every_epochs * steps_per_epoch)) if cfg.eval_every_epochs else 0
    run_id = cfg.run_id(world.size)
    resolved_hparams = {**optimizers.REGISTRY[cfg.optimizer][1], **cfg.hparams}  # the defaults, written out

    row = {
        "run_id": run_id, "sweep": cfg.sweep, "status": "failed", "error": "",
        "optimizer": cfg.optimizer, "hparams": json.dumps(resolved_hparams, sort_keys=True),
        "dataset": cfg.dataset, "model": cfg.model, "global_batch": cfg.global_batch,
        "workers": world.size, "per_worker_batch": micro, "accumulation": accumulation,
        "epochs": steps / steps_per_epoch, "steps": 0, "resumed_from_step": 0, "seed": cfg.seed,
        "peak_lr": schedule.peak_lr(cfg.base_lr, cfg.global_batch, cfg.reference_batch),
        "final_train_loss": math.nan, "top1": math.nan, "top5": math.nan, "wall_time_s": math.nan,
        "images_per_s": math.nan, "images_per_s_ci95": math.nan, "target_top1": cfg.target_top1,
        "steps_to_target": math.nan, "time_to_target_s": math.nan,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(provenance() if world.is_chief else {}),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }
    history: list[dict] = []
    try:
        _train(cfg, world, info, micro, accumulation, steps, eval_every, row, history)
    except Exception as e:
        row["status"], row["error"] = "failed", f"{type(e).__name__}: {e}"[:2000]
        if world.is_chief:
            results.append_run(cfg.results_dir, row, history)
        raise
    if world.is_chief:
        results.append_run(cfg.results_dir, row, history)
        # a finished run needs its checkpoint no more (a failed one keeps it: its retry resumes from it)
        shutil.rmtree(checkpoint.directory(cfg.results_dir, run_id), ignore_errors=True)
    return row


def _train(cfg, world, info, micro, accumulation, steps, eval_every, row, history) -> None:
    """The loop; fills ``row`` and ``history`` in place (so a failure keeps what was measured)."""
    keras.utils.set_random_seed(cfg.seed)
    model = models.build(cfg.model, info.image_shape, info.num_classes, cfg.width, cfg.bn_momentum)
    lr_schedule = schedule.from_config(cfg, steps)
    optimizer = optimizers.get(cfg.optimizer, lr_schedule, **cfg.hparams)
    optimizer.build(model.trainable_variables)
    if world.size > 1:
        distributed.broadcast_state(model, optimizer)

    eval_ds = data.eval_dataset(cfg, workers=world.size, rank=world.rank, batch=cfg.eval_batch)
    ema_weights, ema_update = (make_weight_ema(model.trainable_variables, cfg.ema_decay) if cfg.eval_ema
                               else ([], None))
    train_step = make_train_step(model, optimizer, lr_schedule, cfg, world, accumulation, info.num_classes,
                                 after_step=ema_update)
    eval_step = make_eval_step(model, info.num_classes)
    weights_for_eval = (lambda: swapped_in(model.trainable_variables, ema_weights)) if cfg.eval_ema else (
        contextlib.nullcontext)
    epoch_of = lambda step: step * cfg.global_batch / info.train_size

    step_times: list[float] = []
    train_time = 0.0
    last_eval = None
    start = 0
    ckpt, ckpt_every = None, 0
    if cfg.checkpoint_every_epochs:
        ckpt_every = max(1, round(cfg.checkpoint_every_epochs * info.train_size / cfg.global_batch))
        ckpt = checkpoint.RunCheckpoint(checkpoint.directory(cfg.results_dir, row["run_id"]), world, model,
                                        optimizer, ema_weights)
        start, progress, saved_history = ckpt.restore()  # progress and history: on the chief only
        row["resumed_from_step"] = start
        if progress:
            history[:] = saved_history
            step_times, train_time = list(progress["step_times"]), float(progress["train_time"])
            row.update(progress["row"])
    train_iter = iter(data.train_dataset(cfg, workers=world.size, rank=world.rank, micro_batch=micro,
                                         accumulation=accumulation, start_step=start))
    bar = tqdm(total=steps, initial=start, disable=not world.is_chief, unit="step", dynamic_ncols=True,
               desc=f"{cfg.optimizer} B={cfg.global_batch}")
    say = bar.write if world.is_chief else (lambda _: None)  # tqdm.write prints even when disabled
    if start:
        say(f"resumed from the checkpoint of step {start}")
    for step in range(start + 1, steps + 1):
        t0 = time.perf_counter()
        loss, lr, diag = train_step(train_iter)
        loss = _scalar(loss)  # also waits for the step: the clock reads finished work
        dt_s = time.perf_counter() - t0
        train_time += dt_s
        if step > start + WARMUP_STEPS_EXCLUDED:  # the first steps (of a resumed run too) compile
            step_times.append(dt_s)
        row.update(steps=step, final_train_loss=loss, wall_time_s=train_time)

        if step % cfg.log_every_steps == 0 or step == steps or not math.isfinite(loss):
            history.append({"run_id": row["run_id"], "step": step, "epoch": epoch_of(step), "loss": loss,
                            "lr": _scalar(lr), "time_s": train_time,
                            **{k: _scalar(v) for k, v in diag.items()}})
        if not math.isfinite(loss):
            row["status"] = "diverged"
            say(f"step {step}: loss is {loss}; the run diverged")
            break
        ips = cfg.global_batch / dt_s
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{_scalar(lr):.4g}", img_s=f"{ips:,.0f}", refresh=False)
        bar.update(1)

        if (eval_every and step % eval_every == 0) or step == steps:
            with weights_for_eval():
                last_eval = evaluate(eval_step, eval_ds, world)
            history.append({"run_id": row["run_id"], "step": step, "epoch": epoch_of(step),
                            "time_s": train_time, **last_eval})
            row.update(top1=last_eval["top1"], top5=last_eval["top5"])
            if cfg.target_top1 and math.isnan(row["steps_to_target"]) and last_eval["top1"] >= cfg.target_top1:
                row.update(steps_to_target=step, time_to_target_s=train_time)
            say(f"step {step} (epoch {epoch_of(step):.2f}): loss {loss:.4f}  "
                      f"top1 {last_eval['top1']:.4f}  top5 {last_eval['top5']:.4f}")
        if ckpt_every and step % ckpt_every == 0 and step < steps:
            kept = ("steps", "final_train_loss", "wall_time_s", "top1", "top5", "steps_to_target", "time_to_target_s")
            ckpt.save(step, {"step_times": step_times, "train_time": train_time,
                             "row": {k: row[k] for k in kept}}, history)
    bar.close()

    if step_times:
        ips = cfg.global_batch / np.asarray(step_times)
        row.update(images_per_s=float(ips.mean()),
                   images_per_s_ci95=float(1.96 * ips.std(ddof=1)) if len(ips) > 1 else math.nan)
    if row["status"] != "diverged":
        row["status"] = "complete"
