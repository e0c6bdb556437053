"""What RigL and SET share: one drop-and-grow of a layer, the drop-fraction schedule and the update steps.

The reference is `_get_update_op`, `get_drop_fraction` and `is_mask_update_iter` of google-research/rigl
(rigl/sparse_optimizers_base.py): of a layer's n active weights, floor(n * fraction) with the lowest drop score are
dropped; as many are grown, those of highest grow score among all the weights then inactive (a weight just dropped
may be grown again: it then keeps its value and optimizer state, as the reference's `reinit_when_same=False`). Ties go
to the earlier position (a stable sort) where the reference adds Gaussian noise of std 1e-5 to the drop scores.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DROP_SCHEDULES = ("cosine", "constant")


def drop_and_grow(active: Tensor, drop_score: Tensor, grow_score: Tensor, fraction: float) -> Tensor:
    """A layer's new mask (bool, `active`'s shape) with exactly as many active weights as `active`."""
    flat = active.reshape(-1).to("cpu", torch.bool)
    drop = drop_score.detach().reshape(-1).to("cpu", torch.float64)
    grow = grow_score.detach().reshape(-1).to("cpu", torch.float64)
    alive = flat.nonzero().reshape(-1)
    count = int(alive.numel() * fraction)  # the reference truncates: cast(n_ones * drop_fraction, int32)
    kept = flat.clone()
    kept[alive[torch.sort(drop[alive], stable=True).indices[:count]]] = False
    free = (~kept).nonzero().reshape(-1)
    new = kept.clone()
    new[free[torch.sort(grow[free], descending=True, stable=True).indices[:count]]] = True
    return new.reshape(active.shape)


def drop_fraction_at(step: int, fraction: float, schedule: str, stop: int) -> float:
    """The fraction dropped at `step`: constant, or cosine decay from `fraction` at step 0 to 0 at `stop`
    (tf.train.cosine_decay, as the reference: fraction * (1 + cos(pi * min(step, stop) / stop)) / 2)."""
    if schedule == "constant" or stop == 0:
        return fraction
    return fraction * 0.5 * (1 + math.cos(math.pi * min(step, stop) / stop))


def is_update_step(step: int, every: int, stop: int) -> bool:
    """Whether the mask is updated before optimizer step `step` (0-based): every `every` steps, up to `stop`."""
    return 0 < step <= stop and step % every == 0
