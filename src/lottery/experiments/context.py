"""Everything a process needs to train any part of one experiment: data on the device, the schedule in
iterations, seeded models. Validating it touches no file, so bad input is refused before anything
is written."""

from __future__ import annotations

import dataclasses
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch

from lottery import data as datasets
from lottery import models
from lottery.data import Splits
from lottery.data.batches import Augment
from lottery.errors import UserError, first_line
from lottery.experiments.mask_points import snapshot_points, stability_point
from lottery.models import Network
from lottery.pruning import Mask
from lottery.spec import ExperimentSpec, Step, TrainingSpec, spec_hash
from lottery.store import RunDir, layout
from lottery.training import Job, Runtime, Schedule, should_batch


def default_workers(runtime: Runtime) -> int:
    """Image-decoding processes: `runtime.data_workers`, at most the CPUs this process may use (a larger value is
    cut, with one line on stderr), else this process's share of those CPUs (divided among torchrun's processes on
    this machine, $LOCAL_WORLD_SIZE), at least 1 and at most 8."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if runtime.data_workers is not None:
        if runtime.data_workers > cpus:
            import sys

            print(
                f"lottery: --data-workers {runtime.data_workers} cut to {cpus}, the CPUs this process may use",
                file=sys.stderr,
            )
        return min(runtime.data_workers, cpus)
    return max(1, min(8, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))))


class Context:
    def __init__(self, spec: ExperimentSpec, runtime: Runtime) -> None:
        self.spec = spec
        self.runtime = runtime
        self.announced: set[object] = set()  # what this process has said once (a diverged chain)
        self.fingerprint_cache: Path | None = None  # where file digests are kept (set by views.bind: in the store)

    @cached_property
    def data(self) -> Splits:
        data = datasets.load(self.spec.dataset).to(self.runtime.device)
        if hasattr(data, "with_workers"):  # an image folder, streamed by worker processes
            data = data.with_workers(default_workers(self.runtime))
        return data

    @cached_property
    def data_fingerprint(self) -> str:
        """What the dataset contains (data/fingerprint.py): part of the dense network's recipe."""
        from lottery.data.fingerprint import fingerprint

        return fingerprint(self.spec.dataset, lambda: self.data, self.fingerprint_cache)

    @cached_property
    def schedule(self) -> Schedule:
        train_size = self.data.train_size
        if self.spec.training.batch_size > train_size:
            raise UserError(
                f"training.batch_size = {self.spec.training.batch_size} is larger than the training set "
                f"({train_size} examples)"
            )
        schedule = Schedule.of(self.spec.training, train_size // self.spec.training.batch_size)
        if schedule.end < 1:
            raise UserError("training.training_steps must be at least 1 iteration")
        return schedule

    @cached_property
    def rewind_points(self) -> list[int]:
        """Every rewind point in iterations, sorted: those of IMP and those of the stability analysis."""
        return sorted(set(self.iterations("imp.rewind", self.spec.imp.rewind)) | set(self.stability_points))

    @cached_property
    def dense_snapshots(self) -> list[int]:
        """Every iteration at which the dense run saves its weights: the rewind points, and what [masks] reads."""
        return sorted(set(self.rewind_points) | set(snapshot_points(self)))

    @cached_property
    def stability_points(self) -> list[int]:
        return sorted(set(self.iterations("stability.rewind", self.spec.stability.rewind)))

    def iterations(self, field: str, steps: tuple[str, ...]) -> list[int]:
        """Step strings of spec field `field` in iterations; UserError for one at or after the end of training."""
        points = []
        for step in steps:
            k = Step.parse(step).to_iterations(self.schedule.iterations_per_epoch)
            if k >= self.schedule.end:
                raise UserError(
                    f"{field} point {step} (iteration {k}) must be before the end of training "
                    f"(training.training_steps = {self.spec.training.training_steps} = {self.schedule.end} iterations)"
                )
            points.append(k)
        return points

    @cached_property
    def augment(self) -> Augment | None:
        if not self.spec.dataset.augment or not isinstance(self.data, Splits):
            return None  # image folders augment each example while decoding it (data/imaging.py)
        if self.data.train_x.dim() != 4:
            raise UserError(
                "dataset.augment (random crop + flip) applies to images (N, C, H, W); dataset "
                f"'{self.spec.dataset.name}' has inputs of shape {tuple(self.data.input_shape)}: set it to false"
            )
        from lottery.data.augment import crop_and_flip

        return partial(crop_and_flip, pad_value=self.data.pad_value)

    @cached_property
    def layer_kinds(self) -> dict[str, str]:
        from lottery.pruning.prunable import prunable

        return prunable(self._network)  # the shipped networks' own layer_kinds(); defaults for any other module

    def validate(self) -> None:
        """Raise UserError for anything that would fail later: data, model, schedule, pruning settings."""
        from lottery.training import losses

        loss = losses.make(self.spec.training)  # the loss (built in, or a plugin's whose code matches the spec)
        if self.spec.training.precision == "bf16" and self.runtime.device.type != "cuda":
            raise UserError("training.precision = 'bf16' needs a CUDA device (allowed here: 'fp32')")
        from lottery.training import distributed

        distributed.check_batch(self.spec.training.batch_size)  # under torchrun: one equal slice per rank
        _ = self.schedule, self.dense_snapshots, self.layer_kinds, self.augment
        stability_point(self)  # stability.masks: its subjects' point (masks.at, level 0) must be analysed
        from lottery.pruning import strategies

        strategies.get(self.spec.pruning.strategy)  # a wrong name is refused even where nothing is pruned
        if self.spec.dynamic.methods:  # dynamic sparsity (issue 28)
            from lottery.dynamic.settings import check

            check(self.spec.dynamic, self.schedule.end, self.schedule.iterations_per_epoch)
        if self.spec.imp.levels or self.spec.controls.kinds or self.spec.masks.sources:
            from lottery.pruning import prune

            model = self._network
            weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            prune(weights, Mask.ones(model), self.layer_kinds, self.spec.pruning)
        self._check_first_batch(loss)

    def _check_first_batch(self, loss: Any) -> None:
        """Refuse, in one line and before anything is written, a model that cannot take the dataset's inputs or whose
        outputs the loss cannot take: its forward pass and loss on two training examples (in eval mode: no random
        number is drawn and no statistic is updated)."""
        x, y = getattr(self.data, "train_x", None), getattr(self.data, "train_y", None)
        if x is None or y is None:
            from lottery.data.stream import FolderSplits

            if not isinstance(self.data, FolderSplits):
                return
            # an image folder streams float (N, 3, H, W) batches: two blank images of that shape, none decoded
            x = torch.zeros((2, *self.data.input_shape), device=self.data.device)
            y = torch.zeros(2, dtype=torch.long, device=self.data.device)
        model = self._network
        try:
            model.eval()
            with torch.no_grad():
                loss(model(x[:2]), y[:2])
        except Exception as exc:  # noqa: BLE001  (any failure of the user's model or data: one line)
            kind = "integer (token ids, given to the model as they are)" if not x.is_floating_point() else str(x.dtype)
            hint = (
                "; 8-bit images need ImageData(..., scale=255), which converts them to float"
                if x.dtype == torch.uint8
                else ""
            )
            first = first_line(exc)
            raise UserError(
                f"model '{self.spec.model.name}' cannot train on dataset '{self.spec.dataset.name}': its forward pass "
                f"and loss fail on the training inputs (shape {tuple(x.shape[1:])}, {kind}): {first}{hint}"
            ) from None
        finally:
            model.train()
        from lottery import collective

        per_process = self.spec.training.batch_size // collective.world_size()
        if per_process == 1:  # a batch of one in train mode (BatchNorm cannot): on a copy, with the RNG restored
            import copy

            devices = [x.device.index or 0] if x.device.type == "cuda" else []
            try:
                with torch.random.fork_rng(devices=devices), torch.no_grad():
                    loss(copy.deepcopy(model).train()(x[:1]), y[:1])
            except Exception as exc:  # noqa: BLE001  (any failure of the user's model: one line)
                first = first_line(exc)
                raise UserError(
                    f"model '{self.spec.model.name}' cannot train on batches of one example (training.batch_size = "
                    f"{self.spec.training.batch_size}, {per_process} per process): {first}; use a larger batch"
                ) from None

    def stacks(self, k: int) -> bool:
        """Whether a group of k runs of this experiment's network (k >= 1) is trained as one stacked model.

        The answer for k >= 2 does not depend on k (`should_batch`), and callers ask with the size of a group
        fixed by the spec, never with what is left to train: every run is then computed with one arithmetic,
        whichever task trains it, in whatever order, and however often it is resumed."""
        return k >= 1 and should_batch(self._network, self.runtime, max(k, 2))

    @cached_property
    def _network(self) -> Network:
        return self.model(0)

    def mask(self, tensors: dict[str, torch.Tensor]) -> Mask:
        """A mask read from disk, in the model's parameter order (the order ties and random masks follow)."""
        return Mask({name: tensors[name] for name in self.layer_kinds})

    def training(self, replicate: int) -> TrainingSpec:
        """Replicate r shifts every seed by r (replicate 0 is the spec as written)."""
        t = self.spec.training
        return dataclasses.replace(
            t,
            init_seed=t.init_seed + replicate,
            data_order_seed=t.data_order_seed + replicate,
            augmentation_seed=t.augmentation_seed + replicate,
        )

    def model(self, init_seed: int, weights: dict[str, torch.Tensor] | None = None) -> Network:
        model = models.build(self.spec.model, self.data.input_shape, self.data.num_classes, init_seed)
        if weights is not None:
            model.load_state_dict(weights)
        return model.to(self.runtime.device)

    def tags(self, run: RunDir, replicate: int, kind: str, level: int, rewind: int | None = None, **more: Any) -> dict:
        """A run's identity, for `Job.tags`: written into its safetensors files and tagging its tracked metrics
        (`training/provenance.py`). `more`: `seed` (a control's), `copy` (a stability copy's index)."""
        experiment = spec_hash(self.spec)
        parts = run.path.parts
        where = len(parts) - 1 - parts[::-1].index(experiment) if experiment in parts else None
        relative = "/".join(parts[where + 1 :]) if where is not None else layout.network_name(run.path) or str(run.path)
        tags = {
            "experiment": experiment,
            "spec_hash": experiment,
            "run": relative,
            "kind": kind,
            "level": level,
            "rewind_iteration": rewind,
            "replicate": replicate,
            **more,
        }
        return {key: value for key, value in tags.items() if value is not None}

    def job(self, replicate: int, **kwargs: Any) -> Job:
        return Job(training=self.training(replicate), schedule=self.schedule, augment=self.augment, **kwargs)
