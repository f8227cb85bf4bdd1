"""The harness's step signature for Keras optimizers that do not use the loss.

Kept apart from ``optimizers/__init__.py`` so that optimizer modules (lars.py) can import it without a
circular import; ``optimizers`` re-exports it.
"""

from __future__ import annotations


class LossAware:
    """Mixin giving a Keras optimizer the harness's step signature.

    ``apply(grads, variables, loss=None)`` drops the loss; ``diagnostics()`` is empty.
    """

    def apply(self, grads, trainable_variables=None, loss=None):
        del loss  # first-order baselines do not use the loss
        return super().apply(grads, trainable_variables)

    def diagnostics(self) -> dict:
        return {}
