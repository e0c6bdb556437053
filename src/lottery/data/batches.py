"""Batches gathered by index from tensors on the training device; order and augmentation are pure
functions of (seed, epoch or iteration), so a run resumes, or a subnetwork rewinds, to any iteration
with exactly the data it would have seen."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lottery import seeding
from lottery.errors import UserError

Augment = Callable[[Tensor, torch.Generator], Tensor]


def epoch_permutation(n: int, data_order_seed: int, epoch: int) -> Tensor:
    """The order of the training set in `epoch` (computed on the CPU, so it is the same on any device)."""
    return torch.randperm(n, generator=seeding.generator("data_order", data_order_seed, epoch))


class BatchStream:
    """Iteration t -> the t-th training batch. Each epoch is a fresh permutation; the last partial
    batch of an epoch is dropped, so every batch has the same shape."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        data_order_seed: int,
        augmentation_seed: int | None = None,
        augment: Augment | None = None,
    ) -> None:
        if batch_size > len(x):
            raise UserError(f"training.batch_size = {batch_size} is larger than the training set ({len(x)} examples)")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.data_order_seed = data_order_seed
        self.augmentation_seed = augmentation_seed
        self.augment = augment
        self.iterations_per_epoch = len(x) // batch_size
        self._epoch, self._order = -1, x.new_empty(0, dtype=torch.long)

    def indices(self, iteration: int) -> Tensor:
        epoch, position = divmod(iteration, self.iterations_per_epoch)
        if epoch != self._epoch:
            self._order = epoch_permutation(len(self.x), self.data_order_seed, epoch).to(self.x.device)
            self._epoch = epoch
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]

    def slice(self, iteration: int, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Examples lo..hi-1 of batch `iteration` (a rank's share). Augmentation draws its parameters for the whole
        batch from one generator, so with augmentation the whole batch is augmented and the slice kept: exactly
        the examples, crops and flips of `batch`. Without it only the slice is gathered."""
        if self.augment is not None and self.augmentation_seed is not None:
            x, y = self.batch(iteration)
            return x[lo:hi], y[lo:hi]
        index = self.indices(iteration)[lo:hi]
        return self.x.index_select(0, index), self.y.index_select(0, index)

    def batch(self, iteration: int) -> tuple[Tensor, Tensor]:
        index = self.indices(iteration)
        x, y = self.x.index_select(0, index), self.y.index_select(0, index)  # = x[index], y[index]; faster
        if self.augment is not None and self.augmentation_seed is not None:
            x = self.augment(x, seeding.generator("augmentation", self.augmentation_seed, iteration))
        return x, y
