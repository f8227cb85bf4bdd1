"""One training run: data + model + optimizer, the compiled train step, evaluation, result rows.

config -> build -> loop -> record. Every rank runs this; only the chief shows progress and writes.
The global batch of a step is workers x micro_batch x accumulation examples; the gradient handed to
the optimizer is their exact mean (mean over micro-batches, then a Horovod average over workers),
and the loss handed with it is the global mean loss of the same examples (NLCG uses it).
"""

from __future__ import annotations

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
from bench import checkpoint, data, distributed, evaluate, faults, models, results, schedule
from bench.config import RunConfig
from bench.distributed import World


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
        faults.point("compile", world.rank)  # Python: runs while the step is traced
        loss, grads = micro_step(iterator)
        if accumulation > 1:  # Python int: the graph has a loop only when it needs one
            for _ in tf.range(accumulation - 1):
                # parallel_iterations=1: one micro-batch's activations alive at a time, the point of
                # accumulating. The default (10) let iterations overlap and peak memory grow with the
                # accumulation count: 1.21x at 384 micro-batches against 2 (bench.json), 1.07x with this.
                tf.autograph.experimental.set_loop_options(
                    parallel_iterations=1, shape_invariants=[(g, tf.TensorShape(g.shape)) for g in grads])
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


class RunFailed(RuntimeError):
    """A run ended by an exception on some rank; the message names the rank(s) and their errors."""


def new_row(cfg: RunConfig, world: World, info, micro: int, accumulation: int, steps: int) -> dict:
    """The runs-table row of a run about to start (status ``failed`` until it ends otherwise)."""
    return {
        "run_id": cfg.run_id(world.size), "config_id": cfg.config_id(world.size), "sweep": cfg.sweep,
        "status": "failed", "error": "", "optimizer": cfg.optimizer,
        "hparams": json.dumps(cfg.resolved_hparams(), sort_keys=True),
        "dataset": cfg.dataset, "model": cfg.model, "image_size": info.image_shape[0], "bn_eval": cfg.bn_eval,
        "global_batch": cfg.global_batch, "workers": world.size, "per_worker_batch": micro,
        "accumulation": accumulation, "epochs": steps * cfg.global_batch / info.train_size, "steps": 0,
        "resumed_from_step": 0, "seed": cfg.seed, "base_lr": cfg.base_lr,
        "peak_lr": schedule.peak_lr(cfg.base_lr, cfg.global_batch, cfg.reference_batch),
        "final_train_loss": math.nan, "top1": math.nan, "top5": math.nan, "val_top1": math.nan,
        "wall_time_s": math.nan, "train_time_s": 0.0, "compile_time_s": 0.0, "eval_time_s": 0.0,
        "images_per_s": math.nan, "images_per_s_ci95": math.nan, "target_top1": cfg.target_top1,
        "steps_to_target": math.nan, "time_to_target_s": math.nan,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(provenance() if world.is_chief else {}),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }


def run(cfg: RunConfig, world: World | None = None, claim=None, job: str = "") -> dict:
    """Train one run; the chief appends its rows to ``cfg.results_dir``. Returns the runs row.

    Config and data problems raise ConfigError before anything is written. A non-finite global loss
    ends the run as ``diverged`` (every rank sees the same allreduced loss, so all stop together).
    An exception on any rank ends the run on every rank (``distributed.agree``): the chief writes a
    ``failed`` row naming the rank(s) and error(s), and every rank raises RunFailed. ``claim`` (the
    chief's bench.claims.Claim, in a sweep) is checked at every logged step and at the end: a lost claim
    fails the run (ClaimLost) before it writes anything but its own ``failed`` row. ``job``: the sweep
    invocation, stored in the row (a sweep tries a failed run once per job). A peer that never reaches
    the agreement aborts the job, after the chief has written a ``failed`` row naming it.
    """
    world = world or distributed.init()
    faults.set_run(cfg.seed)
    data.check(cfg)
    evaluate.check(cfg, world.size)
    info = data.info(cfg)
    micro, accumulation = distributed.split_batch(cfg.global_batch, world.size, cfg.per_worker_batch)
    steps = budget_steps(cfg, info.train_size)
    row, history = {**new_row(cfg, world, info, micro, accumulation, steps), "job": job}, []
    guard = claim.check if claim is not None else None
    try:
        _train(cfg, world, info, micro, accumulation, steps, row, history, guard)
        error = None
    except Exception as e:  # noqa: BLE001 - every rank must reach the agreement below
        error = e
    try:
        failures = distributed.agree(world, error)
    except distributed.PeersSilent as e:
        if world.is_chief:
            row.update(status="failed", error=str(e))
            results.append_run(cfg.results_dir, row, history)
            if claim is not None:
                claim.release()
        distributed.abort(str(e))
    if failures:
        row["status"] = "failed"
        row["error"] = "; ".join(f"rank {rank}: {text}" for rank, text in failures)[:2000]
    written = None
    if world.is_chief:
        faults.point("results", world.rank)
        written = results.append_run(cfg.results_dir, row, history)
        if not failures:  # a finished run needs its checkpoint no more; a failed one keeps it for its retry
            shutil.rmtree(checkpoint.directory(cfg.results_dir, row["run_id"]), ignore_errors=True)
    if failures:
        raise RunFailed(row["error"]) from error
    return {**row, "results_file": str(written) if written else ""}


def _throughput(blocks: list[tuple[int, float]], global_batch: int) -> tuple[float, float]:
    """Images/s over timed blocks of (steps, seconds): total images / total time, and the 95 % half-width
    of that mean from up to 10 consecutive groups of blocks (batch means, Student t)."""
    if not blocks:
        return math.nan, math.nan
    steps, secs = np.array(blocks, dtype=float).T
    rate = global_batch * steps.sum() / secs.sum()
    groups = np.array_split(np.arange(len(blocks)), min(10, len(blocks)))
    if len(groups) < 2:
        return rate, math.nan
    rates = np.array([global_batch * steps[g].sum() / secs[g].sum() for g in groups])
    return rate, float(T975[min(len(rates) - 1, len(T975) - 1)] * rates.std(ddof=1) / math.sqrt(len(rates)))


# Student t quantiles t_{0.975, df} for df = 0 (unused), 1 .. 9: the 95 % band of a mean of 2 .. 10 groups.
T975 = (math.nan, 12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157)


def _train(cfg, world, info, micro, accumulation, steps, row, history, guard=None) -> None:
    """The loop; fills ``row`` and ``history`` in place (a failure keeps what was measured).

    Clocks: ``wall_time_s`` is the whole run (set-up, compilation, evaluation, checkpoints);
    ``compile_time_s`` the first step of this attempt (tracing, graph optimisation, one step);
    ``train_time_s`` every later optimizer step; ``eval_time_s`` the evaluations. The host reads the
    loss back only on logged steps (and before evaluations and checkpoints): that is also where a
    non-finite loss is caught, so a diverged run stops at the first logged step after it diverged.
    """
    wall0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    model = models.build(cfg.model, info.image_shape, info.num_classes, cfg.width, cfg.bn_momentum)
    lr_schedule = schedule.from_config(cfg, steps)
    optimizer = optimizers.get(cfg.optimizer, lr_schedule, **cfg.hparams)
    optimizer.build(model.trainable_variables)
    if world.size > 1:
        distributed.broadcast_state(model, optimizer)

    ema_weights, ema_update = (evaluate.make_weight_ema(model.trainable_variables, cfg.ema_decay)
                               if cfg.eval_ema else ([], None))
    train_step = make_train_step(model, optimizer, lr_schedule, cfg, world, accumulation, info.num_classes,
                                 after_step=ema_update)
    evaluator = evaluate.make_evaluator(cfg, model, world, info.num_classes, ema_weights)
    steps_per_epoch = info.train_size / cfg.global_batch
    eval_every = max(1, round(cfg.eval_every_epochs * steps_per_epoch)) if cfg.eval_every_epochs else 0
    epoch_of = lambda step: step / steps_per_epoch  # noqa: E731

    blocks: list[tuple[int, float]] = []  # (steps, seconds) between host reads, compilation excluded
    wall_before = 0.0  # wall time of earlier attempts (a resumed run)
    start = 0
    ckpt, ckpt_every = None, 0
    if cfg.checkpoint_every_epochs:
        ckpt_every = max(1, round(cfg.checkpoint_every_epochs * steps_per_epoch))
        ckpt = checkpoint.RunCheckpoint(checkpoint.directory(cfg.results_dir, row["run_id"]), world, model,
                                        optimizer, ema_weights)
        start, progress, saved_history = ckpt.restore()  # progress and history: on the chief only
        row["resumed_from_step"] = start
        if progress:
            history[:] = saved_history
            blocks = [tuple(b) for b in progress["blocks"]]
            wall_before = float(progress["row"].pop("wall_time_s", 0.0))
            row.update(progress["row"])
    faults.point("data", world.rank)
    train_iter = iter(data.train_dataset(cfg, workers=world.size, rank=world.rank, micro_batch=micro,
                                         accumulation=accumulation, start_step=start))
    bar = tqdm(total=steps, initial=start, disable=not world.is_chief, unit="step", dynamic_ncols=True,
               desc=f"{cfg.optimizer} B={cfg.global_batch}")
    say = bar.write if world.is_chief else (lambda _: None)  # tqdm.write prints even when disabled
    if start:
        say(f"resumed from the checkpoint of step {start}")
    block_start, block_steps = time.perf_counter(), 0
    for step in range(start + 1, steps + 1):
        loss, lr, diag = train_step(train_iter)
        faults.point("step", world.rank, step=step)
        block_steps += 1
        first = step == start + 1
        evaluating = (eval_every and step % eval_every == 0) or step == steps
        checkpointing = ckpt_every and step % ckpt_every == 0 and step < steps
        if not (first or step % cfg.log_every_steps == 0 or evaluating or checkpointing):
            continue
        loss = _scalar(loss)  # the host reads the step's results: the clock below reads finished work
        if guard is not None:
            guard()  # a run whose claim was lost stops here, before it logs, evaluates or checkpoints again
        elapsed = time.perf_counter() - block_start
        if first:
            row["compile_time_s"] += elapsed
        else:
            blocks.append((block_steps, elapsed))
            row["train_time_s"] += elapsed
        row.update(steps=step, final_train_loss=loss)
        history.append({"run_id": row["run_id"], "step": step, "epoch": epoch_of(step), "loss": loss,
                        "lr": _scalar(lr), "time_s": row["train_time_s"],
                        **{k: _scalar(v) for k, v in diag.items()}})
        if not math.isfinite(loss):
            row["status"] = "diverged"
            say(f"step {step}: loss is {loss}; the run diverged")
            break
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{_scalar(lr):.4g}",
                        img_s=f"{cfg.global_batch * block_steps / elapsed:,.0f}", refresh=False)
        bar.update(step - bar.n)

        if evaluating:
            faults.point("eval", world.rank, step=step)
            t0 = time.perf_counter()
            ev = evaluator()
            row["eval_time_s"] += time.perf_counter() - t0
            history.append({"run_id": row["run_id"], "step": step, "epoch": epoch_of(step),
                            "time_s": row["train_time_s"], **ev})
            row.update(top1=ev["top1"], top5=ev["top5"], val_top1=ev.get("val_top1", math.nan))
            if cfg.target_top1 and math.isnan(row["steps_to_target"]) and ev["top1"] >= cfg.target_top1:
                row.update(steps_to_target=step, time_to_target_s=row["train_time_s"])
            say(f"step {step} (epoch {epoch_of(step):.2f}): loss {loss:.4f}  top1 {ev['top1']:.4f}  "
                f"top5 {ev['top5']:.4f}")
        if checkpointing:
            kept = ("steps", "final_train_loss", "top1", "top5", "val_top1", "steps_to_target", "time_to_target_s",
                    "train_time_s", "compile_time_s", "eval_time_s")
            ckpt.save(step, {"blocks": blocks, "row": {
                **{k: row[k] for k in kept}, "wall_time_s": wall_before + time.perf_counter() - wall0}}, history)
        block_start, block_steps = time.perf_counter(), 0
    bar.close()
    if guard is not None:
        guard()

    row["images_per_s"], row["images_per_s_ci95"] = _throughput(blocks, cfg.global_batch)
    row["wall_time_s"] = wall_before + time.perf_counter() - wall0
    if row["status"] == "diverged":  # a diverged run has no accuracy
        row.update(top1=math.nan, top5=math.nan, val_top1=math.nan)
    else:
        row["status"] = "complete"


def add_arguments(p) -> None:
    """``python -m bench train``'s arguments."""
    p.add_argument("--config", help="TOML run config (experiments/*.toml); defaults if omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (TOML value), e.g. --set epochs=3 --set hparams.momentum=0.8")


def main(args) -> int:
    """``python -m bench train [--config X.toml] [--set k=v ...]``: one run (under mpirun/horovodrun for several
    workers). 0 complete or diverged, 1 failed (recorded)."""
    import sys

    from bench import config

    cfg = config.load(args.config, args.overrides)
    world = distributed.init()
    if world.is_chief:
        print(f"run {cfg.run_id(world.size)} on {world.size} worker(s): {cfg.to_dict()}", flush=True)
    try:
        row = run(cfg, world)
    except (RunFailed, results.WriteError) as e:  # recorded as a failed run, or its results could not be written
        print(f"error: run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if world.is_chief:
        print(f"{row['status']}: top1 {row['top1']:.4f}  top5 {row['top5']:.4f}  {row['images_per_s']:,.0f} img/s  "
              f"{row['wall_time_s']:.1f} s  -> {row['results_file']}", flush=True)
    return 0
