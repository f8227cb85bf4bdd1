"""The facts of each data set, in one table, without TensorFlow: what config, the data readers, the plots and
the projection all read (``SPECS[name]``).

Sizes are the standard splits' (a folder the user supplies may hold fewer: the readers count what is there);
``data_variable`` names the environment variable that says where the files are when a config's ``data_dir``
is empty (None: a fixed place, or no files).
"""

from __future__ import annotations

from dataclasses import dataclass


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
