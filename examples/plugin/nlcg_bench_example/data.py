"""Fashion-MNIST's ten classes folded into four coarse ones, from the real files on this machine (Debian's
dataset-fashion-mnist, /usr/share/datasets/fashion-mnist, or any folder holding Zalando's four gzipped IDX
files): 0 tops (T-shirt/top, pullover, coat, shirt), 1 trousers and dresses, 2 footwear (sandal, sneaker,
ankle boot), 3 bags. A different task on the same images: the harness reads its facts (28 x 28 x 1, 4 classes,
60,000 / 10,000 images) from the arrays, and does the rest (standardisation, augmentation, image_size, the
validation split, sharding across workers)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
COARSE = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2], np.int32)  # Fashion-MNIST label -> coarse class


def _idx(path: Path, header: int) -> np.ndarray:
    """The unsigned bytes of a gzipped IDX file after its ``header`` bytes."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)


def load(data_dir=""):
    """((train images uint8 [60000, 28, 28], labels [60000]), (test images [10000, 28, 28], labels [10000]))
    from ``data_dir`` (default: Debian's folder)."""
    folder = Path(data_dir or DEFAULT_DIR)
    out = []
    for stem in ("train", "t10k"):
        images = _idx(folder / f"{stem}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        labels = COARSE[_idx(folder / f"{stem}-labels-idx1-ubyte.gz", 8)]
        out.append((images, labels))
    return tuple(out)
