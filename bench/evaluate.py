"""Evaluation: test (and validation) accuracy of the weights being evaluated, with BatchNorm statistics
that belong to those weights.

BatchNorm's moving averages are not a property of the weights: they trail the weights by roughly
1 / (1 - momentum) steps, so after a short run at a large learning rate they describe weights that no
longer exist, and two runs with identical weights but another ``bn_momentum`` evaluate differently.
``bn_eval = "precise"`` (the default) therefore recomputes every BatchNorm layer's population mean and
variance from training images with the evaluated weights, as PreciseBN does (Wu & Johnson 2021,
"Rethinking 'Batch' in BatchNorm", section 3): the network runs in training mode over
``precise_bn_images`` training images (each rank its share, evaluation's preprocessing: no augmentation),
each layer's input mean and E[x^2] are summed over batches and ranks (one Horovod allreduce, in float64),
and mean = E[x], variance = E[x^2] - E[x]^2 (population, biased: what Keras stores). Every rank then holds
the same statistics. The layers' own moving statistics are restored afterwards, so training, checkpoints
and resumption never see the recomputed ones. ``bn_eval = "moving"`` evaluates with the moving averages.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from bench import data, distributed
from bench.config import ConfigError, RunConfig
from bench.distributed import World


def check(cfg: RunConfig, workers: int) -> None:
    """Raise ConfigError (one line naming the value and what is valid) for an evaluation that would fail on
    ``workers`` ranks only when it first runs, after the training it cost. Refused:

    - ``bn_eval = "precise"`` with less than one PreciseBN image per worker: each rank takes
      min(precise_bn_images, training images) // workers of them, so every rank gets none and fails with a
      TypeError (``make_precise_bn``). The error names ``precise_bn_images`` or whatever made the training
      set that small (``validation_size``, ``synthetic_train_size``).
    - a test split with no image (a data folder whose test file holds none): top-1 divides by zero.

    Not refused, because they evaluate correctly: a test or validation split with fewer images than workers
    (a rank with an empty shard adds zeros to the summed counts), an ``eval_batch``, ``precise_bn_batch`` or
    ``precise_bn_images`` that is no multiple of the workers (batches are per rank, the last one short; PreciseBN
    weighs by count).
    Reads the data files' headers (``data.info``), so it raises DataError for missing or corrupt ones.
    """
    info = data.info(cfg)
    if info.test_size < 1:
        raise data.DataError(f"{cfg.dataset}: the test split in {cfg.data_dir or 'the default data folder'} has "
                             "0 images; valid: at least 1 (evaluation divides by the count)")
    if cfg.bn_eval != "precise":
        return
    moving = 'or bn_eval = "moving"'
    if cfg.precise_bn_images < workers:
        raise ConfigError(f"precise_bn_images = {cfg.precise_bn_images} gives 0 images to each of the {workers} "
                          f"workers ({cfg.precise_bn_images} // {workers}); valid: >= {workers}, {moving}")
    if info.train_size < workers:  # imagenet's is fixed (info): only in-memory datasets get here
        native = info.train_size + cfg.validation_size
        share = f"{info.train_size} training image(s), 0 PreciseBN images for each of the {workers} workers"
        if cfg.validation_size and native >= workers:
            raise ConfigError(f"validation_size = {cfg.validation_size} leaves {share}; valid: <= "
                              f"{native - workers}, {moving}")
        if cfg.dataset == "synthetic":
            raise ConfigError(f"synthetic_train_size = {cfg.synthetic_train_size} leaves {share}; valid: >= "
                              f"{workers + cfg.validation_size}, {moving}")
        raise data.DataError(f"{cfg.dataset}: the training split in {cfg.data_dir or 'the default data folder'} "
                             f"has {share}; valid: at least {workers + cfg.validation_size} images, {moving}")


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
    """Temporarily give ``variables`` the ``values`` (EMA weights, recomputed BN statistics)."""
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


def accuracy(eval_step, dataset, world: World) -> dict:
    """Top-1, top-5 and mean loss over a whole split (each rank its shard, summed over ranks)."""
    totals = tf.zeros(4)
    for images, labels in dataset:
        totals += eval_step(images, labels)
    top1, top5, loss_sum, n = distributed.sum_over_workers(totals, world, "eval").numpy().tolist()
    return {"top1": top1 / n, "top5": top5 / n, "eval_loss": loss_sum / n}


def batchnorm_layers(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def make_precise_bn(model, world: World):
    """A function(dataset) -> [mean_0, var_0, mean_1, var_1, ...] (float32 numpy, one pair per BatchNorm
    layer in ``batchnorm_layers`` order): population statistics of each layer's input over every rank's
    share of ``dataset``, the network in training mode. It moves the layers' moving statistics as a side
    effect (training mode); the caller restores them."""
    layers = batchnorm_layers(model)
    probe = keras.Model(model.inputs, [layer.input for layer in layers])

    @tf.function(reduce_retracing=True)
    def moments(images):
        xs = probe(images, training=True)
        out = []
        for x in xs if isinstance(xs, list | tuple) else [xs]:  # one layer: Keras returns the tensor itself
            axes = list(range(len(x.shape) - 1))
            out += [tf.reduce_mean(x, axes), tf.reduce_mean(tf.square(x), axes)]
        return out

    def population(dataset) -> list[np.ndarray]:
        sums, count = None, 0
        for images, _ in dataset:
            n = int(images.shape[0])
            batch = [n * m.numpy().astype(np.float64) for m in moments(images)]
            sums = batch if sums is None else [s + b for s, b in zip(sums, batch, strict=True)]
            count += n
        sizes = [len(s) for s in sums]
        flat = np.concatenate([[count], *sums])
        flat = distributed.sum_over_workers(tf.constant(flat), world, "precise_bn").numpy()
        total, parts = flat[0], np.split(flat[1:], np.cumsum(sizes)[:-1])
        stats = []
        for mean_sum, sq_sum in zip(parts[0::2], parts[1::2], strict=True):
            mean = mean_sum / total
            stats += [mean.astype(np.float32), np.maximum(sq_sum / total - mean**2, 0.0).astype(np.float32)]
        return stats

    return population


def save_model(model, path) -> None:
    """``model.save`` to a temporary name beside ``path``, then renamed into place: a reader never sees half a
    file, and an interrupted save leaves only a dot-file behind. Weights and architecture only (the harness
    trains without ``compile``, so there is no optimizer to keep)."""
    import os
    import uuid
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}-{uuid.uuid4().hex[:8]}.keras"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def make_functions(model, world: World, num_classes: int, bn_eval: str):
    """The traced parts of an evaluation of ``model``: (eval_step, PreciseBN's population function or None). A
    later run of the same shape in the same process evaluates with them again (bench.train.Compiled)."""
    precise = make_precise_bn(model, world) if bn_eval == "precise" and batchnorm_layers(model) else None
    return make_eval_step(model, num_classes), precise


def make_evaluator(cfg: RunConfig, model, world: World, num_classes: int, ema_weights=(), functions=None):
    """A function(save_to=None) -> {"top1", "top5", "eval_loss"[, "val_top1"]} evaluating the current weights (the
    EMA weights when ``cfg.eval_ema``), with BatchNorm statistics per ``cfg.bn_eval``; ``save_to`` (a ``.keras``
    path; the caller's rank only) keeps the model exactly as it was measured (``save_model``). The model is left
    as it was found. ``functions``: ``make_functions``' of this model, when they exist already; the data are
    this run's either way."""
    eval_step, precise = functions or make_functions(model, world, num_classes, cfg.bn_eval)
    test = data.eval_dataset(cfg, workers=world.size, rank=world.rank, batch=cfg.eval_batch)
    val = (data.eval_dataset(cfg, workers=world.size, rank=world.rank, batch=cfg.eval_batch, split="validation")
           if cfg.validation_size else None)
    layers = batchnorm_layers(model)
    moving = [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]
    if precise is not None:
        bn_data = data.precise_bn_dataset(cfg, workers=world.size, rank=world.rank,
                                          batch=min(cfg.per_worker_batch, cfg.precise_bn_batch))

    def measure() -> dict:
        out = accuracy(eval_step, test, world)
        if val is not None:
            out["val_top1"] = accuracy(eval_step, val, world)["top1"]
        return out

    def measure_and_save(path) -> dict:
        out = measure()
        if path is not None:  # the weights and BatchNorm statistics just measured, before anything is put back
            save_model(model, path)
        return out

    def evaluate(save_to=None) -> dict:
        weights = (swapped_in(model.trainable_variables, ema_weights) if cfg.eval_ema
                   else contextlib.nullcontext())
        with weights:
            if precise is None:
                return measure_and_save(save_to)
            backup = [tf.identity(v.value) for v in moving]
            try:
                for v, x in zip(moving, precise(bn_data), strict=True):
                    v.assign(x)
                return measure_and_save(save_to)
            finally:  # the layers' own moving statistics, as training left them
                for v, x in zip(moving, backup, strict=True):
                    v.assign(x)

    return evaluate
