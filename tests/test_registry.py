"""The optimizer registry against its documentation: README's table is the registry, row for row."""

import itertools
import re
from pathlib import Path

import pytest

import optimizers

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_rows() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## Optimizers", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9-]+)` \|.*$", section, re.M)}


def test_readme_table_lists_exactly_the_registry():
    assert sorted(_readme_rows()) == optimizers.names()


@pytest.mark.parametrize("name", optimizers.names())
def test_readme_row_states_every_non_keras_default(name):
    row = _readme_rows()[name]
    for key in optimizers.REGISTRY[name].defaults:
        if key == "nesterov":
            assert "Nesterov" in row
        elif name != "nlcg-pr":  # nlcg-pr's row says "as nlcg-fr"
            assert key.replace("_", " ") in row.replace("_", " "), f"{name}: {key} missing from README row"


@pytest.mark.parametrize("name", optimizers.names())
def test_every_registry_entry_builds_with_its_defaults_and_steps(name):
    import tensorflow as tf

    opt = optimizers.get(name, 0.1)
    w = tf.Variable([1.0, -2.0])
    opt.apply([tf.constant([0.5, 0.5])], [w], loss=tf.constant(1.0))
    # every optimizer's first step moves against the gradient (NLCG's first step is a plain gradient step)
    assert (w.numpy() < [1.0, -2.0]).all()


def test_unknown_hparam_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) rhoo .*valid: .*rho"):
        optimizers.get("rmsprop", 0.1, rhoo=0.9)



# ---- each default in one place, and the resolved defaults that run ids hash ----


def _signature_defaults(cls, skip=("learning_rate", "rule", "name")):
    import inspect

    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not p.empty and k not in skip}


@pytest.mark.parametrize("name", ["nlcg-fr", "nlcg-pr"])
def test_nlcg_defaults_are_the_nlcg_signature_only(name):
    import inspect

    entry = optimizers.REGISTRY[name]
    # fixed_beta came after the ids were pinned: accepted, its default (None: the conjugate rule) no registry default
    signature = _signature_defaults(optimizers.NLCG)
    assert signature.pop("fixed_beta") is None and "fixed_beta" in optimizers.valid_hparams(name)
    assert entry.defaults == signature
    assert not [p for p in inspect.signature(entry.factory).parameters.values() if p.default is not p.empty]
    opt = optimizers.get(name, 0.1)
    assert opt.rule == name[-2:]
    assert {k: getattr(opt, k) for k in entry.defaults} == entry.defaults


def test_lars_defaults_are_the_lars_signature_only():
    import inspect

    entry = optimizers.REGISTRY["lars"]
    signature = _signature_defaults(optimizers.LARS)
    assert entry.defaults == {k: signature[k] for k in ("momentum", "eta", "weight_decay")}
    assert not [p for p in inspect.signature(entry.factory).parameters.values() if p.default is not p.empty]


def test_every_entry_is_a_named_record():
    for entry in optimizers.REGISTRY.values():
        assert isinstance(entry, optimizers.Entry) and callable(entry.factory)
        assert isinstance(entry.defaults, dict) and entry.source


# Written down before the registry became named records: every run id hashes these, so they must not move.
RESOLVED_DEFAULTS = {
    "lamb": {},
    "lars": {"momentum": 0.9, "eta": 0.001, "weight_decay": 0.0},
    "momentum": {"momentum": 0.9, "nesterov": False},
    "nlcg-fr": {"preconditioner": "bfgs", "line_search": "step", "line_search_period": 5,
                "line_search_threshold": 1.0},
    "nlcg-pr": {"preconditioner": "bfgs", "line_search": "step", "line_search_period": 5,
                "line_search_threshold": 1.0},
    "rmsprop": {"rho": 0.9, "momentum": 0.9, "epsilon": 1.0},
    "sgd": {},
    # added with the Nado et al. 2021 baselines (the same rule: they are part of their runs' ids from the start)
    "nesterov": {"momentum": 0.9},
    "adam": {},
    "adamw": {"weight_decay": 0.004},
    # added with issue 28's ablations
    "momentum-bfgs": {"momentum": 0.9},
}


def test_resolved_hparams_of_every_optimizer_are_unchanged():
    from bench.config import RunConfig

    resolved = {name: RunConfig(optimizer=name).resolved_hparams() for name in optimizers.names()}
    assert resolved == RESOLVED_DEFAULTS
    for name, want in RESOLVED_DEFAULTS.items():  # types too: 5 is not 5.0 in a hash
        assert [(k, type(v)) for k, v in resolved[name].items()] == [(k, type(v)) for k, v in want.items()]
    assert RunConfig(optimizer="nlcg-pr", hparams={"line_search": "online"}).resolved_hparams() == {
        **RESOLVED_DEFAULTS["nlcg-pr"], "line_search": "online"}


# ---- hyperparameter rules: types and ranges checked before anything is built ----


def _valid_samples(rule):
    """Values the rule accepts: its closed bounds, a value inside, ints where numbers are expected."""
    if rule.kind == "none":
        return [None]
    if rule.kind == "bool":
        out = [True, False]
    elif rule.kind == "choice":
        out = list(rule.choices)
    elif rule.kind == "integer":
        out = [int(rule.low), int(rule.low) + 3]
    else:
        top = rule.low + 2.0 if rule.high is None else rule.high
        out = [(rule.low + top) / 2, int(rule.low) + 1 if rule.high is None else int(rule.low) if rule.closed[0]
               else 0.5]
        out += [rule.low] if rule.closed[0] else []
        out += [rule.high] if rule.high is not None and rule.closed[1] else []
    return out + ([None] if rule.none else [])


def _invalid_samples(rule):
    """(value, message fragment) pairs the rule refuses."""
    if rule.kind == "none":
        return [(0.1, "is not supported; valid: None")]
    if rule.kind == "bool":
        return [(1, "has type int; valid: True or False"), ("yes", "has type str")]
    if rule.kind == "choice":
        return [("nope", "is not valid; valid: " + ", ".join(rule.choices)), (None, "is not valid")]
    if rule.kind == "integer":
        return [(2.0, "has type float; valid: an integer"), (True, "has type bool"),
                (int(rule.low) - 1, "is out of range; valid: an integer >=")]
    out = [("x", "has type str; valid: a number"), (True, "has type bool; valid: a number"),
           (float("nan"), "is not a finite number"), (float("inf"), "is not a finite number"),
           (rule.low - 0.5 if rule.closed[0] else rule.low, "is out of range; valid: a number")]
    if rule.high is not None:
        out.append((rule.high + 0.5 if rule.closed[1] else rule.high, "is out of range; valid: a number in"))
    return out + ([] if rule.none else [(None, "has type NoneType")])


@pytest.mark.parametrize("name", optimizers.names())
def test_every_hyperparameter_has_a_rule(name):
    assert set(optimizers.HPARAM_RULES[name]) == optimizers.valid_hparams(name)


@pytest.mark.parametrize("name", optimizers.names())
def test_the_defaults_satisfy_the_rules(name):
    import inspect

    factory, defaults = optimizers.REGISTRY[name].factory, optimizers.REGISTRY[name].defaults
    for cls in {factory, type(factory(1.0)).__init__}:  # the factory's own defaults and the class's
        for key, p in inspect.signature(cls).parameters.items():
            if key in optimizers.HPARAM_RULES[name] and p.default is not p.empty:
                optimizers.check_hparams(name, {key: p.default})
    optimizers.check_hparams(name, defaults)


@pytest.mark.parametrize("name", optimizers.names())
def test_every_value_the_rules_accept_the_constructor_accepts(name):
    for key, rule in optimizers.HPARAM_RULES[name].items():
        for value in _valid_samples(rule):
            extra = {"use_ema": True} if key.startswith("ema_") else {}  # Keras checks these only with EMA on
            opt = optimizers.get(name, 0.1, **{key: value}, **extra)
            if key in ("momentum", "rho", "eta", "epsilon", "beta_1", "line_search_threshold") and value is not None:
                assert getattr(opt, key) == pytest.approx(value), (name, key, value)


@pytest.mark.parametrize("name", optimizers.names())
def test_bad_types_and_ranges_are_one_line_errors_naming_the_valid_values(name):
    for key, rule in optimizers.HPARAM_RULES[name].items():
        for value, fragment in _invalid_samples(rule):
            with pytest.raises(ValueError) as e:
                optimizers.get(name, 0.1, **{key: value})
            message = str(e.value)
            assert message.startswith(f"{name}: {key} = {value!r} ") and fragment in message, message
            assert "\n" not in message


def test_messages_read_as_documented():
    with pytest.raises(ValueError) as e:
        optimizers.get("rmsprop", 0.1, rho="x")
    assert str(e.value) == "rmsprop: rho = 'x' has type str; valid: a number in [0, 1)"
    with pytest.raises(ValueError) as e:
        optimizers.get("momentum", 0.1, momentum=1.5)
    assert str(e.value) == "momentum: momentum = 1.5 is out of range; valid: a number in [0, 1)"
    with pytest.raises(ValueError, match=r"^lamb: clipnorm = 0 is out of range; valid: a number > 0 or None$"):
        optimizers.get("lamb", 0.1, clipnorm=0)


def test_ints_are_taken_where_numbers_are_expected():
    assert optimizers.get("sgd", 0.1, momentum=0).momentum == 0.0  # Keras's SGD alone refuses the int 0
    assert optimizers.get("rmsprop", 0.1, epsilon=1).epsilon == 1.0
    assert optimizers.check_hparams("nlcg-fr", {"line_search_period": 3, "line_search_threshold": 2}) == {
        "line_search_period": 3, "line_search_threshold": 2.0}


@pytest.mark.parametrize(("key", "reason"), [("learning_rate", "set by base_lr and the schedule"),
                                             ("name", "optimizer = NAME"),
                                             ("gradient_accumulation_steps", "accumulates gradients itself")])
def test_constructor_arguments_the_harness_sets_are_refused_with_the_reason(key, reason):
    with pytest.raises(ValueError) as e:
        optimizers.get("rmsprop", 0.1, **{key: 0.1})
    assert str(e.value).startswith(f"rmsprop: {key} is not a hyperparameter; ") and reason in str(e.value)


@pytest.mark.parametrize(("sets", "fragment"), [
    (["optimizer=rmsprop", "hparams.rho=x"], "rmsprop: rho = 'x' has type str"),
    (["optimizer=rmsprop", "hparams.learning_rate=0.1"], "learning_rate is not a hyperparameter"),
    (["optimizer=momentum", "hparams.momentum=1.5"], "momentum: momentum = 1.5 is out of range"),
])
def test_the_cli_refuses_bad_hyperparameters_in_one_line_with_exit_code_2(sets, fragment):
    from conftest import run_cli

    proc = run_cli(["train", *(a for s in sets for a in ("--set", s))], timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and fragment in proc.stderr, proc.stderr


# ---- bench perf's default sets: on the registry, as bench/perf listed them before (issue 26) ----

# the lists bench/perf held before they moved to the registry, literally: the independent reference
FORMER_TABLE = ["momentum", "nlcg-fr", "nlcg-pr", "rmsprop", "lars", "lamb"]  # bench perf (the first: baseline)
FORMER_JSON = ["momentum", "nlcg-fr", "nlcg-pr", "rmsprop"]  # bench perf --json
FORMER_QUICK = ["momentum", "nlcg-fr"]  # bench perf --json --quick, and the children's default
FORMER_APPLY = ["momentum", "rmsprop", "nlcg-fr", "nlcg-pr", "lars", "lamb"]  # opt.apply on ResNet-50, bench project


def test_perf_sets_are_the_lists_bench_perf_held():
    assert optimizers.perf_table("table") == FORMER_TABLE
    assert optimizers.perf_table("study") == FORMER_JSON
    assert optimizers.perf_table("quick") == FORMER_QUICK
    assert optimizers.perf_set("table") == FORMER_APPLY
    assert optimizers.perf_set("study") == FORMER_APPLY[:4]  # --quick's opt.apply table
    assert (optimizers.perf_reference(), optimizers.perf_method()) == ("momentum", "nlcg-fr")


def test_perf_sets_nest_and_ranks_are_unique():
    sets = [set(optimizers.perf_set(kind)) for kind in optimizers.PERF_SETS]
    assert all(small < big for small, big in itertools.pairwise(sets))
    ranked = [e.perf_rank for e in optimizers.REGISTRY.values() if e.perf]
    assert len(set(ranked)) == len(ranked) and min(ranked) > 0
    assert all(e.perf in ("", *optimizers.PERF_SETS) for e in optimizers.REGISTRY.values())
    assert optimizers.role(optimizers.perf_reference()) == "baseline"
    assert optimizers.role(optimizers.perf_method()) == "method"
    with pytest.raises(ValueError, match=r"perf set 'all' is unknown; valid: quick, study, table"):
        optimizers.perf_set("all")
