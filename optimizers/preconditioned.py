"""Heavy-ball momentum with NLCG's diagonal BFGS preconditioner: an ablation of NLCG from the other side.

    v_t = mu v_{t-1} - eta_t P_t g_t,    w_{t+1} = w_t + v_t

P_t = 1 / (B_t + eps), B_t the diagonal BFGS estimate NLCG keeps (docs/nlcg.md s2.1), updated from
y = g_t - g_{t-1} and s = v_{t-1} (the previous weight change, NLCG's reading) by ``optimizers.nlcg.diagonal_bfgs``
itself, with its skip rule, and B = 1 at t = 0 (so the first step is -eta g). With P = 1 this is Keras's SGD with
momentum (``v = mu v - eta g``: the rate inside the velocity, as Keras has it). It asks whether NLCG's gain is
its preconditioner's: momentum's fixed coefficient and no line search, but NLCG's damping of stiff coordinates.
Every dot product of the BFGS update is global over all variables, as in NLCG, so the step is one
``apply(grads, variables)`` over every variable at once. ``diagnostics()``: bfgs_skipped, precond_mean/min/max.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from optimizers.nlcg import check_float32, diagonal_bfgs, global_step_inputs, refuse_unsupported, spread

_DIAGNOSTICS = ("bfgs_skipped", "precond_mean", "precond_min", "precond_max")


class PreconditionedMomentum(keras.optimizers.Optimizer):
    """Momentum with NLCG's diagonal BFGS preconditioner (module docstring). ``momentum``: mu in [0, 1)."""

    def __init__(self, learning_rate=0.01, momentum=0.9, name="momentum_bfgs", **kwargs):
        refuse_unsupported(kwargs, "momentum-bfgs")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if isinstance(momentum, bool) or not isinstance(momentum, int | float) or not 0 <= momentum < 1:
            raise ValueError(f"momentum = {momentum!r} is not valid; valid: a number in [0, 1)")
        self.momentum = float(momentum)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        check_float32(var_list, "momentum-bfgs")
        self._B = [self.add_variable_from_reference(v, name="B", initializer="ones") for v in var_list]
        self._v = [self.add_variable_from_reference(v, name="velocity") for v in var_list]
        self._g_prev = [self.add_variable_from_reference(v, name="g_prev") for v in var_list]
        self._diag = {k: self.add_variable(shape=(), initializer="zeros", name=k) for k in _DIAGNOSTICS}

    def apply(self, grads, trainable_variables=None, loss=None):
        """One step over every variable (``loss``, the harness's step signature, is not used)."""
        del loss
        g, trainable_variables = global_step_inputs(self, grads, trainable_variables, "momentum-bfgs",
                                                    "the preconditioner's update")
        idx = [self._get_variable_index(v) for v in trainable_variables]
        v_prev = [self._v[i].value for i in idx]
        first = tf.equal(self._iterations.value, 0)
        B, P, skipped = diagonal_bfgs([self._B[i].value for i in idx], g, [self._g_prev[i].value for i in idx],
                                      v_prev, first)
        eta = tf.cast(self.learning_rate, tf.float32)
        v = [self.momentum * vp - eta * p * gi for vp, p, gi in zip(v_prev, P, g, strict=True)]
        for k, i in enumerate(idx):
            self.assign(self._B[i], B[k])
            self.assign(self._g_prev[i], g[k])
            self.assign(self._v[i], v[k])
            self.assign_add(trainable_variables[k], v[k])
        for var, value in zip(self._diag.values(), (tf.cast(skipped, tf.float32), *spread(P)), strict=True):
            self.assign(var, value)
        for w in trainable_variables:
            if w.constraint is not None:
                w.assign(w.constraint(w))
        self._iterations.assign_add(1)

    def diagnostics(self) -> dict:
        """The last step's scalars for the history table, keyed as _DIAGNOSTICS."""
        if not self.built:
            raise ValueError("momentum-bfgs diagnostics() needs a built optimizer (call build or apply first)")
        return {k: tf.identity(var.value) for k, var in self._diag.items()}

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}
