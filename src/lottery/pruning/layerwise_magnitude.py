"""Layerwise magnitude pruning: each layer removes its own fraction of its smallest surviving weights."""

from __future__ import annotations

from torch import Tensor

from lottery.pruning.mask import Mask
from lottery.pruning.ranking import remove_smallest
from lottery.pruning.strategies import per_layer, strategies


@strategies.register("layerwise_magnitude")
@per_layer
def layerwise_magnitude(weights: dict[str, Tensor], mask: Mask, fractions: dict[str, float]) -> Mask:
    """For each layer in `fractions`, remove that fraction of its surviving weights with the smallest |w|."""
    new = Mask({name: m.clone() for name, m in mask.items()})
    for name, fraction in fractions.items():
        (new[name],) = remove_smallest([weights[name]], [mask[name]], fraction)
    return new
