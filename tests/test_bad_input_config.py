"""Bad input in a run config, a ``--set`` override or a sweep file (issue 25): every key the harness reads, every
kind of wrong value (wrong type, a scalar where a table or list belongs, lists of lists, nan and inf, out of
range, empty, a folder outside the results folder) ends as ConfigError: one line naming the file and the key,
exit code 2 from the CLI, nothing trained or written. The bulk runs in process (``config.load``, ``grid.load``);
a representative subset runs the CLI as a user would (TensorFlow's start-up: ~5 s each, two at a time)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from bench import config, grid
from bench.config import ConfigError
from conftest import run_cli

# a small valid run config (synthetic data: no files needed); each case replaces or adds one key
BASE = {"dataset": '"synthetic"', "synthetic_image_size": "8", "synthetic_train_size": "512",
        "synthetic_test_size": "256", "width": "4", "steps": "2", "eval_every_epochs": "0"}
HUGE = "1" + "0" * 30  # an integer TOML reads and no 64-bit field holds


def _toml(tmp_path, top: dict, tables: str = "", name: str = "cfg.toml"):
    """A TOML file in tmp_path: output_dir under tmp_path/out, BASE updated by ``top``, then ``tables``."""
    values = {"output_dir": f'"{tmp_path / "out"}"', **BASE, **top}
    path = tmp_path / name
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()) + tables)
    return path


def _one_line(e: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ---- run configs: every RunConfig field, every kind of wrong value ------------------------------------------

WRONG_BY_TYPE = {
    str: ["3", "true", "1.5", '["a"]', "{ a = 1 }", "1979-05-27", r'"a\u0000b"'],
    int: ['"x"', "true", "1.5", "[1]", "{ a = 1 }", "-1", HUGE, "nan"],
    float: ['"x"', "true", "[1.0]", "{ a = 1 }", "nan", "inf", "-inf", "-1.0", HUGE],
    bool: ["1", '"true"', "[true]", "{ a = 1 }", "0.0"],
    tuple: ["0.5", '"0.5"', "[[0.5]]", '["a"]', "[true]", "[nan]", "[inf]", "[0.5, 0.5]", "[0.8, 0.5]", "[0.0]",
            "[1.0]", "{ a = 1 }"],
    dict: ["3", '"x"', "[1]", "true", "0.5"],
}
# what is wrong beyond the type: empty, out of range, a folder outside <output_dir>
OUT_OF_RANGE = {
    "sweep": ['""', '"."', '".."', '"../x"', '"/abs"', '"a/b"', r'"a\\b"', '"-x"', '" x"', '".hidden"'],
    "output_dir": ['""', '"  "'],
    "dataset": ['"mnist"', '""'], "model": ['"vgg"'], "optimizer": ['"nope_opt"', '""'], "bn_eval": ['"ema"'],
    "precision": ['"float16"'], "allreduce_compression": ['"bf16"'], "model_hparams": ["{ filters = 3 }"],
    "image_size": ["2", "513"], "seed": ["4294967296"], "validation_size": ["-5"], "train_subset": ["-5"],
    "bn_momentum": ["0.0", "1.0"], "weight_decay": ["-1e-4"], "label_smoothing": ["1.0"],
    "base_lr": ["0.0"], "init_lr": ["0"], "warmup_fraction": ["1.0"], "warmup_power": ["0.0", "-0.5"],
    "decay_factor": ["0.0", "1.5"], "ema_decay": ["1.0", "0"], "target_top1": ["1.5", "55"],
    **{k: ["0"] for k in ("global_batch", "per_worker_batch", "reference_batch", "width", "eval_batch",
                          "precise_bn_images", "precise_bn_batch", "log_every_steps", "synthetic_image_size",
                          "synthetic_channels", "synthetic_classes", "synthetic_train_size", "synthetic_test_size")},
}
for k, more in {"epochs": ["1e308"], "eval_every_epochs": ["1e308"], "checkpoint_every_epochs": ["1e300"],
                "synthetic_image_size": ["513", "100000"], "synthetic_train_size": ["100000000"],
                "synthetic_classes": ["100000000"]}.items():  # budgets past int64 steps, images that do not fit
    OUT_OF_RANGE[k] = OUT_OF_RANGE.get(k, []) + more
# each field's valid neighbour: the positive control
VALID = {
    "sweep": '"ok_name-2"', "output_dir": '"elsewhere"', "dataset": '"cifar10"', "data_dir": '"/nowhere"',
    "augment": "false", "image_size": "4", "validation_size": "10", "train_subset": "100", "synthetic_image_size": "4",
    "synthetic_channels": "1", "synthetic_classes": "2", "synthetic_train_size": "256", "synthetic_test_size": "128",
    "model": '"resnet14"', "width": "8", "bn_momentum": "0.9", "weight_decay": "0", "label_smoothing": "0.1",
    "optimizer": '"rmsprop"', "hparams": "{ momentum = 0.5 }", "global_batch": "256", "per_worker_batch": "64",
    "epochs": "1.5", "steps": "0", "base_lr": "0.05", "reference_batch": "128", "init_lr": "0.01",
    "warmup_fraction": "0", "warmup_power": "2", "decay_fractions": "[0.25, 0.75]", "decay_factor": "1",
    "eval_every_epochs": "0.5", "eval_batch": "10", "bn_eval": '"moving"', "precise_bn_images": "1",
    "precise_bn_batch": "1", "eval_ema": "true", "ema_decay": "0.5", "log_every_steps": "3", "target_top1": "1.0",
    "checkpoint_every_epochs": "0.5", "tensorboard": "false", "save_model": "true", "seed": "4294967295",
    "trial": "3",
    "precision": '"mixed_bfloat16"', "jit_compile": "true",
    "allreduce_compression": '"fp16"', "model_hparams": "{}",
}
TYPES = {k: config._TYPES[k] if config._TYPES[k] in WRONG_BY_TYPE else dict if k == "hparams" else tuple
         for k in config.FIELDS}
OUT_OF_RANGE["trial"] = ["-2"]  # -1 is valid there: not a search's trial
RUN_CASES = [(k, v) for k in config.FIELDS for v in WRONG_BY_TYPE[TYPES[k]] + OUT_OF_RANGE.get(k, [])
             if not (k == "trial" and v == "-1")]
# hyperparameters (optimizers.check_hparams' rules, then the optimizer built once): (optimizer, [hparams] body)
HPARAM_CASES = [
    ("momentum", 'momentum = "x"'), ("momentum", "momentum = { a = 1 }"), ("momentum", "momentum = [0.9]"),
    ("momentum", "momentum = nan"), ("momentum", "momentum = inf"), ("momentum", "momentum = 1.5"),
    ("momentum", "momentum = true"), ("momentum", f"momentum = {HUGE}"), ("momentum", "nesterov = 1"),
    ("momentum", "betaz = 0.5"), ("momentum", "learning_rate = 0.1"), ("momentum", "clipnorm = 1.0\nclipvalue = 1.0"),
    ("momentum", "ema_overwrite_frequency = 1.5"), ("rmsprop", "epsilon = 0"), ("rmsprop", "rho = -inf"),
    ("nlcg-fr", 'line_search = "nope"'), ("nlcg-fr", "line_search_period = 0"), ("nlcg-fr", "weight_decay = 0.1"),
    ("lamb", "beta_1 = [0.9]"), ("lars", "eta = -1"),
]


@pytest.mark.parametrize("key, value", RUN_CASES, ids=[f"{k}={v}" for k, v in RUN_CASES])
def test_every_bad_run_config_value_is_one_line_naming_file_and_key(tmp_path, key, value):
    path = _toml(tmp_path, {key: value, **({"steps": "0"} if key == "epochs" else {})})  # steps > 0: epochs unread
    with pytest.raises(ConfigError) as e:
        config.load(path)
    _one_line(e, str(path), key)


@pytest.mark.parametrize("key", list(config.FIELDS))
def test_each_fields_valid_neighbour_loads(tmp_path, key):
    cfg = config.load(_toml(tmp_path, {key: VALID[key]}))
    assert getattr(cfg, key) is not None


def test_a_budget_is_needed_and_the_dataset_decides_what_is_read(tmp_path):
    for top, words in (({"steps": "0", "epochs": "0"}, ["epochs", "steps"]),
                       ({"dataset": '"imagenet"', "image_size": "8"}, ["image_size", "imagenet"]),
                       ({"dataset": '"imagenet"', "train_subset": "8"}, ["train_subset", "imagenet"])):
        with pytest.raises(ConfigError) as e:
            config.load(_toml(tmp_path, top))
        _one_line(e, *words)


@pytest.mark.parametrize("optimizer, body", HPARAM_CASES, ids=[f"{o}:{b}" for o, b in HPARAM_CASES])
def test_every_bad_hyperparameter_is_one_line_naming_it(tmp_path, optimizer, body):
    path = _toml(tmp_path, {"optimizer": f'"{optimizer}"'}, f"[hparams]\n{body}\n")
    with pytest.raises(ConfigError) as e:
        config.load(path)
    _one_line(e, str(path), "hparams", body.split(" =")[0])


def test_good_hyperparameters_load(tmp_path):
    for optimizer, body in (("momentum", "momentum = 0.5\nnesterov = true"), ("rmsprop", "epsilon = 1e-3"),
                            ("nlcg-fr", 'line_search = "online"\nline_search_period = 2'), ("lamb", "beta_1 = 0")):
        cfg = config.load(_toml(tmp_path, {"optimizer": f'"{optimizer}"'}, f"[hparams]\n{body}\n"))
        assert cfg.hparams


SET_CASES = [
    (["hparams=3"], "hparams"), (['hparams="x"'], "hparams"), (["hparams=[1]"], "hparams"),
    (["hparams={momentum = 0.5}", "hparams=3", "hparams.momentum=0.5"], "hparams"), (["hparams.=1"], "hparams"),
    (["hparams.momentum=x"], "momentum"), (["hparams.momentum={a=1}"], "momentum"),
    (["hparams.momentum=nan"], "momentum"), (["base_lr=inf"], "base_lr"), (["init_lr=nan"], "init_lr"),
    (["sweep=.."], "sweep"), (["sweep=a/b"], "sweep"), (['output_dir=""'], "output_dir"),
    (["epochs=[[1]]"], "epochs"), (["decay_fractions=[[0.5]]"], "decay_fractions"),
    (["decay_fractions=x"], "decay_fractions"), (["global_batch=true"], "global_batch"), (["optimizer=3"], "optimizer"),
    (["warmup_power=0"], "warmup_power"), (["seed=-1"], "seed"), (["epochz=1"], "epochz"), (["epochs"], "epochs"),
]


@pytest.mark.parametrize("overrides, key", SET_CASES, ids=[" ".join(o) for o, _ in SET_CASES])
def test_every_bad_set_override_is_one_line_naming_the_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError) as e:
        config.load(_toml(tmp_path, {}), overrides)
    _one_line(e, key)
    with pytest.raises(ConfigError) as e:  # without a file too
        config.load(None, overrides)
    _one_line(e, key)


def test_good_set_overrides_load(tmp_path):
    cfg = config.load(_toml(tmp_path, {}), ["hparams={momentum = 0.5}", "hparams.nesterov=true", "base_lr=0.2",
                                            "sweep=other", "decay_fractions=[0.5]", "warmup_power=1"])
    assert (cfg.hparams, cfg.base_lr, cfg.sweep, cfg.decay_fractions) == \
        ({"momentum": 0.5, "nesterov": True}, 0.2, "other", (0.5,))


def test_a_run_config_with_any_sweep_table_says_it_is_a_sweep_file(tmp_path):
    for table in config.SWEEP_TABLES:
        path = _toml(tmp_path, {}, f"[{table}]\nx = 1\n")
        with pytest.raises(ConfigError) as e:
            config.load(path)
        _one_line(e, f"[{table}]", f"python -m bench sweep {path}")


# ---- sweep files: every table and key ---------------------------------------------------------------------

GRID = '[grid]\noptimizer = ["momentum", "nlcg-fr"]\nglobal_batch = [64, 128]\nseed = [0, 1, 2]\n'
SWEEP_CASES = {
    # top level
    "unknown top-level key": ("lanch = 3\n" + GRID, ["lanch", "[launch]"]),
    "misspelt table": (GRID + "[optimizer_override.lamb]\nbase_lr = 0.1\n", ["optimizer_override", "valid"]),
    "bad base value": ("base_lr = inf\n" + GRID, ["base_lr = inf", "finite"]),
    "hparams a scalar": ("hparams = 3\n" + GRID, ["hparams = 3", "expected dict"]),
    "hparams a string": ('hparams = "x"\n' + GRID, ["hparams = 'x'"]),
    "sweep leaves the folder": ('sweep = ".."\n' + GRID, ["sweep = '..'", "plain folder name"]),
    # [grid] / [[grid]]
    "grid a scalar": ("grid = 3\n", ["[grid] = 3", "not a table"]),
    "grid a string": ('grid = "x"\n', ["[grid] = 'x'", "not a table"]),
    "grid a list of scalars": ("grid = [1, 2]\n", ["[[grid]] table 1 = 1", "not a table"]),
    "grid an empty list": ("grid = []\n", ["grid = []", "no tables"]),
    "[[grid]] with a non-table item": ("grid = [{ seed = [0] }, 3]\n", ["[[grid]] table 2 = 3", "not a table"]),
    "empty [grid]": ("[grid]\n", ["[grid] is empty"]),
    "empty [[grid]] among others": ("[[grid]]\nseed = [0]\n[[grid]]\n", ["[[grid]] table 2 is empty"]),
    "grid value a scalar": ("[grid]\nseed = 0\n", ["seed = 0", "non-empty list"]),
    "grid value an empty list": ("[grid]\nseed = []\n", ["seed = []", "non-empty list"]),
    "grid value a table": ("[grid]\nseed = { a = 1 }\n", ["seed = {'a': 1}", "non-empty list"]),
    "grid list of lists": ("[grid]\nglobal_batch = [[64]]\n", ["global_batch = [64]", "expected int"]),
    "grid optimizer list of lists": ('[grid]\noptimizer = [["momentum"]]\n', ["optimizer = ['momentum']"]),
    "grid optimizer a table": ("[grid]\noptimizer = [{ a = 1 }]\n", ["optimizer = {'a': 1}"]),
    "grid bool seed": ("[grid]\nseed = [true]\n", ["seed = True", "expected int"]),
    "grid nan": ("[grid]\nepochs = [nan]\n", ["epochs = nan", "finite"]),
    "grid decay_fractions flat": ("[grid]\ndecay_fractions = [0.5, 0.7]\n", ["decay_fractions = 0.5", "list of such"]),
    "grid hparams": ("[grid]\nhparams = [{}]\n", ["hparams", "optimizer_hparams"]),
    "grid unknown field": ("[grid]\nepochz = [1]\n", ["epochz", "not a run config field"]),
    "grid sweep": ('[grid]\nsweep = ["a", "b"]\n', ["sweep", "[grid]", "one folder"]),
    "grid output_dir": ('[grid]\noutput_dir = ["a"]\n', ["output_dir", "one folder"]),
    # [optimizer_hparams]
    "optimizer_hparams a scalar": ("optimizer_hparams = 3\n" + GRID, ["optimizer_hparams = 3", "not a table"]),
    "optimizer_hparams entry a scalar": (GRID + "[optimizer_hparams]\nlamb = 3\n", ["lamb = 3", "not a table"]),
    "optimizer_hparams entry a list": (GRID + "[optimizer_hparams]\nmomentum = [1]\n", ["momentum = [1]"]),
    "optimizer_hparams bad value": (GRID + '[optimizer_hparams.momentum]\nmomentum = "x"\n', ["momentum = 'x'"]),
    "optimizer_hparams a table value": (GRID + "[optimizer_hparams.momentum]\nmomentum = { a = 1 }\n",
                                        ["momentum = {'a': 1}"]),
    "optimizer_hparams nan": (GRID + "[optimizer_hparams.momentum]\nmomentum = nan\n", ["momentum = nan"]),
    "optimizer_hparams unknown optimizer": (GRID + "[optimizer_hparams.nope_opt]\nx = 1\n", ["nope_opt", "valid"]),
    "optimizer_hparams for no run": (GRID + "[optimizer_hparams.lamb]\nbeta_1 = 0.5\n", ["optimizer_hparams.lamb",
                                                                                        "no run"]),
    # [optimizer_overrides]
    "optimizer_overrides a scalar": ("optimizer_overrides = 3\n" + GRID, ["optimizer_overrides = 3", "not a table"]),
    "optimizer_overrides entry a scalar": (GRID + "[optimizer_overrides]\nlamb = 3\n", ["lamb = 3", "not a table"]),
    "optimizer_overrides empty list": (GRID + "[optimizer_overrides.momentum]\nbase_lr = []\n",
                                       ["base_lr = []", "non-empty"]),
    "optimizer_overrides list of lists": (GRID + "[optimizer_overrides.momentum]\nbase_lr = [[0.1]]\n",
                                          ["base_lr = [0.1]"]),
    "optimizer_overrides inf": (GRID + "[optimizer_overrides.momentum]\nbase_lr = inf\n", ["base_lr = inf"]),
    "optimizer_overrides optimizer": (GRID + '[optimizer_overrides.momentum]\noptimizer = "sgd"\n',
                                      ["cannot set optimizer"]),
    "optimizer_overrides hparams": (GRID + "[optimizer_overrides.momentum]\nhparams = { momentum = 0.5 }\n",
                                    ["hparams", "optimizer_hparams"]),
    "optimizer_overrides output_dir": (GRID + '[optimizer_overrides.momentum]\noutput_dir = "x"\n',
                                       ["output_dir", "one folder"]),
    "optimizer_overrides unknown field": (GRID + "[optimizer_overrides.momentum]\nbase_lrr = 0.1\n", ["base_lrr"]),
    "optimizer_overrides for no run": (GRID + "[optimizer_overrides.lamb]\nbase_lr = 0.1\n",
                                       ["optimizer_overrides.lamb", "no run"]),
    # [launch]
    "launch a scalar": ("launch = 3\n" + GRID, ["[launch]", "valid: workers = N"]),
    **{f"launch {v}": (GRID + f"[launch]\n{v}\n", ["[launch]", "valid: workers = N"]) for v in (
        "workers = true", "workers = 1.5", 'workers = "2"', "workers = { a = 1 }", "workers = [2]", "workers = 0",
        "pack = -1", "max_crashes = false", "threads = 2")},
    # [claim]
    "claim a scalar": ("claim = 3\n" + GRID, ["[claim]", "valid keys"]),
    "claim a string": ('claim = "x"\n' + GRID, ["[claim]", "valid keys"]),
    "claim empty": (GRID + "[claim]\n", ["[claim] is empty"]),
    "claim unknown key": (GRID + "[claim]\npooled = true\n", ["pooled", "valid keys"]),
    **{f"claim {v}": (GRID + f"[claim]\n{v}\n", ["[claim]", v.split(" =")[0]]) for v in (
        "optimizer = 3", 'optimizer = ["nlcg-fr"]', "optimizer = { a = 1 }", 'optimizer = "nope"', "optimizer = true",
        'baseline = ["momentum"]', "baseline = 3", 'baseline = "nope"', 'global_batch = "x"', "global_batch = true",
        "global_batch = 64.0", "global_batch = [64]", "global_batch = 999", "epochs = 3", "epochs = [[3]]",
        'epochs = ["x"]', "epochs = [true]", "epochs = []", "epochs = [nan]", "epochs = [99]", "epochs = [3, 3]",
        "epochs = { a = 1 }", "confirm_seeds = 3", "confirm_seeds = [[0]]", 'confirm_seeds = ["0"]',
        "confirm_seeds = [true]", "confirm_seeds = [0.0]", "confirm_seeds = [9]", "confirm_seeds = [0, 1, 2]",
        "confirm_seeds = [2, 2]", "confirm_seeds = { a = 1 }")},
    "claim against itself": (GRID + '[claim]\noptimizer = "momentum"\nbaseline = "momentum"\n',
                             ["optimizer = 'momentum' and baseline = 'momentum'", "against itself"]),
    "claim a baseline against the best": (GRID + '[claim]\noptimizer = "momentum"\n',
                                          ["optimizer = 'momentum'", "baselines = [...]", "is a baseline"]),
    "claim an optimizer not run": (GRID + '[claim]\noptimizer = "nlcg-pr"\n', ["optimizer = 'nlcg-pr'", "not run"]),
    "claim a baseline not run": (GRID + '[claim]\nbaseline = "rmsprop"\n', ["baseline = 'rmsprop'", "no baseline"]),
}
SWEEP_GOOD = {  # the valid neighbours
    "grid": GRID, "[[grid]]": "[[grid]]\nseed = [0]\n[[grid]]\nseed = [1]\nglobal_batch = [64]\n",
    "no grid": "", "optimizer_hparams": GRID + "[optimizer_hparams.momentum]\nmomentum = 0.5\n",
    "optimizer_overrides": GRID + "[optimizer_overrides.momentum]\nbase_lr = [0.05, 0.1]\n",
    "overrides of the file's optimizer": 'optimizer = "lamb"\n[grid]\nseed = [0]\n[optimizer_overrides.lamb]\n'
                                         "base_lr = [0.01, 0.02]\n",
    "launch": GRID + "[launch]\nworkers = 2\npack = 1\nmax_crashes = 3\n",
    "claim": GRID + '[claim]\noptimizer = "nlcg-fr"\nbaseline = "best"\nglobal_batch = 64\nepochs = [3]\n'
                    "confirm_seeds = [2]\n",
    "claim a named baseline": GRID + '[claim]\noptimizer = "momentum"\nbaseline = "nlcg-fr"\n',
}


def _sweep(tmp_path, body: str):
    """A sweep file: output_dir under tmp_path/out, the small run config (steps unset: a 3-epoch budget), body."""
    path = tmp_path / "toy.toml"
    top = {"output_dir": f'"{tmp_path / "out"}"', **{k: v for k, v in BASE.items() if k != "steps"}}
    path.write_text("".join(f"{k} = {v}\n" for k, v in top.items()) + body)
    return path


@pytest.mark.parametrize("name", list(SWEEP_CASES))
def test_every_bad_sweep_file_is_one_line_naming_file_and_key(tmp_path, name):
    body, words = SWEEP_CASES[name]
    path = _sweep(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        grid.load(path)
    _one_line(e, str(path), *words)


@pytest.mark.parametrize("name", list(SWEEP_GOOD))
def test_each_sweep_tables_valid_neighbour_loads(tmp_path, name):
    assert grid.load(_sweep(tmp_path, SWEEP_GOOD[name])).runs


def test_the_files_optimizer_gets_its_overrides(tmp_path):
    # [optimizer_overrides.NAME] of the file's own optimizer (not a [grid] axis) was silently ignored
    s = grid.load(_sweep(tmp_path, SWEEP_GOOD["overrides of the file's optimizer"]))
    assert sorted(c.base_lr for c in s.runs) == [0.01, 0.02]


@pytest.mark.parametrize("item, words", [
    ("optimizer=rmsprop", ["optimizer", "[grid] axis"]), ("seed=4", ["seed", "[grid] axis"]),
    ("base_lr=0.3", ["[optimizer_overrides.momentum]", "base_lr"]),
    ("hparams.momentum=0.1", ["[optimizer_hparams.momentum]", "momentum"]),
    ("hparams={momentum = 0.1}", ["[optimizer_hparams.momentum]", "momentum"]),
    ("hparams=3", ["hparams = 3"]), ("warmup_power=-1", ["warmup_power"]),
])
def test_a_set_the_runs_would_not_take_or_a_bad_one_is_refused(tmp_path, item, words):
    path = _sweep(tmp_path, GRID + "[optimizer_overrides.momentum]\nbase_lr = [0.1]\n"
                  "[optimizer_hparams.momentum]\nmomentum = 0.5\n")
    with pytest.raises(ConfigError) as e:
        grid.load(path, [item])
    _one_line(e, str(path), *words)
    assert grid.load(path, ["warmup_power=1"]).runs  # a field the file does not vary


# ---- grid points that are one run ---------------------------------------------------------------------------

@pytest.mark.parametrize("body, field, why", [
    ("[grid]\neval_every_epochs = [0.5, 1]\n", "eval_every_epochs", "NOT_TRAINING"),
    ("[grid]\ntarget_top1 = [0.5, 0.6]\n", "target_top1", "not part of a run's identity"),
    ("[grid]\nlog_every_steps = [1, 2]\n", "log_every_steps", "not part of a run's identity"),
    ("[grid]\nimage_size = [0, 8]\n", "image_size", "native size"),
    ("[grid]\nema_decay = [0.99, 0.999]\n", "ema_decay", "eval_ema"),
    ("per_worker_batch = 64\n[grid]\nprecise_bn_batch = [128, 256]\n", "precise_bn_batch", "min(per_worker_batch"),
    ('bn_eval = "moving"\n[grid]\nprecise_bn_images = [64, 128]\n', "precise_bn_images", "bn_eval"),
    ("[[grid]]\nseed = [0]\neval_every_epochs = [0.5]\n[[grid]]\nseed = [0, 1]\neval_every_epochs = [1]\n",
     "eval_every_epochs", "NOT_TRAINING"),
    ("[grid]\nseed = [0]\n[optimizer_overrides.momentum]\ntarget_top1 = [0.1, 0.2]\n", "target_top1", "identity"),
])
def test_grid_points_that_are_one_run_are_refused_naming_the_field_and_why(tmp_path, body, field, why):
    path = _sweep(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        grid.load(path)
    _one_line(e, str(path), field, why, "one run")


def test_a_non_synthetic_grid_of_synthetic_fields_is_one_run(tmp_path):
    path = tmp_path / "fm.toml"
    path.write_text(f'output_dir = "{tmp_path / "out"}"\ndataset = "fashion_mnist"\n[grid]\n'
                    "synthetic_classes = [5, 10]\n")
    with pytest.raises(ConfigError) as e:
        grid.load(path)
    _one_line(e, "synthetic_classes", "only dataset = 'synthetic' reads it")


def test_identical_repeated_points_are_still_one_run(tmp_path):
    s = grid.load(_sweep(tmp_path, "[[grid]]\nseed = [0, 0, 1]\neval_every_epochs = [1]\n"
                                   "[[grid]]\nseed = [1, 2]\neval_every_epochs = [1.0]\n"))
    assert [c.seed for c in s.runs] == [0, 1, 2]
    # values that differ and train differently stay apart
    assert len(grid.load(_sweep(tmp_path, "[grid]\nimage_size = [0, 4]\n")).runs) == 2


def test_the_claims_baselines_are_the_reports(tmp_path):
    """The roles a sweep declares (bench.study, from the registry) are the ones the report reads (plots.stats)."""
    import pandas as pd

    from plots import stats

    s = grid.load(_sweep(tmp_path, '[grid]\noptimizer = ["momentum", "nlcg-fr", "rmsprop"]\n'))
    study = {"claim": s.claim, "roles": s.roles}
    runs = pd.DataFrame({"optimizer": ["momentum", "nlcg-fr", "rmsprop"]})
    assert stats.roles(runs, study) == stats.roles(runs) == s.roles  # declared, and the legacy rows' alike
    assert stats.baselines(s.roles, study) == s.claim["baselines"] == ["momentum", "rmsprop"]


# ---- the CLI, as a user runs it: one line on stderr, exit 2, nothing written ---------------------------------

CLI_CASES = {
    "train: hparams = 3": ("train", {"hparams": "3"}, "", [], "hparams"),
    "train: base_lr = inf": ("train", {"base_lr": "inf"}, "", [], "base_lr"),
    "train: sweep = '..'": ("train", {"sweep": '".."'}, "", [], "sweep"),
    "train: decay_fractions of strings": ("train", {"decay_fractions": '["a"]'}, "", [], "decay_fractions"),
    "train: global_batch = true": ("train", {"global_batch": "true"}, "", [], "global_batch"),
    "train: a bad hyperparameter": ("train", {}, '[hparams]\nmomentum = "x"\n', [], "momentum"),
    "train: --set hparams=3": ("train", {}, "", ["--set", "hparams=3"], "hparams"),
    "train: --set warmup_power=0": ("train", {}, "", ["--set", "warmup_power=0"], "warmup_power"),
    "sweep: [optimizer_overrides] lamb = 3": ("sweep", GRID + "[optimizer_overrides]\nlamb = 3\n", "lamb"),
    "sweep: [optimizer_hparams] lamb = 3": ("sweep", GRID + "[optimizer_hparams]\nlamb = 3\n", "lamb"),
    "sweep: confirm_seeds = [[0]]": ("sweep", GRID + "[claim]\nconfirm_seeds = [[0]]\n", "confirm_seeds"),
    "sweep: claim against itself": ("sweep", GRID + '[claim]\noptimizer = "rmsprop"\nbaseline = "rmsprop"\n',
                                    "baseline"),
    "sweep: eval_every_epochs = [0.5, 1]": ("sweep", "[grid]\neval_every_epochs = [0.5, 1]\n", "eval_every_epochs"),
    "sweep: grid = 3": ("sweep", "grid = 3\n", "grid"),
    "sweep: unknown top-level key": ("sweep", "lanch = 3\n" + GRID, "lanch"),
    "sweep: [launch] workers = true": ("sweep", GRID + "[launch]\nworkers = true\n", "workers"),
}


@pytest.mark.slow
def test_the_cli_says_one_line_exits_2_and_writes_nothing(tmp_path):
    """Every CLI case, two at a time (one test, so pytest-xdist's workers do not each start them all)."""
    cases = {}
    for n, (name, case) in enumerate(CLI_CASES.items()):
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        if case[0] == "train":
            _, top, tables, extra, _ = case
            args = ["train", "--config", str(_toml(folder, top, tables)), *extra]
        else:
            args = ["sweep", str(_sweep(folder, case[1])), "--dry-run"]
        cases[name] = (folder, args, sorted(folder.iterdir()))
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(cases, pool.map(lambda c: run_cli(c[1]), cases.values()), strict=True))
    for name, p in done.items():
        folder, _, before = cases[name]
        lines = p.stderr.splitlines()
        assert "Traceback" not in p.stderr, (name, p.stderr[-3000:])
        assert p.returncode == 2, (name, p.returncode, p.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, p.stderr)
        assert CLI_CASES[name][-1] in lines[0] and str(folder) in lines[0], (name, lines[0])
        assert sorted(folder.iterdir()) == before and not (folder / "out").exists(), name  # nothing written
    assert not (tmp_path / "out").exists()  # sweep = ".." would have written beside the case folders
