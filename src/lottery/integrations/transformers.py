"""Lottery tickets through the Hugging Face `Trainer` (`pip install 'lottery[transformers]'`; docs/api.md,
"Training with Hugging Face Transformers").

- `LotteryCallback(mask)`: a `transformers.TrainerCallback` that holds `mask` in `trainer.train()`: the pruned
  weights are zeroed when training begins, their gradients are zeroed by gradient hooks as backward computes them
  (so gradient accumulation and `max_grad_norm` clipping see the subnetwork's gradients), and the mask is attached
  (`lottery.attach`) to the optimizer the Trainer creates (AdamW by default), so pruned weights and optimizer state
  stay exactly zero through its LR scheduler and weight decay.
- `train_fn(args, train_dataset, **trainer_kwargs)`: a `train_fn(model, mask, start, end)` for `lottery.imp` that
  trains with `transformers.Trainer(model, args with max_steps = end - start, train_dataset, **trainer_kwargs)`
  from iteration `start` (see `TrainFn`). With a model from `from_pretrained`, level 0's W_0 is the pre-trained
  checkpoint and `rewind=0` rewinds to it (Chen et al. 2020).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from lottery import seeding
from lottery.errors import UserError
from lottery.integrations.hold import MaskHolder
from lottery.integrations.iterations import IterationOrder, IterationSampler
from lottery.integrations.levels import level_metrics
from lottery.pruning import Mask

try:
    import transformers
except ImportError as error:  # pragma: no cover  (the extra is installed where this module is used)
    raise ImportError(
        "lottery.integrations.transformers needs transformers: pip install 'lottery[transformers]'"
    ) from error

SHUFFLED = {"random": True, "sequential": False}


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (whose step calls the inner one's)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class LotteryCallback(transformers.TrainerCallback):
    """Holds `mask` (parameter names of the model -> bool, True = kept) while a `transformers.Trainer` trains:
    pruned weights, their gradients and their optimizer state stay exactly zero. `.mask` is the mask in use."""

    def __init__(self, mask: Mask | dict[str, torch.Tensor]) -> None:
        self.holder = MaskHolder(mask if isinstance(mask, Mask) else Mask(mask))

    @property
    def mask(self) -> Mask:
        return self.holder.mask

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.holder.bind(model)
        if kwargs.get("optimizer") is not None:
            self.holder.attach(_torch_optimizer(kwargs["optimizer"]))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if kwargs.get("optimizer") is not None:
            self.holder.attach(_torch_optimizer(kwargs["optimizer"]))  # an optimizer created since is attached here

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.holder.check(model)
        self.holder.release()


class _SeedAtStart(transformers.TrainerCallback):
    """Seeds the global RNG (dropout) from (seed, start) when training begins, as the engine does for a run."""

    def __init__(self, seed: int, start: int) -> None:
        self.seed, self.start = seed, start

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        torch.manual_seed(seeding.derive("dropout", self.seed, self.start))


class _Trainer(transformers.Trainer):
    """`transformers.Trainer` positioned at iteration `start` of a run that ends at `end` (see `TrainFn`)."""

    def __init__(self, *args: Any, lottery_span: tuple[int, int, int], **kwargs: Any) -> None:
        self.lottery_start, self.lottery_end, self.lottery_seed = lottery_span
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> IterationSampler:
        """The micro-batches of iterations start..end-1 in lottery's order; the Trainer's own DataLoader (collator,
        column removal, workers) batches them with `_train_batch_size`."""
        accumulate = self.args.gradient_accumulation_steps
        order = IterationOrder(len(self.train_dataset), self._train_batch_size, self._shuffle(), self.lottery_seed)
        return IterationSampler(order, self.lottery_start * accumulate, self.lottery_end * accumulate)

    def _shuffle(self) -> bool:
        strategy = getattr(self.args, "train_sampling_strategy", "random")
        if strategy not in SHUFFLED:
            raise UserError(
                f"transformers.train_fn: train_sampling_strategy = {strategy!r} is not supported "
                "(allowed: 'random', 'sequential': an order that is a function of the iteration)"
            )
        return SHUFFLED[strategy]

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The schedule over the whole run (`end` iterations, warm-up included), stepped to `start`."""
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(self.lottery_end, optimizer)
        if created:
            with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": on purpose here
                warnings.simplefilter("ignore")
                for _ in range(self.lottery_start):
                    scheduler.step()
        return scheduler


class TrainFn:
    """`train_fn(model, mask, start, end)` for `lottery.imp` through the Hugging Face `Trainer`; made by
    `train_fn(...)`.

    Each call trains `model` (holding the start weights) with a new `transformers.Trainer` (`args` copied with
    `max_steps = end - start`, `train_dataset`, `**trainer_kwargs`, a `LotteryCallback(mask)`), and returns
    `trainer.train()`'s metrics, plus `trainer.evaluate()`'s when an `eval_dataset` is given (`eval_loss`, and your
    `compute_metrics`', e.g. `eval_accuracy`).

    How training continues from `start` exactly as a run from 0 would at that iteration (an iteration is an
    optimizer step: `gradient_accumulation_steps` micro-batches):

    - data: epoch e visits `train_dataset` in the order `randperm(n)` from `seeding.generator("data_order", seed, e)`
      (`train_sampling_strategy='sequential'`: 0..n-1) in `n // per_device_train_batch_size` full batches, `seed`
      being `args.data_seed`, else `args.seed`; the run visits the micro-batches of iterations `start`..`end - 1`.
      The Trainer's collator, column removal and workers are kept.
    - LR schedule: the Trainer's scheduler (`lr_scheduler_type`, warm-up) is made for `end` iterations and stepped
      `start` times before the first step, so it is at its value for `start`. A fresh optimizer (the Trainer's
      AdamW) is made at `start` (the engine's default).
    - randomness: the global RNG (dropout) is seeded from (seed, `start`) when training begins, as the engine does.

    One process (the data order is not split among processes here). Trackers: with `report_to` (TensorBoard, W&B,
    MLflow), the runs log to one tracker run: TensorBoard's directory is the first run's (HF otherwise names one per
    run by its start time), MLflow's first run is resumed by the later ones, W&B's run stays open;
    `log_level(level)` adds the per-level results there through `trainer.log`.
    """

    def __init__(self, args: Any, train_dataset: Any, **trainer_kwargs: Any) -> None:
        if not isinstance(args, transformers.TrainingArguments):
            raise UserError(f"transformers.train_fn: args must be TrainingArguments, got {type(args).__name__}")
        if "optimizers" in trainer_kwargs:
            raise UserError(
                "transformers.train_fn: optimizers= would carry one optimizer across runs; every run makes a fresh "
                "one: set args.optim, or pass optimizer_cls_and_kwargs="
            )
        if "train_dataset" in trainer_kwargs or "args" in trainer_kwargs:
            raise UserError("transformers.train_fn: give args and train_dataset once, as the first two arguments")
        if isinstance(train_dataset, torch.utils.data.IterableDataset) or not hasattr(train_dataset, "__len__"):
            raise UserError("transformers.train_fn: train_dataset must be a map-style dataset (indexable, with length)")
        if args.world_size > 1:
            raise UserError(
                "transformers.train_fn: runs in one process (the data order is not split among processes); "
                f"this one is one of {args.world_size}"
            )
        self.args, self.train_dataset, self.trainer_kwargs = args, train_dataset, dict(trainer_kwargs)
        self.seed = args.data_seed if args.data_seed is not None else args.seed
        self.trainer: transformers.Trainer | None = None  # the last run's
        self.logging_dirs: dict[type, str] = {}  # the first run's tracker directories (TensorBoard), reused
        self.mlflow_run: str | None = None  # the first run's MLflow run, resumed by later runs

    def __call__(self, model: Any, mask: Mask, start: int, end: int) -> dict[str, float]:
        args = copy.copy(self.args)
        args.max_steps = end - start
        kwargs = dict(self.trainer_kwargs)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), LotteryCallback(mask), _SeedAtStart(self.seed, start)]
        trainer = _Trainer(
            model=model, args=args, train_dataset=self.train_dataset, lottery_span=(start, end, self.seed), **kwargs
        )
        for callback in trainer.callback_handler.callbacks:  # every run writes to the first run's directory
            if type(callback) in self.logging_dirs and getattr(callback, "logging_dir", None) is None:
                callback.logging_dir = self.logging_dirs[type(callback)]
        with self._mlflow(trainer):
            output = trainer.train()
        for callback in trainer.callback_handler.callbacks:
            if isinstance(getattr(callback, "logging_dir", None), str):
                self.logging_dirs.setdefault(type(callback), callback.logging_dir)
        result = {k: float(v) for k, v in output.metrics.items() if isinstance(v, int | float)}
        if trainer.eval_dataset is not None:
            result.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, int | float)})
        self.trainer = trainer
        return result

    def log_level(self, level: Any) -> dict[str, float]:
        """Log an IMP level (a `lottery.imp` Level) through the last run's `trainer.log`, at step = its level, to
        the trackers in `args.report_to`: `lottery/level`, `lottery/density`, every number of its result (e.g.
        `lottery/eval_accuracy`) and each control's as `lottery/<control>/<metric>`. Returns what was logged."""
        metrics = level_metrics(level)
        trainer = self.trainer
        if trainer is None:
            return metrics
        step = trainer.state.global_step
        trainer.state.global_step = int(level.level)
        try:
            with self._mlflow(trainer):
                trainer.log(dict(metrics))
        finally:
            trainer.state.global_step = step
        for callback in trainer.callback_handler.callbacks:
            writer = getattr(callback, "tb_writer", None)
            if writer is not None:
                writer.flush()
        return metrics

    @contextlib.contextmanager
    def _mlflow(self, trainer: transformers.Trainer) -> Iterator[None]:
        """With the Trainer's MLflow callback: the first run's MLflow run resumed around this call (the callback
        ends the run it starts at the end of train(), and reuses an active one without ending it), so every run
        and every level logs to one MLflow run; the first run's id is recorded."""
        if not any(type(c).__name__ == "MLflowCallback" for c in trainer.callback_handler.callbacks):
            yield
            return
        import mlflow

        resumed = self.mlflow_run is not None and mlflow.active_run() is None
        if resumed:
            mlflow.start_run(run_id=self.mlflow_run)
        try:
            yield
        finally:
            if self.mlflow_run is None:
                run = mlflow.active_run() or mlflow.last_active_run()
                self.mlflow_run = run.info.run_id if run is not None else None
            if resumed:
                mlflow.end_run()


def train_fn(args: Any, train_dataset: Any, **trainer_kwargs: Any) -> TrainFn:
    """A `train_fn(model, mask, start, end)` for `lottery.imp` that trains with `transformers.Trainer` from
    iteration `start` to `end` (`args.max_steps = end - start`; see `TrainFn`)."""
    return TrainFn(args, train_dataset, **trainer_kwargs)
