"""Mixed precision in the train step: the forward + backward of a micro-step (``forward_backward``, XLA-compiled
on request) and dynamic loss scaling for ``mixed_float16`` (``DynamicLossScale``).

The model computes in 16 bits under a mixed policy (bench.models.build); its weights, the gradients the
optimizer sees, the optimizer's state and every optimizer computation stay float32 (gradients of float32
variables are float32; the train step casts them explicitly before the allreduce). bfloat16 has float32's
exponent range and needs no scaling; float16's smallest normal number is 6.1e-5, so under
``mixed_float16`` the loss is multiplied by a scale before the backward pass and the gradients divided by it
right after, in float32, before they are accumulated and allreduced. The loss the optimizer and the logs
see is always the unscaled one.

``DynamicLossScale`` follows the usual dynamic rule: after the workers' mean gradients are known (so every
rank decides alike), a step whose gradients are all finite is applied, and after ``GROWTH_INTERVAL`` such
steps in a row the scale doubles; a step with any non-finite gradient is skipped (the optimizer is not
called: its iterations, its slots and NLCG's whole state stay as they were, as if that batch had not been
drawn) and the scale halves, never below ``MIN_SCALE``.
"""

from __future__ import annotations

import tensorflow as tf

INITIAL_SCALE = 2.0**15
GROWTH_INTERVAL = 2000  # finite steps in a row before the scale doubles
MIN_SCALE = 1.0


class DynamicLossScale:
    """The scale and the count of finite steps since it last changed, as tf.Variables (checkpointed with the
    run when the train step hands them over: ``variables``)."""

    def __init__(self, initial: float = INITIAL_SCALE, growth_interval: int = GROWTH_INTERVAL):
        self.growth_interval = growth_interval
        self.scale = tf.Variable(initial, dtype=tf.float32, trainable=False, name="loss_scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="loss_scale_good_steps")

    @property
    def variables(self) -> list:
        return [self.scale, self.good_steps]

    def scaled(self, loss):
        """The loss times the scale (what the backward pass differentiates)."""
        return loss * self.scale

    def unscale(self, grads: list) -> list:
        """Gradients of the scaled loss, divided by the scale in float32."""
        inverse = 1.0 / self.scale
        return [tf.cast(g, tf.float32) * inverse for g in grads]

    def update(self, grads: list):
        """Whether every gradient is finite (a bool tensor), and the scale adjusted for the next step."""
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        grow = finite & (self.good_steps + 1 >= self.growth_interval)
        self.scale.assign(tf.where(finite, tf.where(grow, 2.0 * self.scale, self.scale),
                                   tf.maximum(self.scale / 2.0, MIN_SCALE)))
        self.good_steps.assign(tf.where(finite & ~grow, self.good_steps + 1, tf.zeros_like(self.good_steps)))
        return finite


def needs_loss_scale(precision: str) -> bool:
    """Only float16 has too narrow an exponent range for the gradients."""
    return precision == "mixed_float16"


def forward_backward(model, loss_of, scaler: DynamicLossScale | None = None, jit_compile: bool = False):
    """A function (images, labels) -> (loss, gradients) of one micro-batch: the model's logits cast to float32,
    ``loss_of(labels, logits)`` (a float32 scalar), and the gradients of ``model.trainable_variables``, float32
    and of the unscaled loss (scaled for the backward pass and unscaled right after, when ``scaler`` is given).
    ``jit_compile``: one XLA cluster (tf.function(jit_compile=True)); the caller keeps input, accumulation,
    the allreduce and the optimizer outside it."""
    variables = model.trainable_variables

    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_of(labels, tf.cast(model(images, training=True), tf.float32))
            scaled = loss if scaler is None else scaler.scaled(loss)
        grads = tape.gradient(scaled, variables)
        return loss, [tf.cast(g, tf.float32) for g in grads] if scaler is None else scaler.unscale(grads)

    return tf.function(step, jit_compile=True, autograph=False) if jit_compile else step
