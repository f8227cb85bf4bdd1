"""The learning-rate schedule shared by every optimizer (docs/nlcg.md section 4).

peak = base_lr * global_batch / reference_batch (linear scaling, Goyal et al. 2017). For the first
W = warmup_fraction * total_steps steps the rate climbs from init_lr to the peak along a polynomial of
power 0.5 (TF's polynomial_decay run "backwards", as the authors' code does):

    lr(t) = peak + (init - peak) * (1 - t / W) ** power,     t < W

then it is the peak, multiplied by decay_factor at each boundary decay_fractions[i] * total_steps
(epochs 102 and 153 of 200 in the paper's CIFAR set-up). The rate is a pure function of the step.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def to_steps(epochs: float, train_size: int, global_batch: int, rounding=round) -> int:
    """The one conversion of a duration in epochs into optimizer steps (at least 1): a run's budget rounds up
    (``math.ceil``: every epoch it asked for is trained), a cadence (evaluate, checkpoint every x epochs) to
    the nearest step."""
    return max(1, int(rounding(epochs * train_size / global_batch)))


def peak_lr(base_lr: float, global_batch: int, reference_batch: int) -> float:
    return base_lr * global_batch / reference_batch


@keras.saving.register_keras_serializable(package="bench")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Polynomial warm-up to ``peak``, then piecewise-constant step decay. Steps are optimizer steps."""

    def __init__(self, peak: float, init: float, warmup_steps: int, boundaries: list[int],
                 decay_factor: float = 0.1, power: float = 0.5):
        self.peak = float(peak)
        self.init = min(float(init), self.peak)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = [int(b) for b in boundaries]
        self.decay_factor = float(decay_factor)
        self.power = float(power)

    def __call__(self, step):
        return _rate(step, self.peak, self.init - self.peak, self.warmup_steps, self.boundaries, self.decay_factor,
                     self.power)

    def get_config(self):
        return {"peak": self.peak, "init": self.init, "warmup_steps": self.warmup_steps,
                "boundaries": self.boundaries, "decay_factor": self.decay_factor, "power": self.power}


def _rate(step, peak, rise, warmup_steps, boundaries, decay_factor, power):
    """The rate at ``step`` (the formula of the module docstring), of Python numbers or float32 tensors alike:
    ``rise`` = init - peak, ``boundaries`` a list or a vector."""
    t = tf.cast(step, tf.float32)
    span = tf.maximum(tf.cast(warmup_steps, tf.float32), 1.0)
    warm = peak + rise * tf.pow(1.0 - tf.minimum(t, span) / span, power)
    n_decays = tf.reduce_sum(tf.cast(t >= tf.cast(boundaries, tf.float32), tf.float32))
    return tf.where(t < tf.cast(warmup_steps, tf.float32), warm, peak * tf.pow(decay_factor, n_decays))


class Adjustable(keras.optimizers.schedules.LearningRateSchedule):
    """A WarmupStepDecay whose numbers are tf.Variables: ``set`` gives it another run's schedule (another peak,
    warm-up, budget, number of boundaries) without changing the graph a train step traced around it. The rate is
    the one WarmupStepDecay gives, bit for bit: the same float32 operations on the same float32 numbers
    (init - peak is taken in Python's float64 by both, then rounded once)."""

    def __init__(self, schedule: WarmupStepDecay):
        def var(x, shape=()):
            return tf.Variable(x, dtype=tf.float32, trainable=False, shape=shape)

        self._values = dict(peak=var(0.0), rise=var(0.0), warmup_steps=var(0.0), decay_factor=var(0.0),
                            power=var(0.0), boundaries=var([], shape=tf.TensorShape([None])))
        self.set(schedule)

    def set(self, schedule: WarmupStepDecay) -> None:
        self.schedule = schedule
        v = self._values
        v["peak"].assign(schedule.peak)
        v["rise"].assign(schedule.init - schedule.peak)
        v["warmup_steps"].assign(float(schedule.warmup_steps))
        v["decay_factor"].assign(schedule.decay_factor)
        v["power"].assign(schedule.power)
        v["boundaries"].assign([float(b) for b in schedule.boundaries])

    def __call__(self, step):
        return _rate(step, **self._values)

    def get_config(self):
        return self.schedule.get_config()


def from_config(cfg, total_steps: int) -> WarmupStepDecay:
    """The schedule of run config ``cfg`` over a budget of ``total_steps`` optimizer steps."""
    return WarmupStepDecay(
        peak=peak_lr(cfg.base_lr, cfg.global_batch, cfg.reference_batch),
        init=cfg.init_lr,
        warmup_steps=round(cfg.warmup_fraction * total_steps),
        boundaries=[round(f * total_steps) for f in cfg.decay_fractions],
        decay_factor=cfg.decay_factor,
        power=cfg.warmup_power,
    )
