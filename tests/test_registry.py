"""The optimizer registry against its documentation: README's table is the registry, row for row."""

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
    for key in optimizers.REGISTRY[name][1]:
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
