"""Global magnitude pruning: one threshold over every layer in the pool."""

from __future__ import annotations

from torch import Tensor

from lottery.pruning.mask import Mask
from lottery.pruning.ranking import remove_smallest
from lottery.pruning.strategies import check_one_rate, strategies


@strategies.register("global_magnitude")
def global_magnitude(weights: dict[str, Tensor], mask: Mask, fractions: dict[str, float]) -> Mask:
    """Remove the common fraction of the pool's surviving weights with the smallest |w|, across layers."""
    check_one_rate("global_magnitude", fractions)
    new = Mask({name: m.clone() for name, m in mask.items()})
    if not fractions:
        return new
    pool = [name for name in mask if name in fractions]
    fraction = next(iter(fractions.values()))
    kept = remove_smallest([weights[name] for name in pool], [mask[name] for name in pool], fraction)
    new.update(zip(pool, kept, strict=True))
    return new
