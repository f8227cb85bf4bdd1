"""cifar10 and cifar100: the binary versions of Krizhevsky's archives. A record is the label byte(s), then
3072 bytes of pixels, channel-major (3 x 32 x 32); the readers return images uint8 [N, 32, 32, 3] (HWC) and
labels int32 [N] (cifar100: the fine label, 0..99)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import RunConfig
from bench.data.common import DataError, DatasetInfo, base_dir, existing_folder, read_bytes, stamp, stamped_paths
from bench.data.in_memory import InMemory
from bench.datasets import SPECS, DatasetSpec

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class Cifar(InMemory):
    """The layout of one archive, and its reader (frozen, so it can key the array cache)."""

    name: str  # the config's dataset
    folder: str  # the folder the archive extracts to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    archive: str  # the file to download from CIFAR_URL
    label_bytes: int  # per record, before the pixels
    label_byte: int  # which of them is the label (cifar100: 0 coarse, 1 fine)
    coarse_classes: int = 0  # cifar100: the coarse label's classes (byte 0), checked as a sign of a sound file

    @property
    def spec(self) -> DatasetSpec:
        return SPECS[self.name]

    @property
    def pixel_bytes(self) -> int:
        """Bytes of one image: H x W x C."""
        return int(np.prod(self.spec.image_shape))

    def files(self, cfg: RunConfig, split: str) -> list[Path]:
        """The batch files of "train" or "test"; DataError naming every missing file of either split."""
        hint = f"download {self.archive} from {CIFAR_URL} and extract it there"
        base = existing_folder(base_dir(cfg, self.spec.data_variable, hint), self.name,
                               f"{self.folder}/ ({hint}; data_dir or ${self.spec.data_variable})")
        # data_dir may name the folder that holds the extracted archive or the extracted folder itself
        folder = base if base.name == self.folder or (base / self.train_files[0]).is_file() else base / self.folder
        names = self.train_files + self.test_files
        missing = [str(folder / f) for f in names if not (folder / f).is_file()]
        if missing:
            raise DataError(f"{self.name}: missing {', '.join(missing)}; download {self.archive} from {CIFAR_URL} "
                            f"and extract it in {base} (data_dir or $CIFAR_DIR)")
        return [folder / f for f in (self.train_files if split == "train" else self.test_files)]

    def records(self, path: Path) -> int:
        """The number of records in a batch file, from its size; DataError unless it is a whole number."""
        size, record = os.path.getsize(path), self.label_bytes + self.pixel_bytes
        if size == 0 or size % record:
            raise DataError(f"{path}: {size} bytes; expected a positive multiple of {record} "
                            f"({self.label_bytes} label byte(s) + {self.pixel_bytes} pixel bytes per record)")
        return size // record

    def source(self, cfg: RunConfig, split: str) -> tuple:
        return stamp(self.files(cfg, split))

    def read(self, source: tuple) -> tuple[np.ndarray, np.ndarray]:
        h, w, c = self.spec.image_shape
        images, labels = [], []
        for p in stamped_paths(source):
            n = self.records(p)
            raw = read_bytes(p, f"{self.name} batch file")
            if len(raw) != n * (self.label_bytes + self.pixel_bytes):  # changed between the stat and the read
                raise DataError(f"{p}: {len(raw)} bytes read, {p.stat().st_size} on disk; the file is being written")
            recs = raw.reshape(n, self.label_bytes + self.pixel_bytes)
            label = recs[:, self.label_byte]
            if label.max() >= self.spec.num_classes:
                raise DataError(f"{p}: label {label.max()}; expected 0..{self.spec.num_classes - 1}")
            if self.coarse_classes and recs[:, 0].max() >= self.coarse_classes:  # garbled, or not CIFAR-100
                raise DataError(f"{p}: coarse label {recs[:, 0].max()}; expected 0..{self.coarse_classes - 1} "
                                f"(a record is coarse label, fine label, {self.pixel_bytes} pixel bytes)")
            labels.append(label.astype(np.int32))
            images.append(recs[:, self.label_bytes:].reshape(n, c, h, w).transpose(0, 2, 3, 1))  # CHW -> HWC
        return np.concatenate(images), np.concatenate(labels)

    def native_info(self, cfg: RunConfig) -> DatasetInfo:
        """Counts the records from the files' sizes."""
        sizes = [sum(self.records(p) for p in self.files(cfg, split)) for split in ("train", "test")]
        return DatasetInfo(self.name, self.spec.image_shape, self.spec.num_classes, *sizes)


CIFAR10 = Cifar("cifar10", "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                ("test_batch.bin",), "cifar-10-binary.tar.gz", label_bytes=1, label_byte=0)
CIFAR100 = Cifar("cifar100", "cifar-100-binary", ("train.bin",), ("test.bin",), "cifar-100-binary.tar.gz",
                 label_bytes=2, label_byte=1, coarse_classes=20)
