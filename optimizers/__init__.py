"""Optimizer registry: ``get(name, learning_rate, **hparams)``.

Every optimizer returned here is a ``keras.optimizers.Optimizer`` stepped the same way,
``opt.apply(grads, variables, loss=loss)``, and reports ``opt.diagnostics()`` (a dict of scalar
tensors for the history table; empty for optimizers that have none). Optimizers that do not use
the loss ignore it. Defaults are the paper's settings (docs/nlcg.md section 4); the
same names are used in the TOML files and in the results tables.

A name is a built-in (``REGISTRY``) or a plug-in: a name an installed package registers under the entry-point
group ``nlcg_bench.optimizers``, or an import reference ``"package.module:attribute"`` (bench.components finds
and loads it). A plug-in is a callable ``factory(learning_rate, **hparams)`` returning a
``keras.optimizers.Optimizer`` (a Keras optimizer class qualifies); ``entry(name)`` makes it an Entry like a
built-in's: its defaults from its signature (as NLCG's), its hyperparameter rules from their defaults' types,
its role from its ``bench_role`` attribute (default: the method under test), and the optimizer it builds is
given the harness's step signature where it lacks it (``_stepped``). Every entry says its role: a
``baseline`` or a ``method`` under test; a sweep's ``[claim]`` can override it (bench.grid).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import keras

from optimizers.base import LossAware
from optimizers.lars import LARS
from optimizers.nlcg import LINE_SEARCHES, NLCG, PRECONDITIONERS
from optimizers.preconditioned import PreconditionedMomentum


class SGD(LossAware, keras.optimizers.SGD):
    """Keras SGD (momentum 0 by default: plain SGD)."""


class RMSprop(LossAware, keras.optimizers.RMSprop):
    """Keras RMSprop; TF1 semantics: v = rho v + (1-rho) g^2, m = mu m + lr g / sqrt(v + eps)."""


class Lamb(LossAware, keras.optimizers.Lamb):
    """Keras LAMB (You et al. 2019)."""


class Adam(LossAware, keras.optimizers.Adam):
    """Keras Adam (Kingma & Ba 2015)."""


class AdamW(LossAware, keras.optimizers.AdamW):
    """Keras AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019), on every variable."""


def _sgd(learning_rate, **hp):
    return SGD(learning_rate=learning_rate, **hp)


def _momentum(learning_rate, momentum=0.9, nesterov=False, **hp):
    return SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **hp)


def _rmsprop(learning_rate, rho=0.9, momentum=0.9, epsilon=1.0, **hp):
    return RMSprop(learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, **hp)


def _lamb(learning_rate, **hp):
    return Lamb(learning_rate=learning_rate, **hp)


def _nesterov(learning_rate, momentum=0.9, **hp):
    # Keras's SGD with Nesterov's look-ahead; the name fixes nesterov (Entry.fixed), so `momentum` and
    # `nesterov` stay two optimizers whose run ids never meet
    return SGD(learning_rate=learning_rate, momentum=momentum, nesterov=True, **hp)


def _adam(learning_rate, **hp):
    return Adam(learning_rate=learning_rate, **hp)


def _adamw(learning_rate, **hp):
    # AdamW's own default weight decay is a registry default (read from Keras's signature): it is what makes
    # AdamW AdamW, and a default of the registry enters every run id, so a Keras upgrade that moved it
    # would give other runs other ids instead of silently other training
    return AdamW(learning_rate=learning_rate, **hp)


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


# Hyperparameters added to a built-in after its run ids were pinned (tests/test_pinned_ids.py), whose default
# keeps the algorithm as it was: accepted in [hparams], but not registry defaults, so they enter a run id only
# when a sweep sets them and no finished run's id moved.
_ADDED_LATER = ("fixed_beta",)


def _defaults(fn, only: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()) -> dict:
    """The defaults in ``fn``'s signature of its hyperparameters (not _NOT_HPARAMS), in signature order.

    ``only``: just these names (each must have a default in the signature); ``skip``: not these.
    """
    params = inspect.signature(fn).parameters
    out = {k: p.default for k, p in params.items() if p.default is not p.empty and k not in _NOT_HPARAMS
           and (only is None or k in only) and k not in skip}
    if only is not None and set(only) != set(out):
        raise ValueError(f"{fn.__qualname__} has no default for {', '.join(sorted(set(only) - set(out)))}")
    return out


BASELINE, METHOD = "baseline", "method"
ROLES = (BASELINE, METHOD)  # what an optimizer is in a study: a baseline, or a method under test
SPACE_ATTRIBUTE = "bench_space"  # and its default search space (bench.search): {field: {min, max, scaling}}
ROLE_ATTRIBUTE = "bench_role"  # a plug-in's factory (or class) may say its role: bench_role = "baseline"
# bench perf's default sets of optimizers (bench/perf), each within the next: --json --quick's table, --json's (the
# default study's optimizers), the table without --json. An entry's ``perf`` names the smallest it is in.
PERF_SETS = ("quick", "study", "table")


@dataclass(frozen=True)
class Entry:
    """One registry entry (a built-in, or a plug-in made one by ``entry``).

    factory: ``factory(learning_rate, **hparams)`` builds the optimizer.
    defaults: the hyperparameters ``get`` passes unless overridden, and ``RunConfig.resolved_hparams`` fills
      in (so they are part of every run id): read from the signature that owns them, never repeated.
    source: where the defaults come from.
    role: ``baseline`` or ``method`` (under test): which side of a claim the optimizer stands on unless a
      sweep's ``[claim]`` says otherwise (bench.grid); the report compares every method with the best baseline.
    fixed: constructor arguments the entry's name fixes, each with why (``nesterov``'s nesterov = True): not
      hyperparameters, refused in ``[hparams]``.
    plugin: where a plug-in comes from (bench.components.Plugin: origin, reference, distribution, version,
      source hash); None for a built-in.
    rules: a plug-in's hyperparameter rules (built-ins': HPARAM_RULES).
    perf: the smallest of ``bench perf``'s default sets (PERF_SETS) the optimizer is in; "" for none (a plug-in's
      is ""): ``bench perf --optimizers NAME`` benchmarks any optimizer, these are only the defaults.
    perf_rank: its place in those sets (``perf_set``'s order; ``perf_table`` puts the reference and the methods
      first); unique among the entries with a ``perf``.
    space: its default search space (bench.search: field -> {min, max, scaling} or {feasible_points}), which a
      sweep file's ``[search.space.NAME]`` replaces; None: a search must give one. A plug-in's: its factory's
      ``bench_space`` attribute. space_source: where its ranges come from.
    """

    factory: Callable[..., keras.optimizers.Optimizer]
    defaults: dict
    source: str
    role: str = BASELINE
    fixed: dict = field(default_factory=dict)
    plugin: object = None
    rules: dict | None = None
    perf: str = ""
    perf_rank: int = 0
    space: dict | None = None
    space_source: str = ""

    @property
    def origin(self) -> str:
        """``built-in``, ``entry point`` or ``reference``."""
        return "built-in" if self.plugin is None else self.plugin.origin


# Default search spaces (bench.search), in AlgoPerf's vocabulary. The learning rate is relative to the linear
# rule (base_lr is the rate at reference_batch 256; bench.search.LR_RANGE says why), a 25x range log-scaled
# around the paper's 0.1 (Adam's around Keras's 1e-3); weight decay log-scaled around the paper's 2e-4 (its L2
# in the loss); the warm-up around the paper's 1/8; a momentum-like coefficient as 1 - x on a log scale around
# 0.9 (batch_science's REVERSE_LOG). The same dimensions for every family, so equal trial counts are equal effort.
_LR_SGD = {"min": 0.02, "max": 0.5, "scaling": "log"}
_LR_ADAM = {"min": 2e-4, "max": 5e-3, "scaling": "log"}
_COMMON = {"weight_decay": {"min": 2e-5, "max": 2e-3, "scaling": "log"},
           "warmup_fraction": {"min": 0.02, "max": 0.25, "scaling": "linear"}}
_MOMENTUM = {"min": 0.8, "max": 0.99, "scaling": "log_one_minus"}
_SPACE_SOURCE = ("harness default (optimizers._SPACES): Nado et al. 2021's dimensions (rate, 1 - momentum log-scaled, "
                 "weight decay, warm-up), ranges centred on the paper's settings")
_SPACES = {
    "sgd": {"base_lr": _LR_SGD, **_COMMON},
    "momentum": {"base_lr": _LR_SGD, "hparams.momentum": _MOMENTUM, **_COMMON},
    "nesterov": {"base_lr": _LR_SGD, "hparams.momentum": _MOMENTUM, **_COMMON},
    "momentum-bfgs": {"base_lr": _LR_SGD, "hparams.momentum": _MOMENTUM, **_COMMON},
    "rmsprop": {"base_lr": _LR_SGD, "hparams.momentum": _MOMENTUM, **_COMMON},
    "lars": {"base_lr": _LR_SGD, "hparams.momentum": _MOMENTUM, **_COMMON},
    "adam": {"base_lr": _LR_ADAM, "hparams.beta_1": _MOMENTUM, **_COMMON},
    "adamw": {"base_lr": _LR_ADAM, "hparams.beta_1": _MOMENTUM, **_COMMON},
    "lamb": {"base_lr": _LR_ADAM, "hparams.beta_1": _MOMENTUM, **_COMMON},
    # NLCG's own coefficient (beta) is computed, not set: its space is the rate, weight decay and warm-up
    "nlcg-fr": {"base_lr": _LR_SGD, **_COMMON},
    "nlcg-pr": {"base_lr": _LR_SGD, **_COMMON},
}

# name -> Entry. The README's table is this dict (tests/test_registry.py).
REGISTRY: dict[str, Entry] = {
    "sgd": Entry(_sgd, _defaults(_sgd), "plain SGD, the paper's weakest baseline"),
    "momentum": Entry(_momentum, _defaults(_momentum), "docs/nlcg.md s4 (authors' CIFAR code)",
                      perf="quick", perf_rank=1),
    "rmsprop": Entry(_rmsprop, _defaults(_rmsprop), "docs/nlcg.md s4 (authors' CIFAR code)", perf="study",
                     perf_rank=2),
    "lamb": Entry(_lamb, _defaults(_lamb), "Keras defaults (You et al. 2019)", perf="table", perf_rank=6),
    "nlcg-fr": Entry(_nlcg("fr"), _defaults(NLCG, skip=_ADDED_LATER),
                     "docs/nlcg.md s2-3 (authors' code: FR, BFGS, step line search)",
                     METHOD, perf="quick", perf_rank=3),
    "nlcg-pr": Entry(_nlcg("pr"), _defaults(NLCG, skip=_ADDED_LATER),
                     "docs/nlcg.md s2-3 (authors' code, Polak-Ribiere rule)",
                     METHOD, perf="study", perf_rank=4),
    "lars": Entry(
        _lars,
        # not epsilon: it was never a registry default, and the defaults are part of every run id
        _defaults(LARS, only=("momentum", "eta", "weight_decay")),
        "You et al. 2017 (eta 0.001, momentum 0.9); weight decay 0: the harness puts L2 in the loss",
        perf="table", perf_rank=5,
    ),
    # The baselines Nado et al. 2021 (arXiv 2102.06356) find to match LARS and LAMB at large batch once tuned:
    # Keras's own optimizers, at Keras's defaults unless the paper's baseline is defined by one
    "nesterov": Entry(_nesterov, _defaults(_nesterov),
                      "momentum 0.9 as `momentum` (Nado et al. 2021 tune it per batch); Keras's Nesterov SGD",
                      fixed={"nesterov": "the name `nesterov` fixes it (True); `momentum` is the same optimizer "
                                         "without Nesterov's look-ahead"}),
    "adam": Entry(_adam, _defaults(_adam), "Keras defaults (beta_1 0.9, beta_2 0.999 of Kingma & Ba 2015; "
                  "epsilon 1e-7); Nado et al. 2021 tune them"),
    # An ablation of NLCG (issue 28): momentum's fixed coefficient, NLCG's diagonal BFGS preconditioner (its code)
    "momentum-bfgs": Entry(PreconditionedMomentum, _defaults(PreconditionedMomentum),
                           "momentum 0.9 as `momentum`; NLCG's diagonal BFGS (optimizers/preconditioned.py)", METHOD),
    "adamw": Entry(_adamw, _defaults(keras.optimizers.AdamW, only=("weight_decay",)),
                   "Keras defaults (weight decay 0.004, decoupled, on every variable; Loshchilov & Hutter 2019), "
                   "on top of the harness's L2 in the loss"),
}


def valid_hparams(name: str) -> set[str]:
    """The hyperparameter names ``get(name, ...)`` accepts (a plug-in's: ``entry``)."""
    e = entry(name)
    if e.rules is not None:
        return set(e.rules)
    return _accepted(e.factory, lambda: e.factory(1.0)) - set(e.fixed) | set(e.defaults)


def _accepted(factory, build) -> set[str]:
    """The keyword arguments ``factory`` accepts: its own, and when it forwards ``**hp``, those of the class it
    builds (``build()``) and keras.optimizers.Optimizer's (which a class such as NLCG takes through its
    **kwargs)."""
    params = inspect.signature(factory).parameters
    names = {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY or v.kind is v.POSITIONAL_OR_KEYWORD}
    names -= {"learning_rate", *_NOT_HPARAMS}
    if any(v.kind is v.VAR_KEYWORD for v in params.values()):
        init = inspect.signature(type(build()).__init__).parameters
        names |= set(init) - _NOT_HPARAMS
        if any(v.kind is v.VAR_KEYWORD for v in init.values()):
            names |= set(_KERAS_RULES)
    return names


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
    "bool", "choice" (one of ``choices``), "none" (only None; ``why`` says why), and for plug-ins, whose
    rules come from their defaults' types, "text" (a string) and "any" (the plug-in checks it when built).
    ``closed`` says whether low and high themselves are valid; ``none`` makes None valid too; a low of -inf
    is no bound.
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
        elif self.kind in ("text", "any"):
            return {"text": "a string", "any": "any value"}[self.kind]
        elif self.low == -math.inf and self.high is None:
            text = f"any {self.kind}"
        elif self.high is None:
            text = f"{'>=' if self.closed[0] else '>'} {self.low:g}"
        else:
            left, right = "[" if self.closed[0] else "(", "]" if self.closed[1] else ")"
            text = f"{left}{self.low:g}, {self.high:g}{right}"
        return f"{text} or None" if self.none else text

    def expected(self) -> str:
        """The valid values as a phrase: ``a number in [0, 1)``, ``an integer >= 1``, ``one of bfgs, none``."""
        if self.kind in ("number", "integer") and self.low == -math.inf and self.high is None:
            return f"{'a' if self.kind == 'number' else 'an'} {self.kind}" + (" or None" if self.none else "")
        if self.kind == "number":
            return f"a number {'in ' if self.high is not None else ''}{self.range()}"
        if self.kind == "integer":
            return f"an integer {self.range()}"
        return {"bool": "", "choice": "one of ", "none": "", "text": "", "any": ""}[self.kind] + self.range()

    def check(self, opt: str, key: str, value):
        """``value`` as the optimizer takes it (ints become floats where numbers are expected).

        Raises ValueError, one line: ``rmsprop: rho = 'x' has type str; valid: a number in [0, 1)``.
        """
        if value is None and (self.none or self.kind == "none"):
            return None
        head = f"{opt}: {key} = {value!r}"
        if self.kind == "any":
            return value
        if self.kind == "text":
            if isinstance(value, str):
                return value
            raise ValueError(f"{head} has type {type(value).__name__}; valid: a string")
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
KERAS_ARGUMENTS = tuple(_KERAS_RULES)  # what every optimizer takes besides its own hyperparameters (bench list)
_SGD_RULES = {**_KERAS_RULES, "momentum": _UNIT, "nesterov": _BOOL}
_ADAM_RULES = {**_KERAS_RULES, "beta_1": _UNIT, "beta_2": _UNIT, "epsilon": _POSITIVE, "amsgrad": _BOOL}
_NLCG_RULES = {
    **_KERAS_RULES,
    "weight_decay": Rule("none", why="NLCG takes weight decay through the loss, docs/nlcg.md s2"),
    "preconditioner": Rule("choice", choices=PRECONDITIONERS),
    "line_search": Rule("choice", choices=LINE_SEARCHES),
    "line_search_period": Rule("integer", 1),
    "line_search_threshold": _POSITIVE,
    "fixed_beta": Rule("number", 0.0, 1.0, closed=(True, True), none=True),
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
    "nesterov": {k: v for k, v in _SGD_RULES.items() if k != "nesterov"},  # the name fixes nesterov
    "adam": _ADAM_RULES,
    "momentum-bfgs": {**_KERAS_RULES, "momentum": _UNIT,
                      "weight_decay": Rule("none", why="it takes weight decay through the loss, as NLCG does")},
    # AdamW's decay is its point: a number >= 0 (Keras's AdamW refuses None)
    "adamw": {**_ADAM_RULES, "weight_decay": _NON_NEGATIVE},
}


def check_hparams(name: str, hparams: dict) -> dict:
    """``hparams`` checked against ``name``'s rules, as the constructor takes them (ints -> floats).

    Raises ValueError (one line) for an unknown optimizer, a constructor argument the harness sets itself
    (``learning_rate``, ``name``, ...) or the name fixes, an unknown hyperparameter, or a value of the wrong
    type or range.
    """
    e = entry(name)
    for key in hparams:
        if key in _SET_ELSEWHERE:
            raise ValueError(f"{name}: {key} is not a hyperparameter; {_SET_ELSEWHERE[key]}")
        if key in e.fixed:
            raise ValueError(f"{name}: {key} is not a hyperparameter; {e.fixed[key]}")
    valid = valid_hparams(name)
    unknown = sorted(set(hparams) - valid)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for optimizer {name!r}; "
            f"valid: {', '.join(sorted(valid)) or 'none'}"
        )
    rules = e.rules if e.rules is not None else HPARAM_RULES[name]
    return {key: rules[key].check(name, key, value) for key, value in hparams.items()}


def get(name: str, learning_rate, /, **hparams) -> keras.optimizers.Optimizer:
    """Build optimizer ``name`` at the paper's defaults, overridden by ``hparams``.

    Args:
      name: one of ``REGISTRY`` (``sgd``, ``momentum``, ``rmsprop``, ``lamb``, ...) or a plug-in's name
        (``entry``).
      learning_rate: a float or a ``keras.optimizers.schedules.LearningRateSchedule``.
      **hparams: optimizer hyperparameters, checked by ``check_hparams`` before anything is built: unknown
        names, wrong types and out-of-range values raise ValueError (one line, naming what is valid).
        ``name`` and ``learning_rate`` are positional-only, so a ``learning_rate`` in hparams (a config
        mistake) reaches that check and gets its one-line error instead of a TypeError.
    A plug-in that raises, or builds something that is not a keras.optimizers.Optimizer, raises ValueError
    (one line naming its reference).
    """
    hparams = check_hparams(name, hparams)
    e = entry(name)
    if e.plugin is None:
        return e.factory(learning_rate, **{**e.defaults, **hparams})
    return _build_plugin(name, e.factory, e.plugin.reference, learning_rate, {**e.defaults, **hparams}, e.defaults)


def names() -> list[str]:
    """The built-in optimizers' names (plug-ins: bench.components.available)."""
    return sorted(REGISTRY)


for _name, _entry in list(REGISTRY.items()):
    REGISTRY[_name] = dataclasses.replace(_entry, space=_SPACES.get(_name), space_source=_SPACE_SOURCE)


def space(name: str) -> tuple[dict | None, str]:
    """Optimizer ``name``'s default search space and where it comes from (a plug-in's: its ``bench_space``)."""
    e = entry(name)
    return (None, "") if e.space is None else ({k: dict(v) for k, v in e.space.items()}, e.space_source)


def role(name: str) -> str:
    """``baseline`` or ``method``: the registry's role of optimizer ``name`` (a plug-in's: ``entry``)."""
    return entry(name).role


# ---- bench perf's defaults: which built-ins it times unless --optimizers names others ------------------------------


def perf_set(kind: str) -> list[str]:
    """The built-ins in ``bench perf``'s default set ``kind`` (PERF_SETS: ``quick``, ``study`` or ``table``, each
    within the next), in ``perf_rank`` order: the study's baselines, its methods, then the table's others
    (momentum, rmsprop, nlcg-fr, nlcg-pr, lars, lamb). bench.json's ``opt.apply`` table on ResNet-50 times
    ``study`` (``--quick``) or ``table``, and ``bench project`` projects ``table`` by default."""
    if kind not in PERF_SETS:
        raise ValueError(f"perf set {kind!r} is unknown; valid: {', '.join(PERF_SETS)}")
    within = PERF_SETS[: PERF_SETS.index(kind) + 1]
    return sorted((n for n, e in REGISTRY.items() if e.perf in within), key=lambda n: REGISTRY[n].perf_rank)


def perf_reference() -> str:
    """The optimizer every step-time ratio of ``bench perf`` is over (the first row of its table): the first
    baseline of the ``quick`` set (momentum)."""
    return next(n for n in perf_set("quick") if REGISTRY[n].role == BASELINE)


def perf_method() -> str:
    """The method under test that bench.json's ``nlcg_vs_momentum_step`` puts over ``perf_reference``: the first
    method of the ``quick`` set (nlcg-fr), which is also the study's first."""
    return next(n for n in perf_set("quick") if REGISTRY[n].role == METHOD)


def perf_table(kind: str) -> list[str]:
    """``perf_set(kind)`` in the order of ``bench perf``'s step-time table: the reference first (every ratio is
    over it), then the methods, then the other baselines, each group in ``perf_rank`` order (table:
    momentum, nlcg-fr, nlcg-pr, rmsprop, lars, lamb)."""
    reference = perf_reference()
    return sorted(perf_set(kind), key=lambda n: (n != reference, REGISTRY[n].role != METHOD, REGISTRY[n].perf_rank))


# ---- plug-ins: an entry point of group nlcg_bench.optimizers, or "package.module:attribute" ---------------------

_PLUGINS: dict[str, Entry] = {}  # name -> Entry, for the process (a plug-in is imported once)


def entry(name: str) -> Entry:
    """The Entry of optimizer ``name``: a built-in's, or a plug-in's made from its factory's signature.

    Raises ValueError (bench.config.ConfigError, one line naming the reference) for a name that is neither a
    built-in nor a plug-in, and for a plug-in that does not import, names nothing, is not callable, cannot
    be called as ``factory(learning_rate)``, has an invalid ``bench_role``, or builds anything but a
    keras.optimizers.Optimizer at its defaults.
    """
    if name in REGISTRY:
        return REGISTRY[name]
    if name not in _PLUGINS:
        from bench import components  # light (importlib.metadata); plug-ins only

        factory, plugin = components.load("optimizer", name, builtin=names())
        _PLUGINS[name] = _plugin_entry(name, factory, plugin)
    return _PLUGINS[name]


def _plugin_entry(name: str, factory, plugin) -> Entry:
    """An Entry for a plug-in's factory: its hyperparameters and their defaults from its signature (the first
    parameter is the learning rate; Keras's own arguments keep Keras's defaults, so they enter a run id only
    when set), each hyperparameter's rule from its default's type (or Keras's rule), checked by building it
    once at its defaults."""
    where = f"optimizer = {name!r}"
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {plugin.reference} has no signature to read; expected a callable "
                         "factory(learning_rate, **hparams)") from None
    try:
        signature.bind(0.1)
    except TypeError as e:
        raise ValueError(f"{where}: {plugin.reference}{signature} cannot be called as factory(learning_rate) "
                         f"({e}); expected factory(learning_rate, **hparams), every hyperparameter with a "
                         "default") from None
    params = list(signature.parameters.values())
    first = next(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL))
    own = {p.name: p.default for p in params if p.name != first and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
           and p.name not in _NOT_HPARAMS}
    defaults = {k: v for k, v in own.items() if k not in _KERAS_ARGS}
    role = getattr(factory, ROLE_ATTRIBUTE, METHOD)
    if role not in ROLES:
        raise ValueError(f"{where}: {plugin.reference}.{ROLE_ATTRIBUTE} = {role!r} is not a role; valid: "
                         f"{', '.join(ROLES)}")
    built = _build_plugin(name, factory, plugin.reference, 0.1, defaults, defaults)
    accepted = (_accepted(factory, lambda: built) - {first}) | set(own)
    built_defaults = {k: p.default for k, p in inspect.signature(type(built).__init__).parameters.items()}
    typed = {**built_defaults, **own}
    rules = {k: _KERAS_RULES[k] if k in _KERAS_RULES else _rule_of(typed.get(k)) for k in accepted}
    own_space = getattr(factory, SPACE_ATTRIBUTE, None)
    return Entry(factory, defaults, "its signature", role, plugin=plugin, rules=rules, space=own_space,
                 space_source=f"{plugin.reference}.{SPACE_ATTRIBUTE}" if own_space else "")


_KERAS_ARGS = {*_KERAS_RULES, "loss_scale_factor", "gradient_accumulation_steps", "name"}  # BaseOptimizer's own


def _rule_of(default) -> Rule:
    """A plug-in hyperparameter's rule, from its default's type: a bool, an integer, a number (ints accepted),
    a string; anything else (None, a tuple) is the plug-in's to check when it is built."""
    if isinstance(default, bool):
        return _BOOL
    if isinstance(default, numbers.Integral):
        return Rule("integer", -math.inf)
    if isinstance(default, numbers.Real):
        return Rule("number", -math.inf, closed=(False, False))
    if isinstance(default, str):
        return Rule("text")
    return Rule("any")


def _build_plugin(name: str, factory, reference: str, learning_rate, hparams: dict,
                  defaults: dict) -> keras.optimizers.Optimizer:
    """``factory(learning_rate, **hparams)``, checked to be a keras.optimizers.Optimizer and given the harness's
    step (``_stepped``); anything it raises becomes one ValueError line naming the reference and the
    hyperparameters set away from its ``defaults``."""
    try:
        opt = factory(learning_rate, **hparams)
    except Exception as e:  # noqa: BLE001 - a plug-in may raise anything; the user needs one line
        shown = ", ".join(f"{k}={v!r}" for k, v in hparams.items() if k not in defaults or defaults[k] != v)
        raise ValueError(f"optimizer = {name!r}: {reference}(learning_rate{', ' + shown if shown else ''}) "
                         f"{'' if shown else 'at its defaults '}raised {type(e).__name__}: "
                         f"{' '.join(str(e).split())}") from None
    if not isinstance(opt, keras.optimizers.Optimizer):
        raise ValueError(f"optimizer = {name!r}: {reference}(learning_rate, **hparams) built a "
                         f"{type(opt).__module__}.{type(opt).__qualname__}, not a keras.optimizers.Optimizer")
    return _stepped(opt)


class _DropsLoss:
    """The harness's ``apply(grads, variables, loss=...)`` for a plug-in whose apply takes no loss."""

    def apply(self, grads, trainable_variables=None, loss=None):
        del loss
        return super().apply(grads, trainable_variables)


class _NoDiagnostics:
    """``diagnostics()`` for a plug-in that has none: nothing to log."""

    def diagnostics(self) -> dict:
        return {}


_ADAPTED: dict[tuple, type] = {}


def _stepped(opt: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """``opt`` with the harness's step signature: ``apply(grads, variables, loss=loss)`` (the loss passed where
    its apply accepts one, dropped where not) and ``diagnostics()`` (empty where it has none). The object
    keeps its class's behaviour and state (a subclass adds only the missing method), so its variables,
    checkpoints and Horovod's broadcast are those of the class the plug-in wrote."""
    params = inspect.signature(opt.apply).parameters
    takes_loss = "loss" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    has_diagnostics = callable(getattr(opt, "diagnostics", None))
    if takes_loss and has_diagnostics:
        return opt
    cls = type(opt)
    key = (cls, takes_loss, has_diagnostics)
    if key not in _ADAPTED:
        mixins = (() if takes_loss else (_DropsLoss,)) + (() if has_diagnostics else (_NoDiagnostics,))
        _ADAPTED[key] = type(cls.__name__, (*mixins, cls), {"__module__": cls.__module__,
                                                               "__qualname__": cls.__qualname__})
    opt.__class__ = _ADAPTED[key]
    return opt
