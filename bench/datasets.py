"""The facts of each data set, in one table, without TensorFlow: what config, the data readers, the plots and
the projection all read (``SPECS[name]``).

Sizes are the standard splits' (a folder the user supplies may hold fewer: the readers count what is there);
``data_variable`` names the environment variable that says where the files are when a config's ``data_dir``
is empty (None: a fixed place, or no files).

``data_check`` is the data's part of a run's identity (bench.config): which files the data set's reader would
read and their sizes, found by stat alone, without TensorFlow; the readers in bench.data read the same names
(tests/test_config.py checks the two agree).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from bench import environment


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    image_shape: tuple[int, int, int]  # H, W, C of the model input
    num_classes: int
    train_size: int  # images of the standard train split
    test_size: int  # images of the standard test (ImageNet: validation) split
    data_variable: str | None  # environment variable naming the folder, when data_dir is ""


SPECS = {spec.name: spec for spec in (
    DatasetSpec("fashion_mnist", (28, 28, 1), 10, 60_000, 10_000, None),  # Debian's dataset-fashion-mnist
    DatasetSpec("cifar10", (32, 32, 3), 10, 50_000, 10_000, "CIFAR_DIR"),
    DatasetSpec("cifar100", (32, 32, 3), 100, 50_000, 10_000, "CIFAR_DIR"),
    DatasetSpec("imagenet", (224, 224, 3), 1000, 1_281_167, 50_000, "IMAGENET_DIR"),  # ILSVRC-2012
    DatasetSpec("synthetic", (32, 32, 3), 10, 8192, 1024, None),  # shape and sizes: the config's synthetic_*
)}
NAMES = tuple(SPECS)


# ---- the data's identity: which files a reader reads, and a stat-only check of them ------------------------

FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist; bench.data.fashion_mnist's
FASHION_FILES = tuple(f"{stem}-{kind}" for stem in ("train", "t10k")
                      for kind in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"))
# (folder the archive extracts to, its files): as bench.data.cifar's CIFAR10 / CIFAR100 read them
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-bin", (*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin")),
    "cifar100": ("cifar-100-binary", ("train.bin", "test.bin")),
}
_SHARD = re.compile(r"(train|validation)-(\d+)-of-(\d+)")  # bench.data.imagenet's shard names
ABSENT = "absent"  # the data check of a data set whose files are not where its reader would look


def data_folder(name: str, data_dir: str) -> str:
    """Where the reader of ``name`` looks first: ``data_dir``, else its variable (``data_variable``), else
    Debian's folder for fashion_mnist; "" when nothing says (synthetic, or an unset variable)."""
    spec = SPECS[name]
    if data_dir:
        return data_dir
    if spec.data_variable:
        return environment.get(spec.data_variable)
    return FASHION_DIR if name == "fashion_mnist" else ""


def data_files(name: str, folder: str) -> list[Path] | None:
    """The files the reader of ``name`` reads from ``folder`` (``data_folder``), found by name and stat only;
    None when they are not all there (imagenet: no shard of a split), or the folder cannot be listed or a file
    not stat-ed (permission): the data are then ABSENT for the identity, and the reader's check (bench.data)
    says what is wrong in one line, rather than a traceback from here. Synthetic data has none: []."""
    if name == "synthetic":
        return []
    if not folder:
        return None
    try:
        return _data_files(name, Path(folder))
    except OSError:
        return None


def _data_files(name: str, base: Path) -> list[Path] | None:
    if name == "fashion_mnist":
        paths = [base / f for f in FASHION_FILES]
    elif name in CIFAR_FILES:
        sub, names = CIFAR_FILES[name]
        # like the reader: data_dir may be the extracted folder itself or the folder that holds it
        base = base if base.name == sub or (base / names[0]).is_file() else base / sub
        paths = [base / f for f in names]
    else:  # imagenet: every shard of both splits
        try:
            paths = sorted(p for p in base.iterdir() if _SHARD.fullmatch(p.name))
        except OSError:
            return None
        if {_SHARD.fullmatch(p.name).group(1) for p in paths} != {"train", "validation"}:
            return None
    return paths if all(p.is_file() for p in paths) else None


_CHECKS: dict[tuple[str, str], str] = {}  # (data set, resolved folder) -> data_check, for the process


def _check(name: str, folder: str) -> str:
    paths = data_files(name, folder)
    if paths is None:
        return ABSENT
    try:
        listing = sorted((p.name, p.stat().st_size) for p in paths)
    except OSError:  # removed between the listing and the stat
        return ABSENT
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def data_check(name: str, data_dir: str) -> str:
    """A cheap check of the data a run of ``name`` would read: a hash of the sorted (file name, bytes) list of
    its files, from stat alone (no file is opened), or ABSENT. Part of a run's identity instead of the folder
    (bench.config), so the same files elsewhere give the same run ids and other files give other ones. Cached
    per resolved folder for the process (a sweep computes ids often; ImageNet has 1,152 shards); an absent
    result is not cached, so data put in place later is seen. "" for synthetic (its config fields define it)."""
    if name == "synthetic":
        return ""
    folder = data_folder(name, data_dir)
    where = (name, str(Path(folder).resolve()) if folder else "")
    if where not in _CHECKS:
        check = _check(*where)
        if check == ABSENT:
            return check
        _CHECKS[where] = check
    return _CHECKS[where]


def clear_data_checks() -> None:
    """Forget the cached checks: what a new process would see (tests; a process that moved its data)."""
    _CHECKS.clear()
