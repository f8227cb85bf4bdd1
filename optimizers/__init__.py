"""Optimizer registry: ``get(name, learning_rate, **hparams)``.

Every optimizer returned here is a ``keras.optimizers.Optimizer`` stepped the same way,
``opt.apply(grads, variables, loss=loss)``, and reports ``opt.diagnostics()`` (a dict of scalar
tensors for the history table; empty for optimizers that have none). Optimizers that do not use
the loss ignore it. Defaults are the paper's settings (../shared/paper/NLCG.md section 4); the
same names are used in the TOML files and in the results tables.
"""

from __future__ import annotations

import inspect

import keras

from optimizers.base import LossAware
from optimizers.lars import LARS
from optimizers.nlcg import NLCG


class SGD(LossAware, keras.optimizers.SGD):
    """Keras SGD (momentum 0 by default: plain SGD)."""


class RMSprop(LossAware, keras.optimizers.RMSprop):
    """Keras RMSprop; TF1 semantics: v = rho v + (1-rho) g^2, m = mu m + lr g / sqrt(v + eps)."""


class Lamb(LossAware, keras.optimizers.Lamb):
    """Keras LAMB (You et al. 2019)."""


def _sgd(learning_rate, **hp):
    return SGD(learning_rate=learning_rate, **hp)


def _momentum(learning_rate, momentum=0.9, nesterov=False, **hp):
    return SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **hp)


def _rmsprop(learning_rate, rho=0.9, momentum=0.9, epsilon=1.0, **hp):
    return RMSprop(learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, **hp)


def _lamb(learning_rate, **hp):
    return Lamb(learning_rate=learning_rate, **hp)


def _nlcg(rule):
    # Explicit keywords, no **kwargs: valid_hparams then lists exactly these (the registry name fixes `rule`).
    # weight_decay is listed only so that NLCG itself can refuse it with a ValueError saying why.
    def factory(
        learning_rate,
        preconditioner="bfgs",
        line_search="step",
        line_search_period=5,
        line_search_threshold=1.0,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
    ):
        return NLCG(
            learning_rate=learning_rate,
            rule=rule,
            preconditioner=preconditioner,
            line_search=line_search,
            line_search_period=line_search_period,
            line_search_threshold=line_search_threshold,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
        )

    return factory


def _lars(learning_rate, momentum=0.9, eta=0.001, weight_decay=0.0, **hp):
    return LARS(learning_rate=learning_rate, momentum=momentum, eta=eta, weight_decay=weight_decay, **hp)


_NLCG_DEFAULTS = {
    "preconditioner": "bfgs",
    "line_search": "step",
    "line_search_period": 5,
    "line_search_threshold": 1.0,
}


# name -> (factory, default hyperparameters, source of the defaults). The README's table is this dict.
REGISTRY: dict[str, tuple] = {
    "sgd": (_sgd, {}, "plain SGD, the paper's weakest baseline"),
    "momentum": (_momentum, {"momentum": 0.9, "nesterov": False}, "NLCG.md s4 (authors' CIFAR code)"),
    "rmsprop": (
        _rmsprop,
        {"rho": 0.9, "momentum": 0.9, "epsilon": 1.0},
        "NLCG.md s4 (authors' CIFAR code)",
    ),
    "lamb": (_lamb, {}, "Keras defaults (You et al. 2019)"),
    "nlcg-fr": (_nlcg("fr"), _NLCG_DEFAULTS, "NLCG.md s2-3 (authors' code: FR, BFGS, step line search)"),
    "nlcg-pr": (_nlcg("pr"), _NLCG_DEFAULTS, "NLCG.md s2-3 (authors' code, Polak-Ribiere rule)"),
    "lars": (
        _lars,
        {"momentum": 0.9, "eta": 0.001, "weight_decay": 0.0},
        "You et al. 2017 (eta 0.001, momentum 0.9); weight decay 0: the harness puts L2 in the loss",
    ),
}

# Constructor arguments that are not hyperparameters: the harness sets the rate, does its own gradient
# accumulation (bench/distributed.py) and trains in float32.
_NOT_HPARAMS = {"self", "args", "kwargs", "learning_rate", "name", "gradient_accumulation_steps",
                "loss_scale_factor"}


def valid_hparams(name: str) -> set[str]:
    """The hyperparameter names ``get(name, ...)`` accepts."""
    factory, defaults, _ = REGISTRY[name]
    params = inspect.signature(factory).parameters
    names = {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY or v.kind is v.POSITIONAL_OR_KEYWORD}
    names.discard("learning_rate")
    if any(v.kind is v.VAR_KEYWORD for v in params.values()):
        # the factory forwards **hp to a Keras class: accept that class's own arguments too
        cls = factory(1.0).__class__
        names |= set(inspect.signature(cls.__init__).parameters) - _NOT_HPARAMS
    return names | set(defaults)


def get(name: str, learning_rate, **hparams) -> keras.optimizers.Optimizer:
    """Build optimizer ``name`` at the paper's defaults, overridden by ``hparams``.

    Args:
      name: one of ``REGISTRY`` (``sgd``, ``momentum``, ``rmsprop``, ``lamb``, ...).
      learning_rate: a float or a ``keras.optimizers.schedules.LearningRateSchedule``.
      **hparams: optimizer hyperparameters; unknown names raise ValueError.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    unknown = sorted(set(hparams) - valid_hparams(name))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for optimizer {name!r}; "
            f"valid: {', '.join(sorted(valid_hparams(name)))}"
        )
    factory, defaults, _ = REGISTRY[name]
    return factory(learning_rate, **{**defaults, **hparams})


def names() -> list[str]:
    return sorted(REGISTRY)
