"""The iterations of the dense run that the [masks] runs read: W_at (`masks.at`) and the early-bird trace's points;
and the stability point that studies them (`stability.masks`). Apart from experiments/masks.py so that the context
(which asks the dense run to save them, and validates the spec) needs only this. What they read of an experiment
is `Points` (the context has it), so that this module does not import the context that imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from lottery.errors import UserError
from lottery.spec import Step

if TYPE_CHECKING:
    from lottery.spec import ExperimentSpec
    from lottery.training.job import Schedule


class Points(Protocol):
    """What these functions read of an experiment (`experiments.context.Context`)."""

    @property
    def spec(self) -> ExperimentSpec: ...

    @property
    def schedule(self) -> Schedule: ...

    @property
    def stability_points(self) -> list[int]: ...

    def iterations(self, field: str, steps: tuple[str, ...]) -> list[int]: ...


def at_iteration(ctx: Points) -> int:
    return ctx.iterations("masks.at", (ctx.spec.masks.at,))[0]


def trace_points(ctx: Points) -> list[int]:
    """The dense run's iterations whose weights the early-bird trace reads (the end T: its final weights)."""
    if "early_bird" not in ctx.spec.masks.sources:
        return []
    every = ctx.spec.masks.early_bird_every or ctx.spec.training.eval_every
    step = max(1, Step.parse(every).to_iterations(ctx.schedule.iterations_per_epoch))
    return [*range(0, ctx.schedule.end, step), ctx.schedule.end]


def snapshot_points(ctx: Points) -> list[int]:
    """The dense run's snapshots [masks] needs besides the rewind points: W_at, and the trace points."""
    if not ctx.spec.masks.sources:
        return []
    return sorted({at_iteration(ctx), *trace_points(ctx)[:-1]})


def stability_point(ctx: Points) -> int | None:
    """The rewind point whose level-0 stability point studies the `stability.masks` subjects (k = `masks.at`); None
    without them. UserError where the analysis does not cover (masks.at, level 0)."""
    if not ctx.spec.stability.masks:
        return None
    k = at_iteration(ctx)
    if k not in ctx.stability_points:
        raise UserError(
            f"stability.masks studies the [masks] runs at their rewind point masks.at = {ctx.spec.masks.at} "
            f"(iteration {k}): add it to stability.rewind (now {list(ctx.spec.stability.rewind)})"
        )
    levels = ctx.spec.stability.levels
    if levels is not None and 0 not in levels:
        raise UserError(
            "stability.masks studies the [masks] runs at level 0 (next to the dense network): "
            f"add 0 to stability.levels (now {list(levels)})"
        )
    return k
