"""Image-folder datasets streamed from disk: batches decoded by worker processes, never all in memory.

`FolderStream` has the contract of `BatchStream`: batch t is a pure function of (data-order seed,
augmentation seed, t). The order is `epoch_permutation` of the training listing, as for in-memory data; each
example's crop and flip come from its own seed (`imaging.decode`). So a resumed run, a run rewound to
iteration k, a run with another number of workers and each rank's slice of a global batch see exactly the
images, crops and flips one uninterrupted process sees. Upcoming iterations are decoded ahead by a pool of
worker processes (`Runtime.data_workers`; 0 decodes in the training process). A worker that dies (SIGKILL, the
out-of-memory killer) breaks the pool: it is replaced and the lost images decoded again (the same bytes: decoding
is a pure function of the item), at most `RESTARTS` times per process, after which the run stops with one line.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lottery.data import folder, imaging
from lottery.data.base import VALIDATION_SPLIT_SEED
from lottery.data.batches import epoch_permutation
from lottery.errors import UserError
from lottery.plugins import register_dataset
from lottery.spec import DatasetSpec

DEFAULT_IMAGE_SIZE = 224
CHUNK = 16  # images per worker task
PREFETCH = 2  # iterations decoded ahead of the one being trained
EVAL_BATCH = 250
RESTARTS = 3  # broken pools (a worker killed) a process replaces before it stops with one line

_pools: dict[int, ProcessPoolExecutor] = {}
_restarts = 0


def pool(workers: int) -> ProcessPoolExecutor | None:
    """The process's pool of `workers` decoding processes (forked once, reused), or None for 0."""
    if workers <= 0:
        return None
    if workers not in _pools:
        _pools[workers] = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_follow_parent, initargs=(os.getpid(),)
        )
    return _pools[workers]


def _follow_parent(parent: int) -> None:
    """In a worker: exit when the training process dies, even by SIGKILL (its pipes would otherwise stay open)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # elsewhere: poll
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _replace(workers: int, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
    """A new pool of `workers` in place of `broken` (one restart, however many decodings find it broken); a
    UserError once this process has replaced RESTARTS pools (the count starts again for the next command)."""
    global _restarts
    if _pools.get(workers) is broken:
        del _pools[workers]
        broken.shutdown(wait=False, cancel_futures=True)
        _restarts += 1
        if _restarts > RESTARTS:
            died, _restarts = _restarts, 0
            raise UserError(
                f"image decoding worker processes died {died} times (killed by a signal or the out-of-memory "
                "killer?); run the same command again to resume, with fewer --data-workers (0: decode in the "
                "training process)"
            )
        print(
            f"lottery: an image decoding worker process died; restarting the pool of {workers} "
            f"({_restarts}/{RESTARTS})",
            file=sys.stderr,
        )
    return pool(workers)  # type: ignore[return-value]  (workers > 0)


@atexit.register
def _shutdown() -> None:
    for executor in _pools.values():
        executor.shutdown(wait=False, cancel_futures=True)
    _pools.clear()


class Decoding:
    """Images being decoded (by the pool, or here when there is none), joined into one batch on request."""

    def __init__(self, items: list[imaging.Item], size: int, workers: int) -> None:
        self.chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
        self.size, self.workers = size, workers
        self.executor = pool(workers)
        if self.executor is None:
            self.parts: list[Future | np.ndarray] = [imaging.decode_many(c, size) for c in self.chunks]
        else:
            self.parts = self._submit()

    def _submit(self) -> list[Future | np.ndarray]:
        """Every chunk submitted to the pool (a new one where the pool is found broken)."""
        while True:
            assert self.executor is not None
            try:
                return [self.executor.submit(imaging.decode_many, c, self.size) for c in self.chunks]
            except BrokenProcessPool:
                self.executor = _replace(self.workers, self.executor)

    def result(self) -> np.ndarray:
        while True:
            try:
                arrays = [p.result() if isinstance(p, Future) else p for p in self.parts]
                break
            except BrokenProcessPool:  # a worker died: decode this batch again in a new pool
                assert self.executor is not None
                self.executor = _replace(self.workers, self.executor)
                self.parts = self._submit()
        return np.concatenate(arrays) if arrays else np.empty((0, self.size, self.size, 3), np.uint8)


def to_input(images: np.ndarray, device: torch.device, normalize: bool) -> Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) on `device`, in [0, 1] or normalised with ImageNet statistics.
    The uint8 batch is moved first (4x less to copy), then converted there."""
    x = torch.from_numpy(images).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    if normalize:
        mean = torch.tensor(imaging.MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(imaging.STD, device=device).view(1, 3, 1, 1)
        x = x.sub_(mean).div_(std)
    return x.contiguous()


@dataclass(frozen=True)
class FolderSplits:
    """The training, validation and test listings of an image folder, and how to turn them into batches."""

    train: folder.Listing
    val: folder.Listing
    test: folder.Listing
    num_classes: int
    image_size: int
    augment: bool
    normalize: bool
    device: torch.device = torch.device("cpu")
    workers: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    @property
    def train_size(self) -> int:
        return len(self.train)

    def to(self, device: torch.device | str) -> FolderSplits:
        return replace(self, device=torch.device(device))

    def with_workers(self, workers: int) -> FolderSplits:
        return replace(self, workers=workers)

    def stream(self, batch_size: int, data_order_seed: int, augmentation_seed: int | None) -> FolderStream:
        """The training batches (augmented while decoding when `dataset.augment`)."""
        return FolderStream(self, batch_size, data_order_seed, augmentation_seed if self.augment else None)

    def split(self, name: str) -> folder.Listing:
        return getattr(self, name)

    def eval_batches(
        self, name: str, lo: int, hi: int, batch_size: int = EVAL_BATCH
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Examples [lo, hi) of split `name` with the eval transform, in order, decoded a batch ahead."""
        return self.decode_batches(self.split(name), lo, hi, batch_size)

    def examples(self, name: str, index: Tensor | None = None) -> Examples:
        """Split `name`, or its examples at `index` in that order, to be read in eval-transform batches."""
        listing = self.split(name)
        return Examples(self, listing if index is None else listing.take(index.cpu()))

    def decode_batches(
        self, listing: folder.Listing, lo: int, hi: int, batch_size: int = EVAL_BATCH
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Examples [lo, hi) of `listing` with the eval transform, in order, decoded a batch ahead."""
        starts = list(range(lo, hi, batch_size))

        def submit(start: int) -> Decoding:
            paths = listing.paths[start : min(start + batch_size, hi)]
            return Decoding([imaging.Item(p) for p in paths], self.image_size, self.workers)

        pending = submit(starts[0]) if starts else None
        for i, start in enumerate(starts):
            current = pending
            pending = submit(starts[i + 1]) if i + 1 < len(starts) else None
            x = to_input(current.result(), self.device, self.normalize)
            yield x, listing.labels[start : min(start + batch_size, hi)].to(self.device)


@dataclass(frozen=True)
class Examples:
    """Examples of an image folder in a fixed order (a split, or a subset of one), never held in memory: each
    reading decodes them again with the eval transform (no augmentation), batch by batch (`decode_batches`)."""

    data: FolderSplits
    listing: folder.Listing

    def __len__(self) -> int:
        return len(self.listing)

    def batches(self, batch_size: int = EVAL_BATCH) -> Iterator[tuple[Tensor, Tensor]]:
        """(inputs, labels) batches of `batch_size` in order on the data's device (the last one may be smaller)."""
        return self.data.decode_batches(self.listing, 0, len(self.listing), batch_size)


class FolderStream:
    """Iteration t -> the t-th training batch of an image folder (the `BatchStream` contract: `batch`, `slice`,
    `indices`, `batch_size`, `iterations_per_epoch`). The last partial batch of an epoch is dropped."""

    def __init__(self, data: FolderSplits, batch_size: int, data_order_seed: int, augmentation_seed: int | None):
        n = data.train_size
        if batch_size > n:
            raise UserError(f"training.batch_size = {batch_size} is larger than the training set ({n} examples)")
        self.data, self.batch_size = data, batch_size
        self.data_order_seed, self.augmentation_seed = data_order_seed, augmentation_seed
        self.augment = None  # augmentation happens while decoding, per example (see `imaging`)
        self.iterations_per_epoch = n // batch_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)
        self._pending: dict[tuple[int, int, int], Decoding] = {}

    def indices(self, iteration: int) -> Tensor:
        epoch, position = divmod(iteration, self.iterations_per_epoch)
        if epoch != self._epoch:
            self._order = epoch_permutation(self.data.train_size, self.data_order_seed, epoch)
            self._epoch = epoch
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]

    def items(self, iteration: int, lo: int, hi: int) -> list[imaging.Item]:
        """Examples lo..hi-1 of batch `iteration`, each with the seed of its crop and flip."""
        index = self.indices(iteration)[lo:hi].tolist()
        paths = self.data.train.paths
        if self.augmentation_seed is None:
            return [imaging.Item(paths[i]) for i in index]
        return [imaging.Item(paths[i], (self.augmentation_seed, iteration, lo + j)) for j, i in enumerate(index)]

    def _decoding(self, iteration: int, lo: int, hi: int) -> Decoding:
        return Decoding(self.items(iteration, lo, hi), self.data.image_size, self.data.workers)

    def slice(self, iteration: int, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Examples lo..hi-1 of the global batch `iteration` (what a rank trains on); decoding of the next
        iterations' same slice starts before this one is returned."""
        key = (iteration, lo, hi)
        current = self._pending.pop(key, None) or self._decoding(iteration, lo, hi)
        for stale in [k for k in self._pending if k[0] <= iteration or k[1:] != (lo, hi)]:
            del self._pending[stale]  # a jump (rewind, another slice): their results are never read
        if self.data.workers > 0:
            for ahead in range(iteration + 1, iteration + 1 + PREFETCH):
                if (ahead, lo, hi) not in self._pending:
                    self._pending[(ahead, lo, hi)] = self._decoding(ahead, lo, hi)
        x = to_input(current.result(), self.data.device, self.data.normalize)
        y = self.data.train.labels[self.indices(iteration)[lo:hi]].to(self.data.device)
        return x, y

    def batch(self, iteration: int) -> tuple[Tensor, Tensor]:
        return self.slice(iteration, 0, self.batch_size)


def load_folder(spec: DatasetSpec) -> FolderSplits:
    """An image folder as listings: class and example subsets, the held-out validation split, val/ as test."""
    if spec.root is None:
        raise UserError(f"{spec.name}: set dataset.root to a folder holding train/<class>/*.JPEG and val/<class>/")
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise UserError(f"{spec.name}: data directory {root} does not exist")
    classes = folder.choose_classes(folder.class_names(root, spec.name), spec.classes, spec.name)
    if len(classes) < 2:
        raise UserError(f"{spec.name}: {len(classes)} class folder(s) in {root / 'train'} (at least 2 are needed)")
    train = folder.list_split(root, "train", classes, spec.name)
    test = folder.list_split(root, "val", classes, spec.name)
    train = folder.fraction_subset(train, spec.fraction, len(classes))
    n = len(train)
    if spec.validation_size >= n:
        raise UserError(f"dataset.validation_size = {spec.validation_size} leaves no training data ({n} examples)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SPLIT_SEED))
    val_idx, train_idx = order[: spec.validation_size].sort().values, order[spec.validation_size :].sort().values
    if spec.subset is not None:
        train_idx = train_idx[: spec.subset]
    return FolderSplits(
        train=train.take(train_idx),
        val=train.take(val_idx),
        test=test,
        num_classes=len(classes),
        image_size=spec.image_size or DEFAULT_IMAGE_SIZE,
        augment=spec.augment,
        normalize=spec.normalize,
    )


register_dataset("imagefolder")(load_folder)
register_dataset("imagenet")(load_folder)
