"""MNIST and Fashion-MNIST from MNIST IDX files (gzipped or not) in a directory."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from lottery.data.base import ImageData
from lottery.errors import UserError
from lottery.plugins import register_dataset
from lottery.spec import DatasetSpec

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
HOW_TO_GET = {
    "fashion_mnist": "install it with 'apt-get install dataset-fashion-mnist' or set dataset.root",
    "mnist": "download the four MNIST IDX files and set dataset.root to their directory",
}
DEFAULT_ROOT = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": None}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (magic 0x0000TTDD: type code TT must be 0x08 = unsigned byte) as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:  # zlib.error: a corrupted .gz stream
        raise UserError(f"cannot read IDX file {path}: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path} is truncated (header incomplete)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise UserError(f"{path} is truncated or malformed: header says {shape}, found {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str, name: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise UserError(f"{name}: missing {root / stem}[.gz]; {HOW_TO_GET[name]}")


def load_idx_dataset(spec: DatasetSpec) -> ImageData:
    root = spec.root or DEFAULT_ROOT[spec.name]
    if root is None:
        raise UserError(f"{spec.name}: set dataset.root to the directory of its IDX files; {HOW_TO_GET[spec.name]}")
    root_path = Path(root)
    if not root_path.is_dir():
        raise UserError(f"{spec.name}: data directory {root_path} does not exist; {HOW_TO_GET[spec.name]}")
    arrays = {key: read_idx(_find(root_path, stem, spec.name)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"{spec.name}: {split} images {x.shape} and labels {y.shape} do not match")
    images = {k: torch.from_numpy(arrays[k].copy()).float().div_(255).unsqueeze(1) for k in ("train_x", "test_x")}
    labels = {k: torch.from_numpy(arrays[k].astype(np.int64)) for k in ("train_y", "test_y")}
    return ImageData(**images, **labels, num_classes=10)


register_dataset("fashion_mnist")(load_idx_dataset)
register_dataset("mnist")(load_idx_dataset)
