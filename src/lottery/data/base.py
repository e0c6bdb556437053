"""Datasets held in memory as tensors: loaders registry, validation split, normalisation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

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

    @property
    def train_size(self) -> int:
        return len(self.train_x)

    def to(self, device: torch.device | str) -> Splits:
        return replace(
            self, **{k: getattr(self, k).to(device) for k in self.__dataclass_fields__ if k != "num_classes"}
        )


# A loader returns the whole dataset in memory (ImageData), or its own streamed splits (data/stream.py).
loaders: Registry[Callable[[DatasetSpec], Any]] = Registry("dataset")
FOLDER_ONLY = ("classes", "fraction", "image_size")  # settings of the image-folder datasets only


def load(spec: DatasetSpec) -> Any:
    """Load `spec.name`, hold out the validation split, optionally subset and normalise: `Splits` for the
    in-memory datasets, `FolderSplits` (the same interface, streamed) for image folders."""
    data = loaders.get(spec.name)(spec)
    if not isinstance(data, ImageData):
        return data
    for name in FOLDER_ONLY:
        if getattr(spec, name) is not None:
            raise UserError(f"dataset.{name} applies to image-folder datasets only (imagefolder, imagenet)")
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
