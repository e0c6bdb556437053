"""Datasets held in memory as tensors: loaders registry, validation split, normalisation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lottery.errors import UserError
from lottery.registry import Registry
from lottery.spec import DatasetSpec

VALIDATION_SPLIT_SEED = 0  # fixed: the validation split never depends on any training seed


@dataclass(frozen=True)
class ImageData:
    """What a loader returns: images as float32 (N, C, H, W) in [0, 1], labels as int64 (N,)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int


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
    pad_value: Tensor  # per-channel value of a black pixel after normalisation (for crop padding)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device | str) -> Splits:
        return replace(
            self, **{k: getattr(self, k).to(device) for k in self.__dataclass_fields__ if k != "num_classes"}
        )


loaders: Registry[Callable[[DatasetSpec], ImageData]] = Registry("dataset")


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
        if x.dim() != 4 or x.shape[1:].numel() == 0:
            raise UserError(f"dataset {name!r}: {split} images of shape {tuple(x.shape[1:])} (need C x H x W pixels)")
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


def load(spec: DatasetSpec) -> Splits:
    """Load `spec.name`, hold out the validation split, optionally subset and normalise."""
    data = loaders.get(spec.name)(spec)
    check(data, spec.name)
    n = len(data.train_x)
    if spec.validation_size >= n:
        raise UserError(f"dataset.validation_size = {spec.validation_size} leaves no training data ({n} examples)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SPLIT_SEED))
    val_idx, train_idx = order[: spec.validation_size], order[spec.validation_size :].sort().values
    if spec.subset is not None:
        train_idx = train_idx[: spec.subset]
    train_x, train_y = data.train_x[train_idx], data.train_y[train_idx]
    val_x, val_y = data.train_x[val_idx.sort().values], data.train_y[val_idx.sort().values]
    channels = train_x.shape[1]
    mean, std = torch.zeros(channels), torch.ones(channels)
    if spec.normalize:
        mean = train_x.mean(dim=(0, 2, 3))
        std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)

    def norm(x: Tensor) -> Tensor:
        return ((x - mean[:, None, None]) / std[:, None, None]).contiguous()

    return Splits(
        train_x=norm(train_x),
        train_y=train_y,
        val_x=norm(val_x),
        val_y=val_y,
        test_x=norm(data.test_x),
        test_y=data.test_y,
        num_classes=data.num_classes,
        pad_value=-mean / std,
    )
