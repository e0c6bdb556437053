"""Lottery tickets through PyTorch Lightning (`pip install 'lottery[lightning]'`; docs/api.md, "Training with
PyTorch Lightning").

- `LotteryCallback(mask)`: a `lightning.pytorch.Callback` that holds `mask` in a plain `trainer.fit` of a
  subnetwork: the pruned weights are zeroed when fitting starts, their gradients are zeroed by gradient hooks as
  backward computes them (before accumulation, clipping and DDP's averaging), and the mask is attached
  (`lottery.attach`) to every optimizer `configure_optimizers` returns and to any the trainer steps later. Under
  DDP every rank takes rank 0's mask.
- `train_fn(train_dataloaders, val_dataloaders=None, **trainer_kwargs)`: a `train_fn(model, mask, start, end)` for
  `lottery.imp` (and for training copies of a subnetwork) that fits a `LightningModule` with
  `lightning.Trainer(max_steps=end - start, **trainer_kwargs)` from iteration `start`, the data order and the
  learning-rate schedule continuing from `start` (see `TrainFn`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

from lottery import seeding
from lottery.errors import UserError
from lottery.integrations.hold import MaskHolder
from lottery.integrations.iterations import IterationOrder, IterationSampler
from lottery.integrations.levels import level_metrics
from lottery.pruning import Mask

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover  (the extra is installed where this module is used)
    raise ImportError("lottery.integrations.lightning needs Lightning: pip install 'lottery[lightning]'") from error

SET_BY_LOTTERY = ("max_steps", "max_epochs", "min_steps", "min_epochs", "max_time", "limit_train_batches")


class LotteryCallback(pl.Callback):
    """Holds `mask` (parameter names of the LightningModule -> bool, True = kept) while a Trainer fits: pruned
    weights, their gradients and their optimizer state stay exactly zero. `.mask` is the mask in use (rank 0's
    under DDP)."""

    def __init__(self, mask: Mask | Mapping[str, torch.Tensor]) -> None:
        self.holder = MaskHolder(mask if isinstance(mask, Mask) else Mask(mask))

    @property
    def mask(self) -> Mask:
        return self.holder.mask

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # after the process group exists, before DDP broadcasts rank 0's weights
            self.holder.bind(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            self.holder.attach(optimizer)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.holder.attach(optimizer)  # an optimizer created or changed since the start is attached here

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.holder.check(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.holder.release()


class _Continue(pl.Callback):
    """Positions a fit at iteration `start`: the global RNG seeded from (seed, start) as the engine does, every
    step-interval LR scheduler stepped as often as a run from 0 would have by then, and the loggers' step axis
    continued from `logged` (the steps this train_fn logged before)."""

    def __init__(self, start: int, accumulate: int, seed: int, logged: int) -> None:
        self.start, self.accumulate, self.seed, self.logged = start, accumulate, seed, logged

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            name = type(config.scheduler).__name__
            if config.interval != "step" or config.reduce_on_plateau:
                raise UserError(
                    f"lottery: the LR scheduler {name} steps per {config.interval}"
                    f"{' on a metric' if config.reduce_on_plateau else ''}; a run that starts at iteration k "
                    "continues only a schedule over iterations: return it with 'interval': 'step' "
                    "(and its length in iterations) from configure_optimizers"
                )
            batches = self.start * self.accumulate
            period = math.lcm(self.accumulate, config.frequency)
            if batches % config.frequency:
                raise UserError(
                    f"lottery: the LR scheduler {name} steps every {config.frequency} batches, which does not divide "
                    f"the {batches} batches before iteration {self.start}; use frequency 1"
                )
            with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": on purpose here
                warnings.simplefilter("ignore")
                for _ in range(batches // period):
                    config.scheduler.step()
        trainer.fit_loop.epoch_loop._batches_that_stepped = self.logged  # loggers' step: one axis over all runs
        torch.manual_seed(seeding.derive("dropout", self.seed, self.start))


class TrainFn:
    """`train_fn(model, mask, start, end)` for `lottery.imp` through Lightning; made by `train_fn(...)`.

    Each call fits `model` (a `LightningModule` holding the start weights) with a new
    `lightning.Trainer(max_steps=end - start, **trainer_kwargs)` and a `LotteryCallback(mask)`, and returns the
    Trainer's `callback_metrics` as floats (with `val_dataloaders`, validation runs at the end of each fit).

    How training continues from `start` exactly as a run from 0 would at that iteration:

    - data: the train DataLoader's dataset, batch size, collate function and workers are kept; its order becomes a
      function of the iteration: epoch e is `randperm(n)` from `seeding.generator("data_order", seed, e)` if the loader
      shuffles (a `RandomSampler`), else 0..n-1, in `n // batch_size` full batches; the fit visits the micro-batches
      of iterations `start`..`end - 1` (`accumulate_grad_batches` each). Under DDP each epoch's order is split among
      the ranks (Lightning's distributed sampler is not used). Lightning sees one epoch per fit.
    - LR schedule: the schedulers `configure_optimizers` returns must step per iteration (`'interval': 'step'`);
      before the first batch each is stepped as often as a run from 0 steps it before `start`, so a schedule
      defined over T iterations (take T from your module, not `trainer.max_steps`, which is `end - start`) is at
      its value for `start`. A fresh optimizer is made at `start` (the engine's default).
    - randomness: the global RNG (dropout) is seeded from (`seed`, `start`) when training starts, as the engine does.

    Loggers: the first fit's loggers (Lightning's default TensorBoard logger, or those in `trainer_kwargs`) are
    reused by every later fit, with one step axis over all fits, so the whole IMP run is one run of each tracker;
    `log_level(level)` adds the per-level results to it.
    """

    def __init__(
        self, train_dataloaders: DataLoader, val_dataloaders: Any = None, *, seed: int = 0, **trainer_kwargs: Any
    ) -> None:
        set_here = [key for key in SET_BY_LOTTERY if key in trainer_kwargs]
        if set_here:
            raise UserError(
                f"lightning.train_fn: {', '.join(set_here)} cannot be given: each run trains from start to end "
                "(max_steps = end - start)"
            )
        loader = train_dataloaders
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            raise UserError(
                "lightning.train_fn: train_dataloaders must be a torch DataLoader over a map-style dataset (the batch "
                f"of each iteration is drawn by index), got {type(loader).__name__}"
            )
        if loader.batch_size is None or not isinstance(loader.sampler, RandomSampler | SequentialSampler):
            raise UserError(
                "lightning.train_fn: the train DataLoader must have a batch_size and shuffle=True or False (its order "
                f"becomes a function of the iteration); got sampler {type(loader.sampler).__name__}"
            )
        if isinstance(loader.sampler, RandomSampler) and (loader.sampler.replacement or loader.sampler._num_samples):
            raise UserError("lightning.train_fn: a RandomSampler with replacement or num_samples is not supported")
        self.loader, self.val_dataloaders, self.seed = loader, val_dataloaders, seed
        self.trainer_kwargs = dict(trainer_kwargs)
        self.accumulate = int(self.trainer_kwargs.get("accumulate_grad_batches", 1))
        self.loggers: list[Any] | None = None  # the first fit's, reused
        self.logged = 0
        self.trainer: pl.Trainer | None = None  # the last fit's

    def _loader(self, first: int, last: int, rank: int, world: int) -> DataLoader:
        loader = self.loader
        shuffle = isinstance(loader.sampler, RandomSampler)
        order = IterationOrder(len(loader.dataset), loader.batch_size, shuffle, self.seed, rank, world)
        workers = loader.num_workers
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=IterationSampler(order, first, last),
            collate_fn=loader.collate_fn,
            num_workers=workers,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context if workers else None,
            generator=seeding.generator("loader_workers", self.seed, first),
            prefetch_factor=loader.prefetch_factor if workers else None,
        )

    def __call__(self, model: pl.LightningModule, mask: Mask, start: int, end: int) -> dict[str, float]:
        if not isinstance(model, pl.LightningModule):
            raise UserError(f"lightning.train_fn: the model must be a LightningModule, got {type(model).__name__}")
        kwargs = dict(self.trainer_kwargs)
        kwargs.setdefault("enable_checkpointing", False)  # lottery stores what it needs (imp(directory=))
        kwargs["use_distributed_sampler"] = False  # the order is lottery's, split among ranks (see TrainFn)
        if self.loggers is not None:
            kwargs["logger"] = self.loggers or False
        callback = LotteryCallback(mask)
        kwargs["callbacks"] = [
            *_as_list(kwargs.get("callbacks")),
            callback,
            _Continue(start, self.accumulate, self.seed, self.logged),
        ]
        trainer = pl.Trainer(max_steps=end - start, **kwargs)
        if self.loggers is None:
            self.loggers = list(trainer.loggers)
        loader = self._loader(start * self.accumulate, end * self.accumulate, trainer.global_rank, trainer.world_size)
        trainer.fit(model, train_dataloaders=loader, val_dataloaders=self.val_dataloaders)
        self.logged += end - start
        self.trainer = trainer
        return {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}

    def log_level(self, level: Any) -> dict[str, float]:
        """Log an IMP level (a `lottery.imp` Level) to the fits' loggers, at step = its level: `lottery/level`,
        `lottery/density` and every number in its result (e.g. `lottery/val_acc`), and each control's as
        `lottery/<control>/<metric>`. Returns what was logged."""
        metrics = level_metrics(level)
        for logger in self.loggers or []:
            logger.log_metrics(metrics, step=int(level.level))
            logger.save()
        return metrics


def train_fn(train_dataloaders: DataLoader, val_dataloaders: Any = None, **trainer_kwargs: Any) -> TrainFn:
    """A `train_fn(model, mask, start, end)` for `lottery.imp` that fits a `LightningModule` with
    `lightning.Trainer(max_steps=end - start, **trainer_kwargs)` from iteration `start` (see `TrainFn`; `seed=`:
    the data order's and the run's RNG seed, default 0)."""
    return TrainFn(train_dataloaders, val_dataloaders, **trainer_kwargs)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
