"""Bring your own optimizer, model and data set (bench.components): the worked example in examples/plugin/
installed into the venv and run as a user runs it (``sweep --workers 1 --pack 2``: the mpirun re-launch, then
``report``), the same optimizer by ``"module:attribute"`` from a folder on PYTHONPATH, every bad plug-in
through the CLI (exit 2, one line naming the reference), a plug-in optimizer's slots through checkpoint and
resume, and the built-in baselines of Nado et al. 2021."""

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, requires_horovod, run_cli

EXAMPLE = ROOT / "examples" / "plugin"
PACKAGE = EXAMPLE / "nlcg_bench_example"
SWEEP = EXAMPLE / "sweep.toml"
# the example's three components, as its pyproject.toml registers them
NAMES = {"optimizer": "sign-momentum", "model": "small-cnn", "dataset": "fashion-coarse"}
# a tiny run of the example's three: seconds
TINY = ["--set", f"optimizer={NAMES['optimizer']}", "--set", f"model={NAMES['model']}", "--set",
        f"dataset={NAMES['dataset']}", "--set", "image_size=8", "--set", "steps=4", "--set", "global_batch=128",
        "--set", "eval_every_epochs=0", "--set", "precise_bn_images=512", "--set", "model_hparams.filters=4"]


def _installed() -> bool:
    try:
        dist = importlib.metadata.distribution("nlcg-bench-example")
    except importlib.metadata.PackageNotFoundError:
        return False
    eps = {ep.name for ep in dist.entry_points}
    return set(NAMES.values()) <= eps


@pytest.fixture(scope="session")
def example():
    """examples/plugin installed (editable) into the venv that runs the tests, as the README says; installed
    here when `make install` has not (never skipped: pip installs it offline, from this folder alone)."""
    lock = Path(os.environ.get("TMPDIR", "/tmp")) / "nlcg-bench-example.install.lock"
    with open(lock, "w") as f:  # pytest-xdist workers install it once between them
        fcntl.flock(f, fcntl.LOCK_EX)
        if not _installed():
            p = subprocess.run([PYTHON, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-q", "-e",
                                str(EXAMPLE)], capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, p.stderr[-3000:]
        importlib.invalidate_caches()
    assert _installed(), "pip install -e examples/plugin did not register its entry points"
    return EXAMPLE


def _sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ---- the built-in baselines a reviewer asks for --------------------------------------------------------------


def test_nesterov_adam_and_adamw_are_keras_own_baselines():
    import keras

    import optimizers

    for name, cls in (("nesterov", keras.optimizers.SGD), ("adam", keras.optimizers.Adam),
                      ("adamw", keras.optimizers.AdamW)):
        entry = optimizers.REGISTRY[name]
        assert entry.role == "baseline" and "Nado" in entry.source + optimizers.REGISTRY["adam"].source
        assert isinstance(optimizers.get(name, 0.1), cls)
    assert optimizers.get("nesterov", 0.1).nesterov is True
    assert optimizers.REGISTRY["adamw"].defaults == {"weight_decay": 0.004}  # Keras's, read from its signature
    with pytest.raises(ValueError, match=r"^nesterov: nesterov is not a hyperparameter; the name `nesterov` fixes"):
        optimizers.get("nesterov", 0.1, nesterov=False)
    # the methods under test: the paper's two NLCG forms, and momentum-bfgs, an ablation of NLCG (issue 28)
    assert {n: optimizers.role(n) for n in optimizers.names() if optimizers.role(n) == "method"} == {
        "nlcg-fr": "method", "nlcg-pr": "method", "momentum-bfgs": "method"}


def test_the_roles_of_rows_written_before_roles_are_the_registrys():
    """bench.results.LEGACY_ROLES (what the report reads for rows without a role column) is the registry's."""
    import optimizers
    from bench import results

    assert results.LEGACY_ROLES == {name: optimizers.role(name) for name in results.LEGACY_ROLES}


# ---- resolution: entry points and references -----------------------------------------------------------------


def test_the_example_resolves_by_its_entry_points(example):
    import keras

    import optimizers
    from bench import components, models

    entry = optimizers.entry(NAMES["optimizer"])
    assert (entry.role, entry.defaults, entry.origin) == ("method", {"beta": 0.9}, "entry point")
    plugin = entry.plugin
    assert (plugin.reference, plugin.distribution, plugin.version) == (
        "nlcg_bench_example.optim:SignMomentum", "nlcg-bench-example", "0.1.0")
    assert plugin.source_hash == _sha16(PACKAGE / "optim.py")
    assert optimizers.check_hparams(NAMES["optimizer"], {"beta": 0}) == {"beta": 0.0}
    with pytest.raises(ValueError, match=r"^sign-momentum: beta = 'x' has type str; valid: a number$"):
        optimizers.get(NAMES["optimizer"], 0.1, beta="x")
    assert models.plugin_defaults(NAMES["model"]) == {"filters": 16, "dropout": 0.0}
    model = models.build(NAMES["model"], (8, 8, 1), 4, model_hparams={"filters": 4})
    assert isinstance(model, keras.Model) and model.output_shape == (None, 4)
    arrays, data = components.dataset(NAMES["dataset"], "")
    assert (arrays.image_shape, arrays.num_classes, len(arrays.train_labels), len(arrays.test_labels)) == (
        (28, 28, 1), 4, 60_000, 10_000)
    assert data.reference == "nlcg_bench_example.data:load" and data.version == "0.1.0"


def test_a_plugin_optimizer_is_stepped_like_a_builtin(tmp_path, monkeypatch):
    """The harness's step on any Keras optimizer: the loss dropped where apply takes none, passed where it does;
    diagnostics() empty where there are none, the plug-in's own where it has them; the class's own state."""
    import tensorflow as tf

    import optimizers

    (tmp_path / "steppers.py").write_text(textwrap.dedent("""
        import keras
        import tensorflow as tf

        class Plain(keras.optimizers.SGD):
            pass

        class Seeing(keras.optimizers.SGD):
            def __init__(self, learning_rate=0.01, **kw):
                super().__init__(learning_rate=learning_rate, **kw)
                self.seen = tf.Variable(0.0)

            def apply(self, grads, trainable_variables=None, loss=None):
                self.seen.assign(loss)
                return super().apply(grads, trainable_variables)

            def diagnostics(self):
                return {"seen": tf.identity(self.seen)}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    plain = optimizers.get("steppers:Plain", 0.5)
    seeing = optimizers.get("steppers:Seeing", 0.5)
    for opt in (plain, seeing):
        w = tf.Variable([1.0])
        opt.apply([tf.constant([1.0])], [w], loss=tf.constant(3.0))
        assert w.numpy()[0] == pytest.approx(0.5)
    assert plain.diagnostics() == {} and float(seeing.diagnostics()["seen"]) == 3.0
    assert type(plain).__name__ == "Plain" and isinstance(plain, sys.modules["steppers"].Plain)


def test_a_reference_from_a_folder_on_the_path_is_versioned_by_its_source(tmp_path, monkeypatch):
    """A module on PYTHONPATH (not installed) has no distribution: its version is its source's hash, so an edit
    makes other runs; the id of a built-in does not move."""
    import optimizers
    from bench import components, config

    shutil.copy(PACKAGE / "optim.py", tmp_path / "my_signum.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = "my_signum:SignMomentum"
    entry = optimizers.entry(ref)
    digest = _sha16(tmp_path / "my_signum.py")
    assert (entry.origin, entry.plugin.distribution, entry.plugin.version) == ("reference", "", f"source-{digest}")
    base = {"dataset": "synthetic", "synthetic_image_size": 8, "width": 4, "steps": 2}
    cfg = config.make({**base, "optimizer": ref})
    fields = cfg.training_fields(1)
    assert fields["plugins"]["optimizer"] == {"reference": ref, "version": f"source-{digest}"}
    first = cfg.run_id(1)
    (tmp_path / "my_signum.py").write_text((tmp_path / "my_signum.py").read_text() + "\n# edited\n")
    components.forget()
    optimizers._PLUGINS.clear()
    assert config.make({**base, "optimizer": ref}).run_id(1) != first
    assert "plugins" not in config.make({**base, "optimizer": "momentum"}).training_fields(1)


# ---- bad plug-ins: one line through the CLI, exit 2, before anything trains -----------------------------------

BAD = textwrap.dedent("""
    import keras
    import numpy as np

    NOT_CALLABLE = 3

    def no_rate():
        return keras.optimizers.SGD(0.1)

    def required(learning_rate, beta):
        return keras.optimizers.SGD(learning_rate)

    def text(learning_rate):
        return "sgd"

    def boom(learning_rate):
        raise RuntimeError("the optimizer is broken")

    def sgd(learning_rate):
        return keras.optimizers.SGD(learning_rate)

    sgd.bench_role = "contender"

    def model_one_arg(input_shape):
        raise AssertionError("never called")

    def model_layer(input_shape, num_classes):
        return keras.layers.Dense(num_classes)

    def model_wide(input_shape, num_classes):
        x = keras.Input(input_shape)
        return keras.Model(x, keras.layers.Dense(num_classes + 1)(keras.layers.Flatten()(x)))

    def data_boom(data_dir):
        raise FileNotFoundError("no such folder: " + repr(data_dir))

    def data_flat(data_dir):
        return np.zeros(3)

    def data_float(data_dir):
        x = np.zeros((4, 8, 8, 1), np.float32)
        return (x, np.zeros(4, int)), (x, np.zeros(4, int))
""")

BAD_CASES = {
    # name: (--set overrides, fragments of the one line)
    "not importing": (["optimizer=broken_module:f"], ["optimizer = 'broken_module:f'", "does not import",
                                                      "ZeroDivisionError"]),
    "no module": (["optimizer=no_such_module:f"], ["no_such_module", "does not import", "PYTHONPATH"]),
    "names nothing": (["optimizer=badplugins:nothing"], ["badplugins:nothing", "names nothing called 'nothing'"]),
    "not callable": (["optimizer=badplugins:NOT_CALLABLE"], ["badplugins:NOT_CALLABLE", "not callable"]),
    "not a reference": (["optimizer=badplugins:"], ["'badplugins:'", "package.module:attribute"]),
    "unknown name": (["optimizer=adamx"], ["optimizer = 'adamx' is unknown", "sign-momentum", "package.module"]),
    "no rate": (["optimizer=badplugins:no_rate"], ["badplugins:no_rate", "cannot be called as factory(learning_rate)"]),
    "required hparam": (["optimizer=badplugins:required"], ["badplugins:required",
                                                            "every hyperparameter with a default"]),
    "wrong object": (["optimizer=badplugins:text"], ["badplugins:text", "built a builtins.str, not a keras"]),
    "raises": (["optimizer=badplugins:boom"], ["badplugins:boom", "RuntimeError: the optimizer is broken"]),
    "bad role": (["optimizer=badplugins:sgd"], ["badplugins:sgd", "bench_role = 'contender'", "baseline, method"]),
    "model signature": (["model=badplugins:model_one_arg"], ["model = 'badplugins:model_one_arg'",
                                                             "cannot be called so", "num_classes"]),
    "model not a model": (["model=badplugins:model_layer"], ["badplugins:model_layer", "not a keras.Model"]),
    "model output": (["model=badplugins:model_wide"], ["badplugins:model_wide", "outputs shape (2, 11)",
                                                       "(2, 10)"]),
    "model hparam": (["model=small-cnn", "model_hparams.filterz=3"], ["small-cnn", "filterz"]),
    "builtin model hparam": (["model_hparams.filters=3"], ["resnet8", "model_hparams"]),
    "data raises": (["dataset=badplugins:data_boom"], ["dataset = 'badplugins:data_boom'", "FileNotFoundError"]),
    "data shape": (["dataset=badplugins:data_flat"], ["badplugins:data_flat", "expected ((train_images"]),
    "data dtype": (["dataset=badplugins:data_float"], ["badplugins:data_float", "float32", "expected uint8"]),
    "entry point twice": (["optimizer=sign-momentum"], ["registered twice", "nlcg-bench-example", "twin"]),
    "entry point not importing": (["optimizer=ghost"], ["'ghost'", "entry point", "twin", "does not import"]),
}


@pytest.fixture
def bad_path(tmp_path):
    """A folder for PYTHONPATH: the bad plug-ins, a module that raises on import, and a distribution (a
    .dist-info folder, as pip leaves one) whose entry points collide with the example's or name no module."""
    (tmp_path / "badplugins.py").write_text(BAD)
    (tmp_path / "broken_module.py").write_text("x = 1 / 0\n")
    info = tmp_path / "twin-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: twin\nVersion: 9.9\n")
    (info / "entry_points.txt").write_text("[nlcg_bench.optimizers]\nsign-momentum = twin_module:f\n"
                                           "ghost = ghost_module:f\n")
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_a_bad_plugin_is_one_line_and_exit_2_before_anything_trains(case, bad_path, tmp_path, example):
    sets, fragments = BAD_CASES[case]
    out = tmp_path / "out"
    base = ["--set", "dataset=synthetic", "--set", "synthetic_image_size=8", "--set", "width=4", "--set", "steps=1",
            "--set", f"output_dir={out}"]
    if case == "entry point twice" or case == "entry point not importing":
        base = []  # the example's defaults: only the optimizer's name is bad
        sets = [*sets, f"output_dir={out}"]
    args = ["train", *base, *(a for s in sets for a in ("--set", s))]
    env = {**os.environ, "PYTHONPATH": str(bad_path)}
    p = run_cli(args, timeout=180, env=env)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists()  # nothing trained, nothing written


# ---- bench list ------------------------------------------------------------------------------------------------


def test_bench_list_shows_every_source_its_role_and_defaults_and_the_docs_agree(example):
    from bench import components

    p = run_cli(["list", "--json", "--optimizer", "keras.optimizers:Adam", "--data"], timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout)
    opts = {r["name"]: r for r in doc["optimizers"]}
    assert {"momentum", "nesterov", "adam", "adamw", "nlcg-fr", "sign-momentum", "keras.optimizers:Adam"} <= set(opts)
    assert opts["nlcg-fr"]["role"] == "method" and opts["adam"]["role"] == "baseline"
    assert opts["sign-momentum"]["source"] == ("entry point of nlcg-bench-example 0.1.0: "
                                               "nlcg_bench_example.optim:SignMomentum")
    assert opts["sign-momentum"]["defaults"] == {"beta": 0.9} and opts["sign-momentum"]["role"] == "method"
    # a reference into an installed distribution is versioned by it
    assert opts["keras.optimizers:Adam"]["source"] == "reference of keras 3.15.1: keras.optimizers:Adam"
    assert opts["keras.optimizers:Adam"]["defaults"]["beta_2"] == 0.999
    models = {r["name"]: r for r in doc["models"]}
    assert models["small-cnn"]["defaults"] == {"filters": 16, "dropout": 0.0} and "resnet8" in models
    data = {r["name"]: r for r in doc["datasets"]}
    assert data["fashion-coarse"]["facts"] == {"shape": [28, 28, 1], "classes": 4, "train_size": 60000,
                                               "test_size": 10000}
    text = run_cli(["list"], timeout=180)
    assert text.returncode == 0 and "sign-momentum" in text.stdout and "[method]" in text.stdout
    # the contracts, word for word, in the README's "Bring your own" and docs/architecture.md
    readme, arch = (ROOT / "README.md").read_text(), (ROOT / "docs" / "architecture.md").read_text()
    for contract in components.CONTRACTS.values():
        assert contract in doc["contracts"].values()
        assert contract in readme and contract in arch, contract
    for group in components.GROUPS.values():
        assert group in readme and group in arch


# ---- the re-launch carries the module and the path -------------------------------------------------------------


def test_the_relaunch_runs_the_module_that_started_it_and_exports_pythonpath():
    import types

    from bench import environment

    cli = types.ModuleType("__main__")
    cli.__spec__ = types.SimpleNamespace(name="mytool.__main__")
    from bench.__main__ import main as bench_main

    cli.main = bench_main
    assert environment.entry_module(cli) == "mytool"
    other = types.ModuleType("__main__")
    other.__spec__ = types.SimpleNamespace(name="pytest.__main__")
    assert environment.entry_module(other) == "bench"  # another program is not bench's CLI
    bench = types.ModuleType("__main__")
    bench.__spec__ = types.SimpleNamespace(name="bench.__main__")
    assert environment.entry_module(bench) == "bench"
    cmd = environment.relaunch_command(["sweep", "x.toml"], 1, 2, environ={"PYTHONPATH": "/plugins"})
    assert cmd[cmd.index("-x") + 1] == "PYTHONPATH" and cmd[-3:] == ["bench", "sweep", "x.toml"]
    assert "-x" not in environment.relaunch_command(["sweep"], 1, 2, environ={})


# ---- the weights under L2: the harness's rule, the built-ins' list unchanged ------------------------------------


def test_decayed_weights_skip_normalisation_at_any_depth_and_keep_the_builtins_list():
    import keras

    from bench import models

    m = models.build("resnet8", (8, 8, 3), 10, width=4)
    old = [w for layer in m.layers if not isinstance(layer, keras.layers.BatchNormalization)
           for w in layer.trainable_weights]  # the rule before nested layers were looked into
    assert [id(w) for w in models.decayed_weights(m)] == [id(w) for w in old]
    inner = keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization(),
                              keras.layers.LayerNormalization()])
    x = keras.Input((6, 6, 1))
    outer = keras.Model(x, keras.layers.Dense(3)(keras.layers.Flatten()(inner(x))))
    names = sorted(w.path.split("/")[-1] for w in models.decayed_weights(outer))
    assert names == ["bias", "bias", "kernel", "kernel"]  # the conv's and the dense's; no gamma, beta


# ---- end to end, as a user runs it -----------------------------------------------------------------------------


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_the_example_sweeps_under_mpirun_and_reports_its_optimizer_as_the_method_under_test(example, tmp_path):
    """``sweep --workers 1 --pack 2`` re-launches under mpirun (2 groups of 1 worker), every rank imports the
    plug-in by its entry points; ``report`` puts sign momentum in the claims against the better of momentum
    and Adam at each of the two batches."""
    from bench.results import load_runs

    p = run_cli(["sweep", str(SWEEP), "--workers", "1", "--pack", "2", "--set", f"output_dir={tmp_path}"],
                timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "launching: " in p.stdout and "-np 2" in p.stdout
    folder = tmp_path / "plugin_example"
    runs = load_runs(folder)
    assert len(runs) == 12 and set(runs.status) == {"complete"}
    assert set(runs.optimizer) == {"sign-momentum", "momentum", "adam"} and set(runs.global_batch) == {256, 1024}
    mine = runs[runs.optimizer == "sign-momentum"].iloc[0]
    assert (mine.optimizer_origin, mine.optimizer_reference, mine.optimizer_version) == (
        "entry point", "nlcg_bench_example.optim:SignMomentum", "0.1.0")
    assert mine.optimizer_source_hash == _sha16(PACKAGE / "optim.py") and mine.role == "method"
    assert (mine.model_reference, mine.dataset_reference) == ("nlcg_bench_example.model:build",
                                                              "nlcg_bench_example.data:load")
    assert json.loads(mine.model_hparams) == {"filters": 8, "dropout": 0.0}
    assert set(runs[runs.optimizer != "sign-momentum"].optimizer_origin) == {"built-in"}
    study = json.loads((folder / "study.json").read_text())
    assert study["claim"]["optimizer"] == "sign-momentum" and study["claim"]["baselines"] == ["momentum", "adam"]
    assert study["roles"] == {"sign-momentum": "method", "momentum": "baseline", "adam": "baseline"}
    figs = tmp_path / "figures"
    r = run_cli(["report", str(folder), "--out", str(figs)], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    claims = json.loads((figs / "plugin_example" / "claims.json").read_text())
    assert claims["primary"]["optimizer"] == "sign-momentum"
    compared = {(c["optimizer"], c["global_batch"]) for c in claims["claims"]}
    assert compared == {("sign-momentum", 256), ("sign-momentum", 1024)}
    assert {c["baseline"] for c in claims["claims"]} <= {"momentum", "adam"}
    assert (figs / "plugin_example" / "top1_vs_batch.png").is_file()
    assert claims["roles"] == study["roles"]
    # the rows' ids re-derive from the rows alone (no plug-in imported by the store): a rerun has nothing to do
    again = run_cli(["sweep", str(SWEEP), "--workers", "1", "--pack", "2", "--set", f"output_dir={tmp_path}",
                     "--dry-run"], timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip().endswith("12 runs on 1 worker(s) each, 0 to run"), again.stdout[-2000:]
    assert "legacy_run_id" not in runs or runs.legacy_run_id.isna().all()
    # the notebook answers from the plug-in study's tables as from a built-in one's
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    os.environ.update(RESULTS_DIR=str(folder), FIGURES_DIR=str(figs))
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        del os.environ["RESULTS_DIR"], os.environ["FIGURES_DIR"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "12 rows, 12 finished runs" in text and "sign-momentum" in text


@pytest.mark.slow
def test_the_same_optimizer_by_reference_from_a_folder_on_pythonpath(example, tmp_path):
    """Not installed: the module is a file in a folder on PYTHONPATH, named "module:attribute"."""
    from bench.results import load_runs

    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(PACKAGE / "optim.py", folder / "my_signum.py")
    env = {**os.environ, "PYTHONPATH": str(folder)}
    sets = [a if not a.startswith("optimizer=") else "optimizer=my_signum:SignMomentum" for a in TINY]
    p = run_cli(["train", *sets, "--set", f"output_dir={tmp_path}", "--set", "sweep=ref"], timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    row = load_runs(tmp_path / "ref").iloc[0]
    digest = _sha16(folder / "my_signum.py")
    assert (row.status, row.optimizer, row.optimizer_origin, row.optimizer_version) == (
        "complete", "my_signum:SignMomentum", "reference", f"source-{digest}")
    assert row.optimizer_source_hash == digest and row.role == "method"


@pytest.mark.slow
def test_a_plugin_optimizer_resumes_from_its_checkpoint_exactly(example, tmp_path):
    """Sign momentum's slots (one momentum per variable) go into the checkpoint and come back: the run that
    failed at step 10 and resumed from step 8 logs exactly the numbers of the run that never stopped."""
    p = subprocess.run([PYTHON, str(ROOT / "tests" / "resume_worker.py"), str(tmp_path / "out.npz"),
                        "--optimizer", NAMES["optimizer"], "--model", NAMES["model"]], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's bench, run as a script
    assert p.returncode == 0, p.stderr[-3000:]
    import numpy as np

    with np.load(tmp_path / "out.npz") as f:
        assert list(f["statuses"]) == ["failed", "complete"] and list(f["resumed_from"]) == [0, 8]
        slots = [name for name in f["slots"] if name.startswith("optimizer/_variables/")]
        weights = [name for name in f["slots"] if name.startswith("optimizer/_trainable_variables/")]
        assert len(slots) >= len(weights) > 0, list(f["slots"])  # a momentum per weight (and the iterations)
        np.testing.assert_array_equal(f["resumed"], f["straight"])


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_a_plugin_resumes_exactly_on_two_workers_under_mixed_float16(example, tmp_path):
    """The same failure and resume on 2 workers (mpirun), the example's optimizer and model in mixed_float16:
    the dynamic loss scale and sign momentum's slots come back from the checkpoint on both ranks, and the run
    that failed at step 10 logs exactly the numbers (loss scale and skipped steps included) of the one that
    never stopped."""
    from conftest import mpirun

    p = subprocess.run(mpirun(2, str(ROOT / "tests" / "resume_worker.py"), str(tmp_path / "out.npz"),
                              "--optimizer", NAMES["optimizer"], "--model", NAMES["model"],
                              "--precision", "mixed_float16"),
                       cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-3000:]
    import numpy as np

    with np.load(tmp_path / "out.npz") as f:
        assert list(f["statuses"]) == ["failed", "complete"] and list(f["resumed_from"]) == [0, 8]
        columns = list(f["columns"])
        assert "loss_scale" in columns and "step_skipped" in columns, columns
        assert any(name.startswith("optimizer/_variables/") for name in f["slots"]), list(f["slots"])
        np.testing.assert_array_equal(f["resumed"], f["straight"])


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_the_example_trains_under_horovodrun_in_mixed_bfloat16(example, tmp_path):
    """``horovodrun --gloo -np 2``: every rank resolves the example's entry points; the run is a plug-in's row
    of 2 workers, in bfloat16 with float32 logits, the optimizer's version recorded."""
    from bench.results import load_runs

    hvdrun = shutil.which("horovodrun", path=os.path.dirname(PYTHON))
    env = {**os.environ, "PATH": f"{os.path.dirname(PYTHON)}:{os.environ['PATH']}"}
    p = subprocess.run([hvdrun, "--gloo", "-np", "2", PYTHON, "-m", "bench", "train", *TINY, "--set",
                        "precision=mixed_bfloat16", "--set", f"output_dir={tmp_path}", "--set", "sweep=hvd"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    row = load_runs(tmp_path / "hvd").iloc[0]
    version = importlib.metadata.version("nlcg-bench-example")
    assert (row.status, row.workers, json.loads(row.config)["precision"], row.optimizer, row.model, row.dataset) == (
        "complete", 2, "mixed_bfloat16", *NAMES.values())
    assert (row.optimizer_origin, row.optimizer_version) == ("entry point", version), row.to_dict()
