"""What one training run computes (`Job`: from a start iteration to the end, with a fixed mask) and the schedule
of the training spec in iterations (`Schedule`). Below the loop, so that the run's provenance
(`training/provenance.py`) and the loop both read it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lottery.data.batches import Augment
from lottery.pruning import Mask
from lottery.spec import Step, TrainingSpec


@dataclass(frozen=True)
class Schedule:
    """The training spec's step strings in iterations, for a dataset's epoch length."""

    iterations_per_epoch: int
    end: int
    warmup: int
    milestones: list[int]
    eval_every: int

    @classmethod
    def of(cls, training: TrainingSpec, iterations_per_epoch: int) -> Schedule:
        def its(step: str) -> int:
            return Step.parse(step).to_iterations(iterations_per_epoch)

        return cls(
            iterations_per_epoch,
            its(training.training_steps),
            its(training.warmup_steps),
            [its(s) for s in training.milestone_steps],
            max(1, its(training.eval_every)),
        )


@dataclass
class Job:
    """One training run: from `start` (iteration k) to `end` with a fixed mask."""

    training: TrainingSpec
    schedule: Schedule
    start: int = 0
    mask: Mask | None = None
    snapshots: tuple[int, ...] = ()  # iterations at which to save weights (rewind points)
    snapshot_optimizer: bool = False  # also save the optimizer state there
    optimizer_state: dict[str, Any] | None = None  # restored at `start` (IMP's 'rewind' option)
    augment: Augment | None = None
    tags: dict[str, Any] = field(default_factory=dict)  # the run's identity (training/provenance.py); not results
