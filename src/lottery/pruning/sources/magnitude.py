"""`magnitude`: |w| of the weights the mask is computed from (iteration k of the dense run; at k = 0 this is
magnitude pruning at initialization, the baseline of Frankle et al., "Pruning Neural Networks at
Initialization: Why Are We Missing the Mark?", ICLR 2021, §3). With global scope it chooses exactly the mask
of `pruning.strategy = 'global_magnitude'` one-shot to the same density."""

from __future__ import annotations

from torch import Tensor

from lottery.pruning.sources.base import ScoreInput, register_mask_source, weights_of


@register_mask_source("magnitude", stream=30)
def magnitude(inp: ScoreInput) -> dict[str, Tensor]:
    """Score = |w|."""
    return {name: w.detach().abs() for name, w in zip(inp.names, weights_of(inp.model, inp.names), strict=True)}
