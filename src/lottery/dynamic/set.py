"""SET, Sparse Evolutionary Training (Mocanu, Mocanu, Stone, Nguyen, Gibescu, Liotta: "Scalable training of
artificial neural networks with adaptive sparse connectivity inspired by network science", Nature Communications
9, 2383, 2018).

Each update drops, in every layer, the fraction of active weights closest to zero and grows as many at positions
drawn uniformly at random among the inactive ones, as google-research/rigl's `SparseSETOptimizer` (random uniform
grow scores, top-k). The draw is seeded by (seed, step, layer), so an update is a pure function of the weights, the
seed and the step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lottery.dynamic.update import drop_and_grow
from lottery.pruning.mask import Mask
from lottery.seeding import generator


def set_update(weights: Mapping[str, Tensor], mask: Mask, fraction: float, seed: int, step: int) -> Mask:
    """The mask after one SET update at `step`: drop score |w|, grow score uniform on [0, 1) from
    `generator("dynamic.set_growth", seed, step, layer index)`."""
    new = {}
    for index, (name, active) in enumerate(mask.items()):
        score = torch.rand(
            active.numel(), generator=generator("dynamic.set_growth", seed, step, index), dtype=torch.float64
        )
        new[name] = drop_and_grow(active, weights[name].abs(), score, fraction)
    return Mask(new)
