"""Learning rate as a pure function of the iteration: linear warmup, then step decay at milestones, a cosine, or a
linear or exponential decay to `final_lr` at the end of training."""

from __future__ import annotations

import bisect
import math


def lr_at(
    iteration: int,
    base_lr: float,
    warmup: int,
    milestones: list[int],
    gamma: float,
    schedule: str = "step",
    end: int | None = None,
    final_lr: float | None = None,
) -> float:
    """The learning rate of iteration t (0-based, the t-th optimizer step).

    'step': base_lr * min(1, (t + 1) / warmup) * gamma ** (#milestones <= t).
    'linear' / 'exponential': the same warmup, then from base_lr at t = warmup to final_lr at t = end, linearly
    or geometrically (base_lr * (final_lr / base_lr) ** progress), per iteration.
    'cosine': the same warmup, then base_lr * (1 + cos(pi * (t - warmup) / (end - warmup))) / 2 for t >= warmup:
    base_lr at the end of warmup, decaying to 0 at `end` (the last step, t = end - 1, is just above 0).
    """
    factor = min(1.0, (iteration + 1) / warmup) if warmup > 0 else 1.0
    if schedule in ("linear", "exponential"):
        return base_lr * factor if iteration < warmup else decayed(iteration, base_lr, final_lr, warmup, end, schedule)
    if schedule == "cosine":
        if end is None:
            raise ValueError("the cosine schedule needs the end of training")
        if iteration < warmup:
            return base_lr * factor
        progress = (iteration - warmup) / max(1, end - warmup)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return base_lr * factor * gamma ** bisect.bisect_right(sorted(milestones), iteration)


def decayed(iteration: int, base_lr: float, final_lr: float | None, start: int, end: int | None, kind: str) -> float:
    """base_lr at `start` decayed to final_lr at `end`, linearly or exponentially."""
    if end is None or final_lr is None:
        raise ValueError(f"the {kind} schedule needs the end of training and training.final_lr")
    progress = min(1.0, (iteration - start) / max(1, end - start))
    if kind == "linear":
        return base_lr + (final_lr - base_lr) * progress
    return base_lr * (final_lr / base_lr) ** progress
