"""A plug-in's data set (bench.components: an entry point of group ``nlcg_bench.datasets``, or
``"package.module:attribute"``): its ``load(data_dir)`` gives the train and test arrays, and this reader gives
them the in-memory pipelines of the built-ins (bench.data.in_memory): per-image standardisation, the pad-crop-
flip augmentation, ``image_size``, the validation split, the index streams that shard every global batch across
workers, PreciseBN's draw. Its facts (image shape, classes, split sizes) are read from the arrays; the arrays
are loaded once per process and data folder (bench.components.dataset, which checks them)."""

from __future__ import annotations

import numpy as np

from bench import components
from bench.config import RunConfig
from bench.data.common import DatasetInfo
from bench.data.in_memory import InMemory


class PluginReader(InMemory):
    """The Reader (bench.data.common.Reader) of one plug-in data set, by the name the config gives it."""

    def __init__(self, name: str):
        self.name = name

    def _arrays(self, cfg: RunConfig) -> components.Arrays:
        from bench.datasets import NAMES

        return components.dataset(cfg.dataset, cfg.data_dir, builtin=NAMES)[0]

    def source(self, cfg: RunConfig, split: str) -> tuple:
        # the arrays' content hash keys the caches: the same data from two folders are read once each, and a
        # plug-in whose load returns other arrays (other files) is not served stale ones
        return (cfg.dataset, cfg.data_dir, self._arrays(cfg).digest, split)

    def read(self, source: tuple) -> tuple[np.ndarray, np.ndarray]:
        name, data_dir, _, split = source
        arrays = components.dataset(name, data_dir)[0]
        return (arrays.train_images, arrays.train_labels) if split == "train" else \
            (arrays.test_images, arrays.test_labels)

    def native_info(self, cfg: RunConfig) -> DatasetInfo:
        arrays = self._arrays(cfg)
        return DatasetInfo(self.name, arrays.image_shape, arrays.num_classes, len(arrays.train_labels),
                           len(arrays.test_labels))


_READERS: dict[str, PluginReader] = {}


def reader(name: str) -> PluginReader:
    """The one reader of plug-in data set ``name`` in this process (its pipelines' caches are keyed by it)."""
    if name not in _READERS:
        _READERS[name] = PluginReader(name)
    return _READERS[name]
