"""One training run: data + model + optimizer, the compiled train step, evaluation, result rows.

config -> build -> loop -> record. Every rank runs this; only the chief shows progress and writes.
The global batch of a step is workers x micro_batch x accumulation examples; the gradient handed to
the optimizer is their exact mean (mean over micro-batches, then a Horovod average over workers),
and the loss handed with it is the global mean loss of the same examples (NLCG uses it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import math
import shutil
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import optimizers
from bench import checkpoint, data, distributed, evaluate, faults, intervals, models, precision, results, schedule
from bench import log as bench_log
from bench import tensorboard as events_log
from bench.config import RunConfig
from bench.distributed import World
from bench.noise_scale import Smoothed
from bench.provenance import provenance

_log = bench_log.get("bench.train")


def budget_steps(cfg: RunConfig, train_size: int) -> int:
    """The run's length in optimizer steps: ``steps`` if set, else ``epochs`` of the training set."""
    return cfg.steps if cfg.steps > 0 else schedule.to_steps(cfg.epochs, train_size, cfg.global_batch, math.ceil)


def cross_entropy(labels, logits, num_classes: int, label_smoothing=0.0):
    """Mean softmax cross-entropy; labels int [batch], logits [batch, num_classes]; ``label_smoothing`` a number
    (0: none) or a float32 variable (the step's ``Knobs``)."""
    onehot = tf.one_hot(labels, num_classes)
    if not isinstance(label_smoothing, int | float) or label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / num_classes
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))


def squared_norm(grads):
    """|g|^2 summed over every variable's gradient (float32): the noise scale's measure (bench.noise_scale)."""
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in grads])


class Knobs:
    """The loss's numbers that a traced train step reads from float32 variables, so that a later run with other
    values reuses the step (``Compiled``): weight decay and label smoothing. Whether each is zero is part of the
    graph (a zero adds no term); their values are not."""

    def __init__(self, cfg: RunConfig):
        self.weight_decay = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="weight_decay")
        self.label_smoothing = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="label_smoothing")
        self.set(cfg)

    def set(self, cfg: RunConfig) -> None:
        self.weight_decay.assign(cfg.weight_decay)
        self.label_smoothing.assign(cfg.label_smoothing)


def make_train_step(model, optimizer, lr_schedule, cfg: RunConfig, world: World, accumulation: int,
                    num_classes: int, after_step=None):
    """A tf.function(iterator) -> (loss, lr, diagnostics) that runs one optimizer step.

    It pulls ``accumulation`` micro-batches from the iterator, averages their gradients of
    (cross-entropy + L2), averages again over the workers, and applies the optimizer once; then
    ``after_step(step)`` (the weight EMA's update) if given. The diagnostics include the gradient noise
    scale's squared norms (bench.noise_scale): ``grad_sq_small``, the mean over micro-batches and workers of
    each micro-batch gradient's |g|^2 (one more scalar in the loss's allreduce), and ``grad_sq_big``, the
    averaged gradient's; both of the gradient handed to the optimizer, L2 term included.

    Precision and XLA (bench.precision.forward_backward): logits, loss and gradients are float32 in every
    ``cfg.precision``; under ``mixed_float16`` a step whose mean gradients are not all finite is skipped and
    the diagnostics add ``loss_scale`` and ``step_skipped`` (the step's ``loss_scale`` attribute: the
    DynamicLossScale, else None). ``cfg.jit_compile``: each micro-step's forward + backward is XLA-compiled.
    """
    variables = model.trainable_variables
    decayed = models.decayed_weights(model)
    scaler = precision.DynamicLossScale() if precision.needs_loss_scale(cfg.precision) else None
    knobs = Knobs(cfg)

    def loss_of(labels, logits):  # float32 logits; L2 on the float32 weights
        loss = cross_entropy(labels, logits, num_classes, knobs.label_smoothing if cfg.label_smoothing else 0.0)
        if cfg.weight_decay:
            loss += 0.5 * knobs.weight_decay * tf.add_n([tf.reduce_sum(tf.square(w)) for w in decayed])
        return loss

    forward_backward = precision.forward_backward(model, loss_of, scaler, cfg.jit_compile)

    def micro_step(iterator):
        images, labels = next(iterator)
        return forward_backward(images, labels)

    def apply(grads, loss):
        optimizer.apply(grads, variables, loss=loss)
        if after_step is not None:
            after_step(optimizer.iterations)
        return tf.constant(False)  # not skipped

    @tf.function
    def train_step(iterator):
        faults.point("compile", world.rank)  # Python: runs while the step is traced
        loss, grads = micro_step(iterator)
        sq_small = squared_norm(grads)  # noise scale: mean over micro-batches and workers of |g_micro|^2
        if accumulation > 1:  # Python int: the graph has a loop only when it needs one
            for _ in tf.range(accumulation - 1):
                # parallel_iterations=1: one micro-batch's activations alive at a time, the point of
                # accumulating. The default (10) let iterations overlap and peak memory grow with the
                # accumulation count: 1.21x at 384 micro-batches against 2 (bench.json), 1.07x with this.
                tf.autograph.experimental.set_loop_options(
                    parallel_iterations=1, shape_invariants=[(g, tf.TensorShape(g.shape)) for g in grads])
                micro_loss, micro_grads = micro_step(iterator)
                loss += micro_loss
                sq_small += squared_norm(micro_grads)
                grads = [g + mg for g, mg in zip(grads, micro_grads, strict=True)]
            loss /= accumulation
            grads = [g / accumulation for g in grads]
            sq_small /= accumulation
        loss = tf.stack([loss, sq_small])  # the noise scale's |G_small|^2 rides in the loss's allreduce
        grads, loss = distributed.mean_over_workers(grads, loss, world, cfg.allreduce_compression)
        loss, sq_small = tf.unstack(loss)
        noise = {"grad_sq_small": sq_small, "grad_sq_big": squared_norm(grads)}
        lr = lr_schedule(optimizer.iterations)
        if scaler is None:
            apply(grads, loss)
            return loss, lr, {**optimizer.diagnostics(), **noise}
        # every rank sees the same mean gradients, so every rank skips alike
        skipped = tf.cond(scaler.update(grads), lambda: apply(grads, loss), lambda: tf.constant(True))
        return loss, lr, {**optimizer.diagnostics(), **noise, "loss_scale": tf.identity(scaler.scale),
                          "step_skipped": tf.cast(skipped, tf.float32)}

    train_step.loss_scale = scaler
    train_step.knobs = knobs
    return train_step


def _scalar(x) -> float:
    return float(np.asarray(x))


class RunFailed(RuntimeError):
    """A run ended by an exception on some rank; the message names the rank(s) and their errors."""


def new_row(cfg: RunConfig, world: World, info, micro: int, accumulation: int, steps: int) -> dict:
    """The runs-table row of a run about to start (status ``failed`` until it ends otherwise)."""
    return {
        **cfg.ids(world.size), "sweep": cfg.sweep,  # run_id, config_id, id_version, data_check
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
        "train_size": info.train_size,  # the images it trained on (validation held out): plots' steps per epoch
        **cfg.component_columns(),  # role; each component's origin, reference, version, source hash; plugins
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }


@dataclass
class Measured:
    """What one attempt of a run measured (a resumed run starts from what its checkpoint kept), and the error
    that ended it, if one did (then the fields hold what was measured before it). Clocks:
    ``wall_time_s`` is the whole run (set-up, compilation, evaluation, checkpoints); ``compile_time_s`` the
    first step of this attempt (tracing, graph optimisation, one step); ``train_time_s`` every later
    optimizer step; ``eval_time_s`` the evaluations."""

    steps: int = 0
    resumed_from_step: int = 0
    diverged: bool = False
    final_train_loss: float = math.nan
    top1: float = math.nan
    top5: float = math.nan
    val_top1: float = math.nan
    steps_to_target: float = math.nan
    time_to_target_s: float = math.nan
    train_time_s: float = 0.0
    compile_time_s: float = 0.0
    eval_time_s: float = 0.0
    wall_time_s: float = math.nan
    images_per_s: float = math.nan
    images_per_s_ci95: float = math.nan
    noise_scale: float = math.nan  # the last smoothed B_simple (bench.noise_scale); NaN with one batch size
    history: list = field(default_factory=list)  # the history table's rows: logged steps and evaluations
    blocks: list = field(default_factory=list)  # (steps, seconds) between host reads, compilation excluded
    error: BaseException | None = None

    def row(self) -> dict:
        """The runs-row fields: these numbers and the status they give (``failed`` is decided by the caller)."""
        kept = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_IN_ROW}
        if self.diverged:  # a diverged run has no accuracy
            kept.update(top1=math.nan, top5=math.nan, val_top1=math.nan)
        return {**kept, "status": "diverged" if self.diverged else "complete"}


_NOT_IN_ROW = ("history", "blocks", "error", "diverged")
# what a checkpoint keeps of a run's measurements, to resume them with its weights
_CHECKPOINTED = ("steps", "final_train_loss", "top1", "top5", "val_top1", "steps_to_target", "time_to_target_s",
                 "train_time_s", "compile_time_s", "eval_time_s")


def run(cfg: RunConfig, world: World | None = None, claim=None, job: str = "") -> dict:
    """Train one run; the chief appends its rows to ``cfg.results_dir``. Returns the runs row (and
    ``results_file``, the runs file it wrote, on the chief).

    Config and data problems raise ConfigError before anything is written. A non-finite global loss
    ends the run as ``diverged`` (every rank sees the same allreduced loss, so all stop together).
    An exception on any rank ends the run on every rank (``distributed.agree``): the chief writes a
    ``failed`` row naming the rank(s) and error(s), and every rank raises RunFailed. ``claim`` (the
    chief's bench.leases.Claim, in a sweep) is checked at every logged step and at the end: a lost claim
    fails the run (ClaimLost) before it writes anything but its own ``failed`` row. ``job``: the sweep
    invocation, stored in the row (a sweep tries a failed run once per job). A peer that never reaches
    the agreement aborts the job, after the chief has written a ``failed`` row naming it.
    """
    world = world or distributed.init()
    run_id = cfg.run_id(world.size)  # every rank appends its lines to the attempt's log, on the results folder
    attempt = results.next_attempt(cfg.results_dir, run_id)
    with bench_log.attempt_log(cfg.results_dir, run_id, attempt, world.rank) as file:
        opening = f"run {run_id}: attempt {attempt} on {world.size} worker(s); its log: {file}"
        return _run(cfg, world, claim, job, opening)


def _run(cfg: RunConfig, world: World, claim, job: str, opening: str) -> dict:
    """``run``, within the attempt's log file; ``opening``: its first line, once the run's input is checked (bad
    input leaves nothing behind)."""
    faults.set_run(cfg.seed)
    data.check(cfg)
    evaluate.check(cfg, world.size)
    info = data.info(cfg)
    micro, accumulation = distributed.split_batch(cfg.global_batch, world.size, cfg.per_worker_batch)
    steps = budget_steps(cfg, info.train_size)
    _log.info(opening)
    row = {**new_row(cfg, world, info, micro, accumulation, steps), "job": job}
    measured = measure(cfg, world, info, micro, accumulation, steps, claim.check if claim is not None else None)
    row.update(measured.row())
    if measured.error is not None:
        _log.error(f"run {row['run_id']} failed here: {distributed.describe(measured.error)}")
    try:
        failures = distributed.agree(world, measured.error)
    except distributed.PeersSilent as e:
        if world.is_chief:
            results.append_run(cfg.results_dir, {**row, "status": "failed", "error": str(e)}, measured.history)
            if claim is not None:
                claim.release()
        distributed.abort(str(e))
    if failures:
        row.update(status="failed", error="; ".join(f"rank {rank}: {text}" for rank, text in failures)[:2000])
    written = None
    if world.is_chief:
        faults.point("results", world.rank)
        written = results.append_run(cfg.results_dir, row, measured.history)
        # a finished run needs its checkpoint no more; a failed one keeps it for its retry (whose restore sets
        # it aside if it cannot be restored: bench.checkpoint)
        if not failures:
            shutil.rmtree(checkpoint.directory(cfg.results_dir, row["run_id"]), ignore_errors=True)
    if failures:
        raise RunFailed(row["error"]) from measured.error
    return {**row, "results_file": str(written) if written else ""}


def model_file(cfg: RunConfig, run_id: str) -> Path:
    """Where a completed run keeps its final weights as evaluated (``save_model``): a Keras file of the model with
    the BatchNorm statistics its top-1 was measured with (PreciseBN's when ``bn_eval = "precise"``) and the EMA
    weights when ``eval_ema``; ``keras.models.load_model`` reads it without this harness."""
    return cfg.results_dir / "models" / f"{run_id}.keras"


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
    half = intervals.t975(len(rates) - 1) * rates.std(ddof=1) / math.sqrt(len(rates))
    return rate, float(half)


@dataclass
class Parts:
    """A run's built pieces: model, optimizer, compiled step, evaluator, checkpoint (or None); ``reused``: whether
    they are an earlier run's, reset (``Compiled``)."""

    model: object
    optimizer: object
    train_step: object
    evaluator: object
    checkpoint: object
    reused: bool = False


@dataclass
class Compiled:
    """What one process keeps of a run's build for its next runs of the same shape (``shape_key``): the model,
    optimizer and schedule whose variables the traced train step and evaluation read, those traced functions, and
    the EMA's weights. A later run resets every variable in place to what its own fresh build gives (the same
    seeded model and optimizer are built, then their values copied in), so that it trains exactly as it would in
    a fresh process, without tracing and optimising the same graph again (5-6 s a run at mini's shapes)."""

    model: object
    optimizer: object
    schedule: object
    train_step: object
    ema_weights: list
    functions: tuple
    params: int


# the Compiled builds a process keeps, most recent last, while their weights total at most KEPT_PARAMS numbers
# (the most recent is always kept); mini's 20 shapes of ~20,000 weights each fit many times over
_compiled: dict[tuple, Compiled] = {}
KEPT_PARAMS = 20_000_000
# config fields that a traced step does not bake in: the run's own numbers (its seed's weights and optimizer state
# are reset in place; its schedule, weight decay and label smoothing are read from variables: schedule.Adjustable,
# Knobs) and its bookkeeping. Every other field is part of the shape key.
PER_RUN = frozenset({"sweep", "output_dir", "seed", "epochs", "steps", "base_lr", "reference_batch", "init_lr",
                     "warmup_fraction", "warmup_power", "decay_fractions", "decay_factor", "weight_decay",
                     "label_smoothing", "eval_every_epochs", "log_every_steps", "target_top1",
                     "checkpoint_every_epochs", "tensorboard", "save_model", "trial"})


def shape_key(cfg: RunConfig, world: World, info, accumulation: int, optimizer) -> tuple:
    """What must agree for a run to reuse another's traced step: every config field but PER_RUN, whether weight
    decay and label smoothing are zero (a zero adds no term), the workers, the data's image shape and classes,
    the accumulation count, the optimizer's class, a plug-in model's build function and the train-step factory
    in use (a test may wrap it)."""
    from bench import components

    fields_ = {k: v for k, v in cfg.to_dict().items() if k not in PER_RUN}
    model_fn = (None if cfg.model in models.BUILTIN
                else components.load("model", cfg.model, builtin=models.BUILTIN)[0])
    return (json.dumps(fields_, sort_keys=True, default=str), bool(cfg.weight_decay), bool(cfg.label_smoothing),
            world.size, tuple(info.image_shape), info.num_classes, accumulation, type(optimizer), model_fn,
            make_train_step)


def forget_compiled() -> None:
    """Drop every kept build (the next run of any shape builds and traces its own)."""
    _compiled.clear()
    gc.unfreeze()  # kept builds frozen by between_runs are collectable again


def between_runs() -> None:
    """What a process does after a run and before the next (bench.sweep): Keras's global state cleared (layer
    names, settings) and the run's garbage collected, as ``keras.backend.clear_session`` does, with two
    differences while builds are kept. TensorFlow's kernel cache stays: clearing it makes every kept step
    re-optimise its graph (~1 s a run). And what survives the collection is frozen (``gc.freeze``): the kept
    builds, TensorFlow's and Keras's modules are then not scanned again by the next run's collection, which
    took ~0.19 s a run at the mini study's shapes; ``forget_compiled`` and an eviction unfreeze them."""
    import keras

    keeping = bool(_compiled) and _reuse_allowed()
    with models.kernel_cache_kept() if keeping else contextlib.nullcontext():
        keras.backend.clear_session(free_memory=True)
    if keeping:
        gc.freeze()


def _reuse_allowed() -> bool:
    """Off with BENCH_REUSE_COMPILED=0, and while a fault is injected at compilation (it fires while a step is
    traced, so each run must trace its own: bench.faults)."""
    from bench import environment

    if environment.get(environment.REUSE_COMPILED) == "0":
        return False
    fault = environment.get(environment.FAULT)
    return not (fault and faults.parse(fault).get("at") == "compile")


def _copy(targets, sources) -> None:
    """Assign each source variable's value to its target (same count, shapes and dtypes: ValueError if not)."""
    targets, sources = list(targets), list(sources)
    if len(targets) != len(sources):
        raise ValueError(f"{len(sources)} values for {len(targets)} variables")
    for t, v in zip(targets, sources, strict=True):
        t.assign(v.value if hasattr(v, "value") and not callable(v.value) else v)


def _build(cfg: RunConfig, world: World, info, accumulation: int, steps: int, run_id: str,
           reuse: bool = False) -> Parts:
    """Seed, model, schedule, optimizer (broadcast from rank 0), the EMA, the compiled step, the evaluator.

    ``reuse``: take the traced step and evaluation of an earlier run of this process with the same ``shape_key``
    (``Compiled``), its variables reset to this run's fresh values, and keep this run's for the next."""
    reuse = reuse and _reuse_allowed()
    model = models.seeded(cfg, info, keep_kernel_cache=reuse and cfg.model in models.BUILTIN)
    lr_schedule = schedule.Adjustable(schedule.from_config(cfg, steps))
    optimizer = optimizers.get(cfg.optimizer, lr_schedule, **cfg.hparams)
    optimizer.build(model.trainable_variables)
    key = shape_key(cfg, world, info, accumulation, optimizer) if reuse else None
    kept = _compiled.pop(key, None) if key is not None else None
    if kept is not None:  # this run's fresh values, in the variables the kept step reads
        kept.schedule.set(lr_schedule.schedule)
        _copy(kept.model.variables, model.variables)
        _copy(kept.optimizer.variables, optimizer.variables)
        model, optimizer, lr_schedule = kept.model, kept.optimizer, kept.schedule
    if world.size > 1:
        distributed.broadcast_state(model, optimizer)
    if kept is None:
        ema_weights, ema_update = (evaluate.make_weight_ema(model.trainable_variables, cfg.ema_decay)
                                   if cfg.eval_ema else ([], None))
        train_step = make_train_step(model, optimizer, lr_schedule, cfg, world, accumulation, info.num_classes,
                                     after_step=ema_update)
        functions = evaluate.make_functions(model, world, info.num_classes, cfg.bn_eval)
    else:
        ema_weights, train_step, functions = kept.ema_weights, kept.train_step, kept.functions
        if cfg.eval_ema:
            _copy(ema_weights, model.trainable_variables)  # where make_weight_ema starts
        if getattr(train_step, "knobs", None) is not None:
            train_step.knobs.set(cfg)
        if getattr(train_step, "loss_scale", None) is not None:
            _copy(train_step.loss_scale.variables, precision.DynamicLossScale().variables)
    evaluator = evaluate.make_evaluator(cfg, model, world, info.num_classes, ema_weights, functions)
    scaler = getattr(train_step, "loss_scale", None)  # a wrapped step (tests) may not carry it
    scale = scaler.variables if scaler is not None else []  # mixed_float16's
    ckpt = checkpoint.RunCheckpoint(checkpoint.directory(cfg.results_dir, run_id), world, model, optimizer,
                                    ema_weights + scale) if cfg.checkpoint_every_epochs else None
    if key is not None:
        _keep(key, Compiled(model, optimizer, lr_schedule, train_step, ema_weights, functions,
                            int(model.count_params())))
    return Parts(model, optimizer, train_step, evaluator, ckpt, reused=kept is not None)


def _keep(key: tuple, built: Compiled) -> None:
    _compiled[key] = built  # most recent last
    while len(_compiled) > 1 and sum(c.params for c in _compiled.values()) > KEPT_PARAMS:
        del _compiled[next(iter(_compiled))]
        gc.unfreeze()  # the evicted build may be frozen (between_runs): the next collection frees it


def _resume(parts: Parts) -> tuple[int, Measured, float]:
    """(step to resume after, what the checkpoint kept of the run's measurements, wall time of earlier
    attempts); (0, Measured(), 0.0) without a checkpoint. Progress and history are on the chief only."""
    if parts.checkpoint is None:
        return 0, Measured(), 0.0
    start, progress, history = parts.checkpoint.restore()
    if not progress:
        return start, Measured(resumed_from_step=start), 0.0
    kept = {k: v for k, v in progress["row"].items() if k in _CHECKPOINTED}
    blocks = [tuple(b) for b in progress["blocks"]]
    resumed = Measured(resumed_from_step=start, history=list(history), blocks=blocks, **kept)
    return start, resumed, float(progress["row"].get("wall_time_s", 0.0))


def measure(cfg: RunConfig, world: World, info, micro: int, accumulation: int, steps: int, guard=None) -> Measured:
    """Build, resume, train and evaluate: what the attempt measured; an exception on this rank is returned in
    ``error`` (with what was measured before it), never raised, so that every rank reaches the agreement."""
    wall0 = time.perf_counter()
    try:
        parts = _build(cfg, world, info, accumulation, steps, cfg.run_id(world.size), reuse=True)
        start, resumed, wall_before = _resume(parts)
    except Exception as e:  # noqa: BLE001 - every rank must reach the agreement
        return Measured(error=e, wall_time_s=time.perf_counter() - wall0)
    return _loop(cfg, world, info, parts, micro, accumulation, steps, start, resumed, wall0 - wall_before, guard)


def _loop(cfg, world, info, parts: Parts, micro, accumulation, steps, start, resumed: Measured, wall0: float,
          guard) -> Measured:
    """Steps ``start + 1 .. steps``: what they measured, on top of ``resumed`` (a copy; ``wall0``: the clock
    value the run's wall time counts from). The host reads the loss back only on logged steps (and before
    evaluations and checkpoints): that is also where a non-finite loss is caught, so a diverged run stops
    at the first logged step after it diverged, and where a lost claim (``guard`` raises) stops the run."""
    m = replace(resumed, history=list(resumed.history), blocks=list(resumed.blocks))
    smoothed = Smoothed.replay(m.history)  # a resumed run's noise-scale averages continue from its history
    m.noise_scale = smoothed.value
    run_id = cfg.run_id(world.size)
    steps_per_epoch = info.train_size / cfg.global_batch
    eval_every = schedule.to_steps(cfg.eval_every_epochs, info.train_size, cfg.global_batch) \
        if cfg.eval_every_epochs else 0
    ckpt_every = schedule.to_steps(cfg.checkpoint_every_epochs, info.train_size, cfg.global_batch) \
        if parts.checkpoint else 0
    bar = tqdm(total=steps, initial=start, disable=not world.is_chief, unit="step", dynamic_ncols=True,
               desc=f"{cfg.optimizer} B={cfg.global_batch}")
    say = _log.info  # the chief's INFO, beside the bar (bench.log writes through tqdm.write)
    events = None
    try:
        if cfg.tensorboard and world.is_chief:  # this attempt's folder, with what a resumed run already logged
            events = events_log.EventLog(events_log.directory(cfg.results_dir, run_id, results.next_attempt(
                cfg.results_dir, run_id)), cfg.to_dict(), cfg.global_batch)
            for row in m.history:
                events.log(row)
        faults.point("data", world.rank)
        train_iter = iter(data.train_dataset(cfg, workers=world.size, rank=world.rank, micro_batch=micro,
                                             accumulation=accumulation, start_step=start))
        if start:
            say(f"resumed from the checkpoint of step {start}")
        block_start, block_steps = time.perf_counter(), 0
        for step in range(start + 1, steps + 1):
            loss, lr, diag = parts.train_step(train_iter)
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
                m.compile_time_s += elapsed
            else:
                m.blocks.append((block_steps, elapsed))
                m.train_time_s += elapsed
            m.steps, m.final_train_loss = step, loss
            epoch = step / steps_per_epoch
            m.history.append({"run_id": run_id, "step": step, "epoch": epoch, "loss": loss, "lr": _scalar(lr),
                              "time_s": m.train_time_s, **{k: _scalar(v) for k, v in diag.items()}})
            m.noise_scale = smoothed.log(m.history[-1], micro, cfg.global_batch)
            if events is not None:
                events.log(m.history[-1])
            if not math.isfinite(loss):
                m.diverged = True
                _log.warning(f"step {step}: loss is {loss}; the run diverged")
                break
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{_scalar(lr):.4g}",
                            img_s=f"{cfg.global_batch * block_steps / elapsed:,.0f}", refresh=False)
            bar.update(step - bar.n)
            if evaluating:
                faults.point("eval", world.rank, step=step)
                t0 = time.perf_counter()
                keep = model_file(cfg, run_id) if cfg.save_model and world.is_chief and step == steps else None
                ev = parts.evaluator(save_to=keep)
                m.eval_time_s += time.perf_counter() - t0
                m.history.append({"run_id": run_id, "step": step, "epoch": epoch, "time_s": m.train_time_s, **ev})
                if events is not None:
                    events.log(m.history[-1])
                m.top1, m.top5, m.val_top1 = ev["top1"], ev["top5"], ev.get("val_top1", math.nan)
                if cfg.target_top1 and math.isnan(m.steps_to_target) and ev["top1"] >= cfg.target_top1:
                    m.steps_to_target, m.time_to_target_s = step, m.train_time_s
                say(f"step {step} (epoch {epoch:.2f}): loss {loss:.4f}  top1 {ev['top1']:.4f}  top5 {ev['top5']:.4f}")
            if checkpointing:
                kept = {k: getattr(m, k) for k in _CHECKPOINTED}
                parts.checkpoint.save(step, {"blocks": m.blocks, "row": {
                    **kept, "wall_time_s": time.perf_counter() - wall0}}, m.history)
            block_start, block_steps = time.perf_counter(), 0
        if guard is not None:
            guard()
    except Exception as e:  # noqa: BLE001 - every rank must reach the agreement; what was measured is kept
        m.error = e
    finally:
        bar.close()
        if events is not None:
            events.close()
    m.images_per_s, m.images_per_s_ci95 = _throughput(m.blocks, cfg.global_batch)
    m.wall_time_s = time.perf_counter() - wall0
    return m


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
    asked = config.read_toml(args.config) if args.config else {}
    if "save_model" not in asked and all(config.parse_override(o)[0] != "save_model" for o in args.overrides):
        cfg = replace(cfg, save_model=True)  # one run: its trained model is the point (a sweep's stay off)
    world = distributed.init()
    if world.is_chief:
        _log.info(f"run {cfg.run_id(world.size)} on {world.size} worker(s): {cfg.to_dict()}")
    try:
        row = run(cfg, world)
    except (RunFailed, results.WriteError) as e:  # recorded as a failed run, or its results could not be written
        print(f"error: run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if world.is_chief:
        print(f"{row['status']}: top1 {row['top1']:.4f}  top5 {row['top5']:.4f}  {row['images_per_s']:,.0f} img/s  "
              f"{row['wall_time_s']:.1f} s  -> {row['results_file']}", flush=True)
        if cfg.save_model and row["status"] == "complete":
            print(f"model: {model_file(cfg, row['run_id'])} (keras.models.load_model)", flush=True)
        if cfg.tensorboard:
            print(f"tensorboard --logdir {cfg.results_dir / events_log.DIR}", flush=True)
    return 0
