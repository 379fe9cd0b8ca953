"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist):
70k 28x28 grey images of 10 clothing classes, read from its idx files with numpy. Offline
from the Debian package `dataset-fashion-mnist` (DEBIAN_DIR)."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from frozen_det.data.source import DataError

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": "train", "test": "t10k"}


def read_idx(path: str) -> np.ndarray:
    """An idx file (the MNIST format: magic, dims, big-endian uint8 payload), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {data[:4]!r})")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def path_of(root: str, split: str, kind: str) -> str:
    """The idx file of `split` ("train" | "test") and `kind` ("images" | "labels"), gzipped or not."""
    if split not in _FILES:
        raise DataError(f"Fashion-MNIST has the splits {sorted(_FILES)}, not {split!r}")
    stem = f"{_FILES[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for name in (stem + ".gz", stem):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    raise DataError(
        f"Fashion-MNIST not found in {root} ({stem}[.gz] is missing): install the Debian package "
        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or set data.path to a folder with "
        "the idx files of https://github.com/zalandoresearch/fashion-mnist."
    )


def read(root: str, split: str, kind: str) -> np.ndarray:
    """uint8 images [N, 28, 28] or labels [N]."""
    return read_idx(path_of(root, split, kind))


def available(root: str = DEBIAN_DIR) -> bool:
    return os.path.isfile(os.path.join(root, "train-labels-idx1-ubyte.gz")) or os.path.isfile(
        os.path.join(root, "train-labels-idx1-ubyte")
    )
