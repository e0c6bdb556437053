"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches in a local directory (never downloaded).

Layouts (https://www.cs.toronto.edu/~kriz/cifar.html):
- cifar-10-batches-py/: data_batch_1 ... data_batch_5, test_batch; keys b'data', b'labels';
- cifar-100-python/: train, test; keys b'data', b'fine_labels'.
b'data' is a uint8 array (N, 3072): 1024 red, then green, then blue values of a 32x32 image, row-major.
`dataset.root` may name that folder or the folder containing it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lottery.data.base import ImageData
from lottery.errors import UserError
from lottery.plugins import register_dataset
from lottery.spec import DatasetSpec

SOURCE = "the extracted 'python version' archive of https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class Layout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int

    def describe(self) -> str:
        files = ", ".join((*self.train, *self.test))
        return f"{self.folder}/ holding {files} (pickled dicts with b'data' and {self.label_key!r})"


LAYOUTS = {
    "cifar10": Layout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels", 10
    ),
    "cifar100": Layout("cifar-100-python", ("train",), ("test",), b"fine_labels", 100),
}

# Only what pickled numpy arrays and bytes need: loading a pickle must never run arbitrary code.
_ALLOWED = {
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if module == "numpy.core.multiarray":  # files written by numpy 1.x; numpy 2 moved the module
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _error(name: str, message: str) -> UserError:
    layout = LAYOUTS[name].describe()
    return UserError(f"{name}: {message}; expected {layout}, from {SOURCE}; set dataset.root to it or its parent")


def find_folder(name: str, root: str | None) -> Path:
    """The folder holding the batches: `root` itself or `root`/<layout folder>."""
    layout = LAYOUTS[name]
    if root is None:
        raise _error(name, "set dataset.root to the CIFAR data directory (nothing is downloaded)")
    path = Path(root).expanduser()
    for candidate in (path, path / layout.folder):
        if all((candidate / f).is_file() for f in (*layout.train, *layout.test)):
            return candidate
    if not path.is_dir():
        raise _error(name, f"data directory {path} does not exist")
    raise _error(name, f"{path} does not hold the batch files")


def read_batch(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    label_key = LAYOUTS[name].label_key
    try:
        with open(path, "rb") as f:
            batch = _Unpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as error:
        raise _error(name, f"cannot read {path} ({error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise _error(name, f"{path} is not a CIFAR batch (no b'data' / {label_key!r} entries)")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _error(name, f"{path}: b'data' should be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise _error(name, f"{path}: {len(data)} images but labels of shape {labels.shape} ({labels.dtype})")
    if len(labels) and (labels.min() < 0 or labels.max() >= LAYOUTS[name].num_classes):
        raise _error(name, f"{path}: labels outside 0..{LAYOUTS[name].num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _split(folder: Path, files: tuple[str, ...], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [read_batch(folder / f, name) for f in files]
    images = torch.from_numpy(np.concatenate([x for x, _ in batches]))
    labels = torch.from_numpy(np.concatenate([y for _, y in batches]))
    return images.float().div_(255), labels


def load_cifar(spec: DatasetSpec) -> ImageData:
    layout = LAYOUTS[spec.name]
    folder = find_folder(spec.name, spec.root)
    train_x, train_y = _split(folder, layout.train, spec.name)
    test_x, test_y = _split(folder, layout.test, spec.name)
    return ImageData(train_x, train_y, test_x, test_y, layout.num_classes)


register_dataset("cifar10")(load_cifar)
register_dataset("cifar100")(load_cifar)
