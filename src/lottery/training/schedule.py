"""Learning rate as a pure function of the iteration: linear warmup, then step decay at milestones."""

from __future__ import annotations

import bisect


def lr_at(iteration: int, base_lr: float, warmup: int, milestones: list[int], gamma: float) -> float:
    """Iteration t (0-based) trains with base_lr * min(1, (t + 1) / warmup) * gamma ** (#milestones <= t)."""
    factor = min(1.0, (iteration + 1) / warmup) if warmup > 0 else 1.0
    return base_lr * factor * gamma ** bisect.bisect_right(sorted(milestones), iteration)
