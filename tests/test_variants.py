"""Hyperparameter axes and named variants in a sweep file (bench.grid, issue 28): a "hparams.NAME" axis trains what
[optimizer_hparams] would (the same run ids), a variant's runs are found again from their rows' config JSON alone
(bench.study.memberships), and every refusal is one line naming the value and what is valid."""

import json

import pytest

from bench import grid, study
from bench.config import ConfigError

TINY = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
eval_every_epochs = 0
steps = 4
"""


def _write(tmp_path, body, name="var.toml"):
    path = tmp_path / name
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\n{body}')
    return path


ABLATION = """
[[grid]]
global_batch = [64, 128]
optimizer = ["momentum", "nlcg-fr"]
seed = [0, 1]

[[grid]]
variant = "no line search"
global_batch = [128]
optimizer = ["nlcg-fr"]
seed = [0, 1]
"hparams.line_search" = ["none"]

[[grid]]
variant = "momentum 0.86"
global_batch = [128]
optimizer = ["momentum"]
seed = [0, 1]
"hparams.momentum" = [0.86]

[[grid]]
variant = "rates"
global_batch = [128]
optimizer = ["momentum"]
seed = [0, 1]
base_lr = [0.05, 0.1]

[[grid]]
variant = "preconditioned momentum"
compare = ["momentum", "nlcg-fr"]
global_batch = [128]
optimizer = ["momentum-bfgs"]
seed = [0]
"""


def test_a_hyperparameter_axis_trains_what_optimizer_hparams_would(tmp_path):
    axis = grid.load(_write(tmp_path, '[grid]\noptimizer = ["nlcg-fr"]\n"hparams.line_search" = ["none", "step"]\n'
                                      '"hparams.preconditioner" = ["none"]\n'))
    assert [(c.hparams["line_search"], c.hparams["preconditioner"]) for c in axis.runs] == [("none", "none"),
                                                                                          ("step", "none")]
    for value in ("none", "step"):  # the reference: the same run written with the table that existed before
        table = grid.load(_write(tmp_path, f'optimizer = "nlcg-fr"\n[optimizer_hparams.nlcg-fr]\nline_search = '
                                           f'"{value}"\npreconditioner = "none"\n', name=f"t{value}.toml"))
        assert table.runs[0].run_id(1) in {c.run_id(1) for c in axis.runs}
    assert "hparams.line_search" in axis.tuning and axis.variants == {}


def test_variants_are_recorded_and_found_again_from_the_rows_config_alone(tmp_path):
    sweep = grid.load(_write(tmp_path, ABLATION))
    by_id = {c.run_id(1): c for c in sweep.runs}
    # the study's own 8 runs, 2 + 2 + 1 new variant runs, and the rate 0.1 at 128 is the study's momentum run
    assert len(sweep.runs) == 8 + 2 + 2 + 2 + 1
    found = {}
    for rid, c in by_id.items():
        d = json.loads(json.dumps(c.to_dict()))  # what a runs row's config column holds
        found[rid] = study.memberships(d, json.loads(json.dumps(sweep.variants)))
    own = {rid for rid, (is_own, _) in found.items() if is_own}
    assert {by_id[r].run_id(1) for r in own} == {c.run_id(1) for c in sweep.runs
                                                   if c.optimizer in ("momentum", "nlcg-fr")
                                                   and c.hparams.get("line_search") is None
                                                   and c.hparams.get("momentum") is None and c.base_lr == 0.1}
    named = {rid: names for rid, (_, names) in found.items() if names}
    assert sorted(by_id[r].hparams.get("line_search") for r, n in named.items() if n == ["no line search"]) == \
        ["none", "none"]
    both = [r for r, (is_own, names) in found.items() if is_own and names]
    assert {(by_id[r].optimizer, by_id[r].global_batch, by_id[r].base_lr) for r in both} == {("momentum", 128, 0.1)}
    assert all(found[r][1] == ["rates"] for r in both)
    assert sweep.variants["variants"]["no line search"]["compare"] == ["nlcg-fr"]
    assert sweep.variants["variants"]["momentum 0.86"]["compare"] == ["momentum", "nlcg-fr"]
    assert sweep.variants["variants"]["preconditioned momentum"]["compare"] == ["momentum", "nlcg-fr"]
    # the claim is declared on the study's own runs: its default batch is theirs, not a variant's
    assert sweep.claim["global_batch"] == 128 and sweep.claim["optimizer"] == "nlcg-fr"
    # no variants declared: every run is the study's
    assert study.memberships({"optimizer": "momentum"}, None) == (True, [])


def test_study_json_records_the_variants(tmp_path):
    sweep = grid.load(_write(tmp_path, ABLATION))
    path = study.declare(sweep, "var.toml", "2026-12-04T00:00:00")
    doc = json.loads(path.read_text())
    assert doc["variants"] == json.loads(json.dumps(sweep.variants))
    assert study.declare(sweep, "var.toml", "2026-12-04T01:00:00") == path  # unchanged: not re-declared
    assert "previous" in json.loads(path.read_text()) and not json.loads(path.read_text())["previous"]


REFUSALS = [
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\ncompare = ["momentum"]\noptimizer = ["rmsprop"]\n',
     "compare", "variant"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = " x"\noptimizer = ["rmsprop"]\n', "variant", "name"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = 3\noptimizer = ["rmsprop"]\n', "variant = 3", "name"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = "v"\ncompare = ["nope"]\noptimizer = ["rmsprop"]\n',
     "compare", "optimizers"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = "v"\ncompare = ["rmsprop"]\noptimizer = ["rmsprop"]\n',
     "rmsprop has no runs", "valid: some of momentum"),
    ('[[grid]]\nvariant = "v"\noptimizer = ["rmsprop"]\n', "every [[grid]] table", "valid: at least one table"),
    ('[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = "v"\ncompare = ["momentum"]\noptimizer = ["rmsprop"]\n'
     '[[grid]]\nvariant = "v"\ncompare = ["momentum", "rmsprop"]\nseed = [1]\noptimizer = ["rmsprop"]\n',
     "variant 'v' has compare", "one list"),
    ('[grid]\noptimizer = ["momentum"]\n"hparams.momentum" = [0.5]\n[optimizer_hparams.momentum]\nmomentum = 0.6\n',
     "hparams.momentum", "one of them"),
    ('[grid]\noptimizer = ["momentum"]\n"hparams." = [0.5]\n', "'hparams.'", "hparams.NAME"),
    ('[grid]\noptimizer = ["momentum"]\n"hparams.betaz" = [0.5]\n', "betaz", "momentum"),
    ('[grid]\noptimizer = ["momentum"]\n"hparams.momentum" = 0.5\n', "hparams.momentum = 0.5", "non-empty list"),
    ('validation_size = 64\n[search]\ntrials = 2\nconfirm_seeds = [1]\n[[grid]]\noptimizer = ["momentum"]\n[[grid]]\nvariant = "v"\n'
     'optimizer = ["rmsprop"]\n', "variant ('v')", "a sweep file of its own"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[f"case{i}" for i in range(len(REFUSALS))])
def test_every_bad_variant_or_hyperparameter_axis_is_one_line(tmp_path, case):
    body, *words = case
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        grid.load(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message


def test_set_of_a_hyperparameter_axis_is_refused(tmp_path):
    path = _write(tmp_path, '[grid]\noptimizer = ["momentum"]\n"hparams.momentum" = [0.5, 0.6]\n')
    for item in ("hparams.momentum=0.7", "hparams={momentum = 0.7}"):
        with pytest.raises(ConfigError, match=r"hparams\.momentum is a \[grid\] axis"):
            grid.load(path, [item])
    assert len(grid.load(path, ["base_lr=0.2"]).runs) == 2
