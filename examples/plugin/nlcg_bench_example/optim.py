"""Sign momentum (Signum; Bernstein, Wang, Azizzadenesheli & Anandkumar 2018, "signSGD: Compressed Optimisation
for Non-Convex Problems", arXiv 1802.04434, algorithm 3): an exponential average of the gradients, and a step of
the learning rate in the direction of its sign,

    m = beta m + (1 - beta) g,    w = w - lr sign(m)

so every coordinate moves by exactly lr whatever the gradient's scale. Written by hand on keras.optimizers.
Optimizer: ``build`` makes its one slot per variable (``momenta``, saved in checkpoints and broadcast by Horovod
like any Keras optimizer variable), ``update_step`` applies the rule. It does not use the loss and has no
diagnostics: the harness drops the one and gives it empty others (the contract makes both optional).
"""

from __future__ import annotations

import keras
from keras import ops


class SignMomentum(keras.optimizers.Optimizer):
    """Signum: ``w -= learning_rate * sign(m)``, ``m`` the ``beta`` average of the gradients.

    Its hyperparameters are its signature's (the harness reads them there): ``beta`` in [0, 1), checked here.
    """

    bench_role = "method"  # the method under test in a study (the default for a plug-in; said here to show it)
    # its default search space for a sweep's [search] (bench/search.py; a [search.space.NAME] table replaces it):
    # base_lr is the rate at batch 256 under the linear rule, beta is sampled as 1 - beta on a log scale
    bench_space = {"base_lr": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
                   "hparams.beta": {"min": 0.8, "max": 0.99, "scaling": "log_one_minus"},
                   "weight_decay": {"min": 2e-5, "max": 2e-3, "scaling": "log"}}

    def __init__(self, learning_rate=0.001, beta=0.9, name="sign_momentum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 1:
            raise ValueError(f"beta = {beta!r} must be a number in [0, 1)")
        self.beta = float(beta)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.momenta = [self.add_variable_from_reference(v, name="momentum") for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        m = self.momenta[self._get_variable_index(variable)]
        self.assign(m, self.beta * m + (1.0 - self.beta) * g)
        self.assign_sub(variable, lr * ops.sign(m))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}
