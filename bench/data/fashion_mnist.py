"""fashion_mnist: Zalando's four gzipped IDX files, by default from the folder of Debian's package
dataset-fashion-mnist. Images uint8 [N, 28, 28, 1], labels int32 [N] in 0..9."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from bench.config import RunConfig
from bench.data.common import DataError, DatasetInfo, existing_folder, stamp, stamped_paths
from bench.data.in_memory import InMemory
from bench.datasets import SPECS

FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
SPEC = SPECS["fashion_mnist"]
# IDX magic numbers: 0x08 (unsigned bytes) << 8 | the number of dimensions (images N x H x W, labels N)
IMAGES, LABELS = 2051, 2049
_HEADER = 16  # bytes of an image file's header: magic and 3 dimensions, 4 bytes each
_GET = (f"https://github.com/zalandoresearch/fashion-mnist in data_dir (or apt-get install dataset-fashion-mnist: "
        f"{FASHION_DIR})")


def files(cfg: RunConfig, split: str) -> tuple[Path, Path]:
    """(images, labels) files of "train" or "test" in data_dir or FASHION_DIR; DataError if the folder or a file
    is missing."""
    folder = existing_folder(Path(cfg.data_dir or FASHION_DIR), "fashion_mnist", f"the four *-ubyte.gz files of {_GET}")
    stem = "train" if split == "train" else "t10k"
    paths = (folder / f"{stem}-images-idx3-ubyte.gz", folder / f"{stem}-labels-idx1-ubyte.gz")
    for f in paths:
        if not f.is_file():
            raise DataError(f"fashion_mnist: missing {f}; put the four *-ubyte.gz files of {_GET}")
    return paths


def _gunzip(path: Path, size: int = -1) -> bytes:
    """The first ``size`` bytes (all: -1) of a gzip file; DataError naming the file if it is not one."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read(size)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); expected a gzipped IDX file") from None


def _idx_header(path: Path, head: bytes, magic: int, tail: tuple) -> tuple:
    """Check an IDX header (magic IMAGES: N x 28 x 28, LABELS: N); return its dims."""
    ndim = magic & 0xFF
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(head)} bytes); expected {4 + 4 * ndim}")
    got = int.from_bytes(head[:4], "big")
    if got != magic:
        raise DataError(f"{path}: IDX magic {got}; expected {magic} ({'images' if ndim == 3 else 'labels'})")
    dims = struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim])
    if dims[1:] != tail:
        raise DataError(f"{path}: IDX dims {dims}; expected (N, {', '.join(map(str, tail))})")
    if dims[0] == 0:  # an empty split: no epoch, no evaluation, a division by zero further on
        raise DataError(f"{path}: IDX dims {dims}: no {'images' if ndim == 3 else 'labels'}; expected N >= 1")
    return dims


def read_idx(path: Path, magic: int, tail: tuple) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes as uint8 [N, *tail]; DataError if its size or header is off."""
    raw = _gunzip(path)
    dims = _idx_header(path, raw, magic, tail)
    start, need = 4 + 4 * len(dims), int(np.prod(dims))
    if len(raw) - start != need:
        raise DataError(f"{path}: {len(raw) - start} data bytes; the IDX header {dims} needs {need}")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


class FashionMnist(InMemory):
    name = "fashion_mnist"

    def source(self, cfg: RunConfig, split: str) -> tuple:
        return stamp(files(cfg, split))

    def read(self, source: tuple) -> tuple[np.ndarray, np.ndarray]:
        image_file, label_file = stamped_paths(source)
        images = read_idx(image_file, IMAGES, SPEC.image_shape[:2])[..., None]
        labels = read_idx(label_file, LABELS, ()).astype(np.int32)
        if len(images) != len(labels):
            raise DataError(f"{label_file}: {len(labels)} labels for {len(images)} images in {image_file}")
        if len(labels) and labels.max() >= SPEC.num_classes:
            raise DataError(f"{label_file}: label {labels.max()}; expected 0..{SPEC.num_classes - 1}")
        return images, labels

    def native_info(self, cfg: RunConfig) -> DatasetInfo:
        """Counts the images from the image files' headers (reads 16 bytes of each)."""
        sizes = []
        for split in ("train", "test"):
            image_file = files(cfg, split)[0]
            sizes.append(_idx_header(image_file, _gunzip(image_file, _HEADER), IMAGES, SPEC.image_shape[:2])[0])
        return DatasetInfo(self.name, SPEC.image_shape, SPEC.num_classes, *sizes)


READER = FashionMnist()
