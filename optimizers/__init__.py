"""Optimizer registry: ``get(name, learning_rate, **hparams)``.

Every optimizer returned here is a ``keras.optimizers.Optimizer`` stepped the same way,
``opt.apply(grads, variables, loss=loss)``, and reports ``opt.diagnostics()`` (a dict of scalar
tensors for the history table; empty for optimizers that have none). Optimizers that do not use
the loss ignore it. Defaults are the paper's settings (docs/nlcg.md section 4); the
same names are used in the TOML files and in the results tables.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import keras

from optimizers.base import LossAware
from optimizers.lars import LARS
from optimizers.nlcg import LINE_SEARCHES, NLCG, PRECONDITIONERS


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
    # NLCG's hyperparameters and their defaults are NLCG.__init__'s (optimizers/nlcg.py), written nowhere else;
    # the registry name fixes `rule`. valid_hparams lists NLCG's own arguments plus Keras's (_KERAS_RULES).
    def factory(learning_rate, **hp):
        return NLCG(learning_rate=learning_rate, rule=rule, **hp)

    return factory


def _lars(learning_rate, **hp):
    # LARS's defaults are LARS.__init__'s (optimizers/lars.py), written nowhere else.
    return LARS(learning_rate=learning_rate, **hp)


# Constructor arguments that are not hyperparameters: the harness sets the rate, does its own gradient
# accumulation (bench/distributed.py) and its own loss scaling (bench/precision.py); the registry name fixes
# NLCG's rule.
_NOT_HPARAMS = {"self", "args", "kwargs", "learning_rate", "name", "gradient_accumulation_steps",
                "loss_scale_factor", "rule"}


def _defaults(fn, only: tuple[str, ...] | None = None) -> dict:
    """The defaults in ``fn``'s signature of its hyperparameters (not _NOT_HPARAMS), in signature order.

    ``only``: just these names (each must have a default in the signature).
    """
    params = inspect.signature(fn).parameters
    out = {k: p.default for k, p in params.items() if p.default is not p.empty and k not in _NOT_HPARAMS
           and (only is None or k in only)}
    if only is not None and set(only) != set(out):
        raise ValueError(f"{fn.__qualname__} has no default for {', '.join(sorted(set(only) - set(out)))}")
    return out


@dataclass(frozen=True)
class Entry:
    """One registry entry.

    factory: ``factory(learning_rate, **hparams)`` builds the optimizer.
    defaults: the hyperparameters ``get`` passes unless overridden, and ``RunConfig.resolved_hparams`` fills
      in (so they are part of every run id): read from the signature that owns them, never repeated.
    source: where the defaults come from.
    """

    factory: Callable[..., keras.optimizers.Optimizer]
    defaults: dict
    source: str


# name -> Entry. The README's table is this dict (tests/test_registry.py).
REGISTRY: dict[str, Entry] = {
    "sgd": Entry(_sgd, _defaults(_sgd), "plain SGD, the paper's weakest baseline"),
    "momentum": Entry(_momentum, _defaults(_momentum), "docs/nlcg.md s4 (authors' CIFAR code)"),
    "rmsprop": Entry(_rmsprop, _defaults(_rmsprop), "docs/nlcg.md s4 (authors' CIFAR code)"),
    "lamb": Entry(_lamb, _defaults(_lamb), "Keras defaults (You et al. 2019)"),
    "nlcg-fr": Entry(_nlcg("fr"), _defaults(NLCG), "docs/nlcg.md s2-3 (authors' code: FR, BFGS, step line search)"),
    "nlcg-pr": Entry(_nlcg("pr"), _defaults(NLCG), "docs/nlcg.md s2-3 (authors' code, Polak-Ribiere rule)"),
    "lars": Entry(
        _lars,
        # not epsilon: it was never a registry default, and the defaults are part of every run id
        _defaults(LARS, only=("momentum", "eta", "weight_decay")),
        "You et al. 2017 (eta 0.001, momentum 0.9); weight decay 0: the harness puts L2 in the loss",
    ),
}


def valid_hparams(name: str) -> set[str]:
    """The hyperparameter names ``get(name, ...)`` accepts."""
    entry = REGISTRY[name]
    params = inspect.signature(entry.factory).parameters
    names = {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY or v.kind is v.POSITIONAL_OR_KEYWORD}
    names.discard("learning_rate")
    if any(v.kind is v.VAR_KEYWORD for v in params.values()):
        # the factory forwards **hp to a Keras optimizer class: accept that class's own arguments too, and
        # keras.optimizers.Optimizer's (which a class such as NLCG takes through its **kwargs)
        init = inspect.signature(entry.factory(1.0).__class__.__init__).parameters
        names |= set(init) - _NOT_HPARAMS
        if any(v.kind is v.VAR_KEYWORD for v in init.values()):
            names |= set(_KERAS_RULES)
    return names | set(entry.defaults)


# Constructor arguments that users tend to put in [hparams] although the harness sets them: why not there.
_SET_ELSEWHERE = {
    "learning_rate": "the rate is set by base_lr and the schedule (base_lr x global_batch / reference_batch, "
                     "warm-up, decays), not by hparams",
    "name": "the optimizer is chosen by `optimizer = NAME`, not by hparams",
    "gradient_accumulation_steps": "the harness accumulates gradients itself (per_worker_batch), not by hparams",
    "loss_scale_factor": "the harness scales the loss itself under precision = mixed_float16 (the optimizer "
                         "always sees the unscaled loss and float32 gradients), not by hparams",
}


@dataclass(frozen=True)
class Rule:
    """What one hyperparameter may be.

    kind: "number" (a real number, ints accepted, bools not; finite; within low/high), "integer" (>= low),
    "bool", "choice" (one of ``choices``) or "none" (only None; ``why`` says why). ``closed`` says whether
    low and high themselves are valid; ``none`` makes None valid too.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    closed: tuple[bool, bool] = (True, False)
    none: bool = False
    choices: tuple = ()
    why: str = ""

    def range(self) -> str:
        """The valid values in short: ``[0, 1)``, ``> 0``, ``bfgs, none``, ``True or False``."""
        if self.kind == "bool":
            text = "True or False"
        elif self.kind == "choice":
            text = ", ".join(map(str, self.choices))
        elif self.kind == "none":
            return f"None ({self.why})"
        elif self.high is None:
            text = f"{'>=' if self.closed[0] else '>'} {self.low:g}"
        else:
            left, right = "[" if self.closed[0] else "(", "]" if self.closed[1] else ")"
            text = f"{left}{self.low:g}, {self.high:g}{right}"
        return f"{text} or None" if self.none else text

    def expected(self) -> str:
        """The valid values as a phrase: ``a number in [0, 1)``, ``an integer >= 1``, ``one of bfgs, none``."""
        if self.kind == "number":
            return f"a number {'in ' if self.high is not None else ''}{self.range()}"
        if self.kind == "integer":
            return f"an integer {self.range()}"
        return {"bool": "", "choice": "one of ", "none": ""}[self.kind] + self.range()

    def check(self, opt: str, key: str, value):
        """``value`` as the optimizer takes it (ints become floats where numbers are expected).

        Raises ValueError, one line: ``rmsprop: rho = 'x' has type str; valid: a number in [0, 1)``.
        """
        if value is None and (self.none or self.kind == "none"):
            return None
        head = f"{opt}: {key} = {value!r}"
        if self.kind == "none":
            raise ValueError(f"{head} is not supported; valid: {self.range()}")
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise ValueError(f"{head} is not valid; valid: {self.range()}")
        wanted = {"bool": bool, "integer": numbers.Integral, "number": numbers.Real}[self.kind]
        if not isinstance(value, wanted) or (self.kind != "bool" and isinstance(value, bool)):
            raise ValueError(f"{head} has type {type(value).__name__}; valid: {self.expected()}")
        if self.kind == "bool":
            return value
        if not math.isfinite(value):
            raise ValueError(f"{head} is not a finite number; valid: {self.expected()}")
        above = value >= self.low if self.closed[0] else value > self.low
        below = self.high is None or (value <= self.high if self.closed[1] else value < self.high)
        if not (above and below):
            raise ValueError(f"{head} is out of range; valid: {self.expected()}")
        return int(value) if self.kind == "integer" else float(value)


_UNIT = Rule("number", 0.0, 1.0)  # momentum, rho, betas, EMA momentum: [0, 1)
_POSITIVE = Rule("number", 0.0, closed=(False, False))
_NON_NEGATIVE = Rule("number", 0.0)
_BOOL = Rule("bool")

# keras.optimizers.Optimizer's own arguments, shared by every registry entry.
_KERAS_RULES = {
    "weight_decay": Rule("number", 0.0, none=True),  # Keras's decoupled decay; None = off
    "clipnorm": Rule("number", 0.0, closed=(False, False), none=True),
    "clipvalue": Rule("number", 0.0, closed=(False, False), none=True),
    "global_clipnorm": Rule("number", 0.0, closed=(False, False), none=True),
    "use_ema": _BOOL,
    "ema_momentum": _UNIT,
    "ema_overwrite_frequency": Rule("integer", 1, none=True),
}
_SGD_RULES = {**_KERAS_RULES, "momentum": _UNIT, "nesterov": _BOOL}
_NLCG_RULES = {
    **_KERAS_RULES,
    "weight_decay": Rule("none", why="NLCG takes weight decay through the loss, docs/nlcg.md s2"),
    "preconditioner": Rule("choice", choices=PRECONDITIONERS),
    "line_search": Rule("choice", choices=LINE_SEARCHES),
    "line_search_period": Rule("integer", 1),
    "line_search_threshold": _POSITIVE,
}

# name -> hyperparameter -> Rule: every name valid_hparams(name) lists has one (tests/test_registry.py).
HPARAM_RULES: dict[str, dict[str, Rule]] = {
    "sgd": _SGD_RULES,
    "momentum": _SGD_RULES,
    "rmsprop": {**_KERAS_RULES, "rho": _UNIT, "momentum": _UNIT, "epsilon": _POSITIVE, "centered": _BOOL},
    "lamb": {**_KERAS_RULES, "beta_1": _UNIT, "beta_2": _UNIT, "epsilon": _POSITIVE},
    "nlcg-fr": _NLCG_RULES,
    "nlcg-pr": _NLCG_RULES,
    # as optimizers/lars.py checks them: eta, weight_decay (its own, inside the trust ratio, never None) and
    # epsilon are numbers >= 0 (eta 0 freezes the matrices; epsilon 0 is safe: a zero norm gives ratio 1)
    "lars": {**_KERAS_RULES, "momentum": _UNIT, "eta": _NON_NEGATIVE, "weight_decay": _NON_NEGATIVE,
             "epsilon": _NON_NEGATIVE},
}


def check_hparams(name: str, hparams: dict) -> dict:
    """``hparams`` checked against ``name``'s rules, as the constructor takes them (ints -> floats).

    Raises ValueError (one line) for an unknown optimizer, a constructor argument the harness sets itself
    (``learning_rate``, ``name``, ...), an unknown hyperparameter, or a value of the wrong type or range.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    for key in hparams:
        if key in _SET_ELSEWHERE:
            raise ValueError(f"{name}: {key} is not a hyperparameter; {_SET_ELSEWHERE[key]}")
    valid = valid_hparams(name)
    unknown = sorted(set(hparams) - valid)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for optimizer {name!r}; "
            f"valid: {', '.join(sorted(valid))}"
        )
    rules = HPARAM_RULES[name]
    return {key: rules[key].check(name, key, value) for key, value in hparams.items()}


def get(name: str, learning_rate, /, **hparams) -> keras.optimizers.Optimizer:
    """Build optimizer ``name`` at the paper's defaults, overridden by ``hparams``.

    Args:
      name: one of ``REGISTRY`` (``sgd``, ``momentum``, ``rmsprop``, ``lamb``, ...).
      learning_rate: a float or a ``keras.optimizers.schedules.LearningRateSchedule``.
      **hparams: optimizer hyperparameters, checked by ``check_hparams`` before anything is built: unknown
        names, wrong types and out-of-range values raise ValueError (one line, naming what is valid).
        ``name`` and ``learning_rate`` are positional-only, so a ``learning_rate`` in hparams (a config
        mistake) reaches that check and gets its one-line error instead of a TypeError.
    """
    hparams = check_hparams(name, hparams)
    entry = REGISTRY[name]
    return entry.factory(learning_rate, **{**entry.defaults, **hparams})


def names() -> list[str]:
    return sorted(REGISTRY)
