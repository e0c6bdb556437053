"""Training data as a function of the iteration, for runs that start at any iteration (a level rewound to k).

IMP with rewinding trains a subnetwork from iteration k to T with the data the dense run saw at k..T, so the batch
of an iteration must depend on the iteration alone, not on how many runs came before. Epoch e visits the training
set in the order `randperm(n)` from `seeding.generator("data_order", seed, e)` (or 0..n-1 without shuffling), in
`n // batch_size` full batches (the last partial batch of an epoch is dropped, as the engine does); micro-batch b is
batch `b % per_epoch` of epoch `b // per_epoch`. Under data parallelism (`torch.distributed`), each epoch's order
is split among the ranks first (rank r takes positions r, r + W, ..., padded to a multiple of W by repeating the
order from its start, as often as needed, as torch's `DistributedSampler` does), so each rank's batch is its share
of one global order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from lottery import seeding
from lottery.errors import UserError


class IterationOrder:
    """Which examples make up each micro-batch b = 0, 1, ... (see the module docstring)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1) -> None:
        """`rank`, `world`: this process's rank and the number of data-parallel processes."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world = rank, world
        share = -(-n // self.world)  # each rank's examples per epoch
        self.per_epoch = share // batch_size
        if self.per_epoch == 0:
            raise UserError(
                f"the training set ({n} examples{f' over {self.world} ranks' if self.world > 1 else ''}) is smaller "
                f"than one batch ({batch_size}); use a smaller batch size"
            )
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's examples in epoch `epoch`, in order."""
        if self.shuffle:
            order = torch.randperm(self.n, generator=seeding.generator("data_order", self.seed, epoch))
        else:
            order = torch.arange(self.n)
        if self.world > 1:
            total = -(-self.n // self.world) * self.world
            repeats = -(-total // self.n)  # more than one repeat where the set is smaller than the ranks
            order = order.repeat(repeats)[:total]
            order = order[self.rank :: self.world]
        return order

    def indices(self, batch: int) -> list[int]:
        """The examples of micro-batch `batch` (on this rank)."""
        epoch, position = divmod(batch, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self.epoch_order(epoch)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size].tolist()


class IterationSampler(Sampler[int]):
    """The examples of micro-batches `first`..`last - 1`, one after another: with `batch_size` of the order and no
    partial batches, a DataLoader over it yields exactly those micro-batches."""

    def __init__(self, order: IterationOrder, first: int, last: int) -> None:
        self.order, self.first, self.last = order, first, last

    def __len__(self) -> int:
        return (self.last - self.first) * self.order.batch_size

    def __iter__(self) -> Iterator[int]:
        for batch in range(self.first, self.last):
            yield from self.order.indices(batch)
