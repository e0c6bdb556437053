"""Gradual magnitude pruning (Zhu & Gupta: "To prune, or not to prune: exploring the efficacy of pruning for model
compression", ICLR workshop 2018, §3, eq. 1).

From dense, the sparsity follows s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n Δt))^3 with s_i = 0, pruned every Δt
steps from t_0 to t_0 + n Δt (here `start`, `every`, `end`; also at `end` itself so the final density is reached),
as tensorflow/contrib/model_pruning's `_setup_sparsity` (exponent 3). At each pruning step the active weights of
smallest magnitude go: in each layer (`uniform`: every layer at the same density, as in the paper; `erk`: the layers
at ERK's densities) or over the pool at once (`global`). A pruned weight is never grown again.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lottery.dynamic.distribution import kept_count, layer_counts
from lottery.pruning.mask import Mask


def gmp_density(step: int, density: float, start: int, end: int) -> float:
    """The density the schedule sets at `step`: 1 before `start`, `density` from `end` on, cubic in between."""
    if step <= start:
        return 1.0
    if step >= end:
        return density
    progress = (step - start) / (end - start)
    return 1.0 - (1.0 - density) * (1.0 - (1.0 - progress) ** 3)


def is_gmp_step(step: int, start: int, end: int, every: int) -> bool:
    """Whether the network is pruned before optimizer step `step` (0-based)."""
    return start < step <= end and ((step - start) % every == 0 or step == end)


def _keep_largest(values: Tensor, active: Tensor, count: int) -> Tensor:
    """`active` (flat bool) with only its `count` entries of largest value left (ties: the earlier stays)."""
    alive = active.nonzero().reshape(-1)
    order = torch.sort(values[alive], stable=True).indices  # ascending: the first ones go
    new = active.clone()
    new[alive[order[: alive.numel() - count]]] = False
    return new


def gmp_update(weights: Mapping[str, Tensor], mask: Mask, density: float, distribution: str) -> Mask:
    """The mask pruned by magnitude to `density` of the pool (a subset of `mask`; counts exact, never more than the
    weights still active)."""
    magnitude = {name: weights[name].detach().reshape(-1).to("cpu", torch.float64).abs() for name in mask}
    flat = {name: m.reshape(-1).to("cpu", torch.bool) for name, m in mask.items()}
    if distribution == "global":
        total = sum(m.numel() for m in flat.values())
        count = min(kept_count(density, total), sum(int(m.sum()) for m in flat.values()))
        kept = _keep_largest(torch.cat(list(magnitude.values())), torch.cat(list(flat.values())), count)
        parts = kept.split([m.numel() for m in flat.values()])
        return Mask({name: part.reshape(mask[name].shape) for name, part in zip(mask, parts)})
    shapes = {name: tuple(m.shape) for name, m in mask.items()}
    counts = layer_counts(shapes, density, distribution, caps={name: int(m.sum()) for name, m in flat.items()})
    return Mask(
        {name: _keep_largest(magnitude[name], flat[name], counts[name]).reshape(mask[name].shape) for name in mask}
    )
