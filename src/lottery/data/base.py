"""Datasets by name (`lottery.registry.datasets`: built-ins and plugins, registered through `lottery.register_dataset`),
held in memory as tensors: validation split, normalisation."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from lottery.errors import UserError
from lottery.registry import Plugin, datasets
from lottery.spec import DatasetSpec

VALIDATION_SPLIT_SEED = 0  # fixed: the validation split never depends on any training seed


@dataclass(frozen=True)
class ImageData:
    """What a loader returns: inputs as float32 (N, ...) -- images (N, C, H, W) in [0, 1], sequences (N, C, L) or
    (N, L), tabular rows (N, F), or integer tokens (never normalised) -- and labels as int64 (N,). A loader may
    give its own validation split (`val_x`, `val_y`); otherwise one is held out of the training set. A loader of
    8-bit images may instead return them as stored (uint8) with `scale` = 255: `load` converts each split to float32
    divided by `scale` after splitting (the same numbers, without a float32 copy of the whole set beside its
    splits)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    val_x: Tensor | None = None
    val_y: Tensor | None = None
    scale: float | None = None  # inputs stored as integers, to be divided by this (float32) when loaded


@dataclass(frozen=True)
class Splits:
    """Train / validation / test tensors (normalised), ready to be moved to the training device."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    pad_value: Tensor  # per-channel (feature) value of a zero input after normalisation (images: crop padding)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def train_size(self) -> int:
        return len(self.train_x)

    def to(self, device: torch.device | str) -> Splits:
        return replace(
            self, **{k: getattr(self, k).to(device) for k in self.__dataclass_fields__ if k != "num_classes"}
        )


FOLDER_ONLY = ("classes", "fraction", "image_size")  # settings of the image-folder datasets only


def check(data: ImageData, name: str) -> None:
    """Refuse a dataset whose contents cannot be trained on (UserError, before anything is written): empty
    splits, images of no pixels or of different shapes in train and test, labels that disagree in number with
    the images or lie outside 0..classes-1."""
    if data.num_classes < 2:
        raise UserError(f"dataset {name!r} has {data.num_classes} class(es) (at least 2 are needed)")
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if len(x) == 0:
            raise UserError(f"dataset {name!r}: the {split} set is empty")
        if x.dim() < 2 or x.shape[1:].numel() == 0:
            raise UserError(f"dataset {name!r}: {split} images of shape {tuple(x.shape[1:])} (each needs some pixels)")
        if y.shape != (len(x),):
            raise UserError(f"dataset {name!r}: {len(x)} {split} images but labels of shape {tuple(y.shape)}")
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise UserError(f"dataset {name!r}: {split} labels are {y.dtype}, not integers")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= data.num_classes:
            bad = low if low < 0 else high
            raise UserError(
                f"dataset {name!r}: {split} label {bad} is out of range for {data.num_classes} classes "
                f"(allowed: 0..{data.num_classes - 1})"
            )
    if data.train_x.shape[1:] != data.test_x.shape[1:]:
        raise UserError(
            f"dataset {name!r}: test images are {tuple(data.test_x.shape[1:])}, train images "
            f"{tuple(data.train_x.shape[1:])} (they must have one shape)"
        )


def load(spec: DatasetSpec) -> Any:
    """Load `spec.name` (built in, or a plugin dataset), hold out the validation split unless the dataset gives
    one, optionally subset and normalise: `Splits` for in-memory data; a dataset that gives its own splits (an
    object with their interface: `input_shape`, `num_classes`, `train_size`, such as data/stream.py's
    `FolderSplits`, streamed from image folders) is returned as it is."""
    entry = datasets.check(spec.name, spec.source_hash)
    value = entry(**_arguments(entry, spec))
    if not isinstance(value, (ImageData, Mapping)) and all(
        hasattr(value, key) for key in ("input_shape", "num_classes", "train_size")
    ):
        return value
    # A plugin's return is checked and converted (labels as int64); a built-in's ImageData is checked by `check`.
    data = value if isinstance(value, ImageData) and entry.builtin else as_data(value, entry.describe())
    for name in FOLDER_ONLY:
        if getattr(spec, name) is not None:
            raise UserError(f"dataset.{name} applies to image-folder datasets only (imagefolder, imagenet)")
    check(data, spec.name)
    # One float32 copy of each split at most: splits are indexed before an integer-stored set (`scale`) is
    # converted, the loader's whole set is let go once split, and the copies made here are normalised in place
    # (the same elementwise operations as out of place: the same bits).
    if data.val_x is not None:
        train_idx = torch.arange(len(data.train_x))
        val_x, val_y = data.val_x, data.val_y
    else:
        n = len(data.train_x)
        if spec.validation_size >= n:
            raise UserError(f"dataset.validation_size = {spec.validation_size} leaves no training data ({n} examples)")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SPLIT_SEED))
        val_idx, train_idx = order[: spec.validation_size].sort().values, order[spec.validation_size :].sort().values
        val_x, val_y = data.train_x[val_idx], data.train_y[val_idx]
    if spec.subset is not None:
        train_idx = train_idx[: spec.subset]
    train_x, train_y = data.train_x[train_idx], data.train_y[train_idx]  # indexing copies: train_x is our own
    own = {"train": True, "val": data.val_x is None, "test": False}  # which inputs are copies made here
    test_x, test_y, num_classes, scale = data.test_x, data.test_y, data.num_classes, data.scale
    del data  # the loader's whole training set goes now (when nothing else holds it)
    if scale is not None:
        train_x, val_x, test_x = (x.to(torch.float32, copy=True).div_(scale) for x in (train_x, val_x, test_x))
        own = dict.fromkeys(own, True)
    mean, std = statistics(train_x) if spec.normalize and train_x.is_floating_point() else (None, None)

    def norm(x: Tensor, split: str) -> Tensor:
        if mean is None:
            return x.contiguous()
        m, s = _per_feature(mean, x), _per_feature(std, x)
        if own[split] and x.is_contiguous():
            return x.sub_(m).div_(s)
        return (x - m).div_(s).contiguous()

    features = train_x.shape[1] if train_x.dim() > 1 else 1
    return Splits(
        train_x=norm(train_x, "train"),
        train_y=train_y,
        val_x=norm(val_x, "val"),
        val_y=val_y,
        test_x=norm(test_x, "test"),
        test_y=test_y,
        num_classes=num_classes,
        pad_value=torch.zeros(features) if mean is None else -mean / std,
    )


def statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature (tabular (N, F)) or per-channel ((N, C, ...): sequences, images) mean and standard deviation of
    `x`, over every dimension but dimension 1; inputs (N,) have one feature. Constant features get std 1e-6."""
    dims = [d for d in range(x.dim()) if d != 1]
    return x.mean(dim=dims), x.std(dim=dims).clamp_min(1e-6)


def _per_feature(stat: Tensor, x: Tensor) -> Tensor:
    """`stat` (C,) shaped to broadcast along dimension 1 of `x`."""
    return stat.view(-1, *([1] * (x.dim() - 2))) if x.dim() > 1 else stat


def _arguments(entry: Plugin, spec: DatasetSpec) -> dict[str, Any]:
    """The factory's keyword arguments: [dataset.options], and `spec` where its signature names it; dataset.root only
    for a factory that reads `spec`."""
    if spec.options and entry.builtin:
        raise UserError(f"dataset.options applies to plugin datasets; '{spec.name}' is built in (see its settings)")
    kwargs = dict(spec.options)
    if entry.takes("spec"):
        if "spec" in kwargs:
            raise UserError("dataset.options.spec is set by lottery; remove it")
        kwargs["spec"] = spec
    elif spec.root is not None:
        raise UserError(f"dataset.root applies to built-in datasets; give {entry.describe()} [dataset.options]")
    try:
        inspect.signature(entry.factory).bind(**kwargs)
    except TypeError as error:
        raise UserError(f"[dataset.options] do not fit {entry.describe()}: {error}") from None
    return kwargs


def as_data(value: Any, what: str = "dataset") -> ImageData:
    """`value` as ImageData: an ImageData, or a mapping with "train" and "test" (and optionally "val") splits,
    each an (x, y) pair of tensors or a TensorDataset of two, and optionally "num_classes" (default: the largest
    label + 1)."""
    if isinstance(value, ImageData):
        splits = {"train": (value.train_x, value.train_y), "test": (value.test_x, value.test_y)}
        if value.val_x is not None:
            splits["val"] = (value.val_x, value.val_y)
        num_classes, scale = value.num_classes, value.scale
    elif isinstance(value, Mapping) and "train" in value and "test" in value:
        unknown = set(value) - {"train", "test", "val", "num_classes"}
        if unknown:
            raise UserError(f"{what} returned unknown keys {sorted(unknown)} (allowed: train, test, val, num_classes)")
        splits = {k: _pair(value[k], f"{what}: '{k}'") for k in ("train", "val", "test") if k in value}
        num_classes, scale = value.get("num_classes"), None
    else:
        raise UserError(f"{what} must return {{'train': (x, y), 'test': (x, y)}} or ImageData, got {type(value)}")
    for split, (x, y) in splits.items():
        if len(x) != len(y) or y.dim() != 1 or y.is_floating_point() or y.is_complex():
            raise UserError(
                f"{what}: '{split}' needs integer class labels y (N,) for inputs x (N, ...), got "
                f"x {tuple(x.shape)} and y {tuple(y.shape)} {y.dtype}"
            )
    if num_classes is None:
        num_classes = 1 + max(int(y.max()) for _, y in splits.values() if len(y))
    try:  # (an int, a numpy or 0-dimensional torch integer; not a bool, a float or a string)
        whole = None if isinstance(num_classes, bool) else operator.index(num_classes)
    except TypeError:
        whole = None
    if whole is None or whole < 1:
        raise UserError(f"{what}: num_classes must be a whole number >= 1, got {num_classes!r}")
    num_classes = whole
    for split, (x, _) in splits.items():
        if x.is_floating_point() and not all(bool(part.isfinite().all()) for part in x.split(65536)):
            raise UserError(f"{what}: '{split}' inputs are not all finite (NaN or inf): clean or impute them")
    for split, (_, y) in splits.items():
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise UserError(f"{what}: '{split}' labels must lie in 0..{num_classes - 1}")
    val = splits.get("val", (None, None))
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    return ImageData(
        train_x,
        train_y.long(),
        test_x,
        test_y.long(),
        int(num_classes),
        val[0],
        None if val[1] is None else val[1].long(),
        scale,
    )


def _pair(split: Any, what: str) -> tuple[Tensor, Tensor]:
    tensors = getattr(split, "tensors", split)  # a TensorDataset holds its tensors in .tensors
    if not isinstance(tensors, Sequence) or len(tensors) != 2 or not all(isinstance(t, Tensor) for t in tensors):
        raise UserError(f"{what} must be an (x, y) pair of tensors or a TensorDataset of two, got {type(split)}")
    x, y = tensors
    return (x.float() if x.is_floating_point() else x), y
