"""LARS: momentum SGD with a layer-wise trust ratio.

    local_lr = eta ||w|| / (||g|| + wd ||w|| + eps)   (1 if ||w|| = 0 or ||g|| = 0)
    v = m v + lr local_lr (g + wd w),   w = w - v

Layer-wise adaptation rate scaling (You, Gitman, Ginsburg 2017), with the weight decay inside the trust
ratio as in the paper. Variables of rank 0 or 1 (biases, BatchNorm gamma and beta) are excluded from both
the adaptation and the weight decay: they take plain momentum SGD, v = m v + lr g. The rule looks only at
the variable's rank, so it needs no names. With a trust ratio of 1 and wd = 0 this is exactly Keras's
momentum SGD (``keras.optimizers.SGD(momentum=m)``, whose buffer is -v).

Args:
    learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``. Default 0.01.
    momentum: m. Default 0.9.
    eta: trust coefficient. Default 0.001 (the paper's value).
    weight_decay: wd, applied inside the update (not Keras's decoupled decay). Default 0.0, because the
        harness already puts the L2 term in the loss, so it is in g; set it (and drop the loss term) to
        run the paper's form.
    epsilon: eps in the trust ratio's denominator. Default 1e-9.
    name and the other ``keras.optimizers.Optimizer`` arguments (clipnorm, use_ema, ...): as in Keras.

Stepped like every harness optimizer: ``apply(grads, variables, loss=None)`` (the loss is ignored);
``diagnostics()`` is empty.

Reference: You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", arXiv:1708.03888 (2017).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from optimizers.base import LossAware


class LARS(LossAware, keras.optimizers.Optimizer):
    """Layer-wise adaptive rate scaling with momentum; see the module docstring."""

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.9,
        eta=0.001,
        weight_decay=0.0,
        epsilon=1e-9,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="lars",
        **kwargs,
    ):
        # weight_decay is LARS's own (inside the trust ratio); Keras's decoupled decay is off (see below).
        super().__init__(
            learning_rate=learning_rate,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        for arg, value in (
            ("momentum", momentum),
            ("eta", eta),
            ("weight_decay", weight_decay),
            ("epsilon", epsilon),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"LARS {arg} = {value!r} is not valid; valid: a number >= 0")
        self.momentum = float(momentum)
        self.eta = float(eta)
        self.weight_decay = float(weight_decay)
        self.epsilon = float(epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.velocities = [self.add_variable_from_reference(v, name="velocity") for v in var_list]

    def _apply_weight_decay(self, variables):
        # Keras would apply weight_decay a second time, decoupled; LARS applies it in update_step only.
        del variables

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        g = tf.convert_to_tensor(gradient, variable.dtype)
        v = self.velocities[self._get_variable_index(variable)]
        if len(variable.shape) > 1:  # adapted: kernels (rank >= 2)
            w = tf.convert_to_tensor(variable)
            w_norm, g_norm = tf.norm(w), tf.norm(g)
            trust = tf.where(
                (w_norm > 0.0) & (g_norm > 0.0),
                self.eta * w_norm / (g_norm + self.weight_decay * w_norm + self.epsilon),
                1.0,
            )
            step = (lr * trust) * (g + self.weight_decay * w)
        else:  # excluded: biases, BN gamma/beta take plain momentum SGD
            step = g * lr
        self.assign(v, v * self.momentum + step)
        self.assign_sub(variable, v)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum, eta=self.eta, weight_decay=self.weight_decay, epsilon=self.epsilon
        )
        return config
