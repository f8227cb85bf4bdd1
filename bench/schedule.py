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
        t = tf.cast(step, tf.float32)
        frac = 1.0 - tf.minimum(t, float(max(self.warmup_steps, 1))) / float(max(self.warmup_steps, 1))
        warm = self.peak + (self.init - self.peak) * tf.pow(frac, self.power)
        n_decays = tf.add_n([tf.cast(t >= b, tf.float32) for b in self.boundaries]) if self.boundaries else 0.0
        decayed = self.peak * tf.pow(self.decay_factor, n_decays)
        return tf.where(t < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"peak": self.peak, "init": self.init, "warmup_steps": self.warmup_steps,
                "boundaries": self.boundaries, "decay_factor": self.decay_factor, "power": self.power}


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
