"""Run ids pinned: the values below were computed once (at commit e5d1bdb, identity rule 2) and written here.

Every result row, checkpoint folder, claim file and finished-run check is keyed by ``run_id``; a change to the
identity rule, to ``canonical``, to a default that enters the id or to the hashing would orphan all of them
while every test that compares the code with itself stays green. These tests compare it with the past. A
deliberate change of the rule must bump ``config.ID_VERSION``, migrate old rows (bench.results) and then
update this file with the new ids beside a migration test.

The data enter an id by a stat-only check of their files (bench.datasets.data_check: names and sizes), so
the Fashion-MNIST ids hold for Debian's dataset-fashion-mnist files (``make install``), the CIFAR-100 ids for
the files written below (fixed names and sizes), and the ImageNet id for a folder without shards.
"""

from pathlib import Path

import pytest

from bench import config, grid
from bench.datasets import clear_data_checks
from conftest import ROOT

# (what, workers) -> (run_id, config_id); computed at e5d1bdb by ``ids`` below
PINNED = {
    ("smoke", 1): ("e587fbf3f9cf7fc1", "8d2a8d2838238243"),
    ("smoke", 2): ("19124c9c52b392c6", "b63add711f81da8e"),
    ("synthetic-nlcg-pr", 1): ("2183b7823444a759", "ae63036c4089ca6c"),
    ("synthetic-nlcg-pr", 4): ("6ca219ae81525051", "7ade96fb0285cee6"),
    ("cifar100-resnet32-lars", 8): ("2d9e77598ffee8c4", "db87f42e3dc0b69b"),
    ("imagenet-resnet50-absent", 256): ("0fc7d1d37375f356", "d1c03d861cf5abf1"),
    ("mini-first", 1): ("7ffd8a813f34dc09", "193281eb9b38eaaa"),
    ("mini-last", 1): ("bb0ca29b816c9d10", "869aec70f9ed59d5"),
}


def _cifar100(folder: Path) -> str:
    """CIFAR-100's binary files with their real names and sizes (zeros: the id reads names and sizes only)."""
    base = folder / "cifar-100-binary"
    base.mkdir(parents=True)
    (base / "train.bin").write_bytes(bytes(50_000 * 3074))
    (base / "test.bin").write_bytes(bytes(10_000 * 3074))
    return str(folder)


def configs(tmp: Path) -> dict:
    """The pinned configurations, as a user writes them (a config file, --set overrides, a sweep file)."""
    smoke = config.load(ROOT / "experiments" / "smoke.toml")
    synthetic = config.load(None, ["dataset=synthetic", "synthetic_image_size=8", "width=4", "optimizer=nlcg-pr",
                                   "hparams.line_search=step", "global_batch=512", "per_worker_batch=128",
                                   "steps=20", "seed=3", "eval_ema=true", "precision=mixed_bfloat16"])
    cifar = config.load(None, ["dataset=cifar100", f"data_dir={_cifar100(tmp / 'cifar')}", "model=resnet32",
                               "optimizer=lars", "global_batch=16384", "per_worker_batch=256", "epochs=200",
                               "label_smoothing=0.1", "weight_decay=5e-4"])
    imagenet = config.load(None, ["dataset=imagenet", f"data_dir={tmp / 'no-shards'}", "model=resnet50",
                                  "optimizer=rmsprop", "global_batch=65536", "per_worker_batch=64", "epochs=90",
                                  "bn_eval=moving"])
    mini = grid.load(ROOT / "experiments" / "mini.toml").runs
    return {"smoke": smoke, "synthetic-nlcg-pr": synthetic, "cifar100-resnet32-lars": cifar,
            "imagenet-resnet50-absent": imagenet, "mini-first": mini[0], "mini-last": mini[-1]}


def ids(tmp: Path) -> dict:
    clear_data_checks()
    made = configs(tmp)
    return {(name, workers): (made[name].run_id(workers), made[name].config_id(workers)) for name, workers in PINNED}


def test_debian_fashion_mnist_is_installed():
    """The Fashion-MNIST ids below are of Debian's files; without them they would fail for the wrong reason."""
    assert Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(), "make install"


@pytest.mark.parametrize("key", list(PINNED), ids=[f"{n}-{w}w" for n, w in PINNED])
def test_run_ids_are_the_pinned_ones(key, tmp_path):
    assert ids(tmp_path)[key] == PINNED[key]


def test_the_ids_row_columns_are_the_pinned_ones(tmp_path):
    """``ids()`` (what rows store) gives the same run_id and config_id as run_id()/config_id(), and rule 2."""
    cfg = configs(tmp_path)["smoke"]
    got = cfg.ids(2)
    assert (got["run_id"], got["config_id"]) == PINNED[("smoke", 2)] and got["id_version"] == 2
