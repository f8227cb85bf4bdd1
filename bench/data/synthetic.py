"""synthetic: generated images of the config's synthetic_* shape and sizes, the same for every run seed;
learnable (a small model beats chance), for tests and timing without data files."""

from __future__ import annotations

import numpy as np

from bench.config import RunConfig
from bench.data.common import DatasetInfo
from bench.data.in_memory import InMemory

SYNTHETIC_SEED = 20180101  # the synthetic data is the same for every run seed
_CELLS = 4  # the class pattern is CELLS x CELLS coarse cells


def make(size: int, channels: int, classes: int, n: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Noise plus a per-class pattern of 4 x 4 coarse cells (survives per-image standardisation and a
    4-pixel shift), so a small model beats chance; images uint8 [n, size, size, channels], labels int32 [n]
    in 0..classes-1. "train" and "test" are different draws."""
    coarse = np.random.default_rng([SYNTHETIC_SEED, 0]).integers(0, 256, (classes, _CELLS, _CELLS, channels),
                                                                 np.uint16)
    cell = -(-size // _CELLS)
    templates = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, :size, :size]
    rng = np.random.default_rng([SYNTHETIC_SEED, 1 if split == "train" else 2])
    labels = rng.integers(0, classes, n).astype(np.int32)
    noise = rng.integers(0, 256, (n, size, size, channels), np.uint16)
    return ((templates[labels] + noise) // 2).astype(np.uint8), labels


class Synthetic(InMemory):
    name = "synthetic"

    def source(self, cfg: RunConfig, split: str) -> tuple:
        """The arguments of ``make``: the data are a function of them."""
        n = cfg.synthetic_train_size if split == "train" else cfg.synthetic_test_size
        return cfg.synthetic_image_size, cfg.synthetic_channels, cfg.synthetic_classes, n, split

    def read(self, source: tuple) -> tuple[np.ndarray, np.ndarray]:
        return make(*source)

    def native_info(self, cfg: RunConfig) -> DatasetInfo:
        s = cfg.synthetic_image_size
        return DatasetInfo(self.name, (s, s, cfg.synthetic_channels), cfg.synthetic_classes,
                           cfg.synthetic_train_size, cfg.synthetic_test_size)


READER = Synthetic()
