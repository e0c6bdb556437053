"""The exact counting and tie rules every pruning shares: how many of the surviving coordinates a fraction
removes, and which (the lowest scores, the earlier position first on ties)."""

from __future__ import annotations

import torch
from torch import Tensor


def rounded_count(fraction: float, surviving: int) -> int:
    """How many of `surviving` weights a fraction removes: floor(fraction * surviving + 0.5)."""
    return min(surviving, int(fraction * surviving + 0.5))


def remove_smallest(weights: list[Tensor], masks: list[Tensor], fraction: float) -> list[Tensor]:
    """New masks for these layers taken as one pool: the `rounded_count(fraction, surviving)` surviving
    weights of smallest |w| are removed. Pruned weights are never candidates, whatever their value. Ties go
    to the earlier position in the concatenation of the flattened layers (stable sort)."""
    return remove_lowest([w.detach().to("cpu", torch.float64).abs() for w in weights], masks, fraction)


def remove_lowest(scores: list[Tensor], masks: list[Tensor], fraction: float) -> list[Tensor]:
    """`remove_smallest` for any scores (signed; higher = keep): the `rounded_count(fraction, surviving)`
    surviving coordinates of lowest score are removed, ties to the earlier position (stable sort, float64)."""
    alive = torch.cat([m.detach().reshape(-1).to("cpu", torch.bool) for m in masks])
    values = torch.cat([s.detach().reshape(-1).to("cpu", torch.float64) for s in scores])
    if values.numel() != alive.numel():
        raise ValueError("weights and mask shapes differ")
    candidates = alive.nonzero().reshape(-1)  # ascending positions
    count = rounded_count(fraction, candidates.numel())
    order = torch.sort(values[candidates], stable=True).indices
    alive[candidates[order[:count]]] = False
    return [part.reshape(m.shape) for part, m in zip(alive.split([m.numel() for m in masks]), masks, strict=True)]
