"""`snip`: connection sensitivity (Lee, Ajanthan, Torr, "SNIP: Single-shot Network Pruning based on Connection
Sensitivity", ICLR 2019, Eq. 6): s_j = |∂L/∂c_j| at c = 1, which for a mask c multiplying the weights equals
|∂L/∂w_j ⊙ w_j|. L is the mean loss over a seeded set of training batches; the paper normalises s by its sum,
which does not change the ranking and is left out."""

from __future__ import annotations

from torch import Tensor

from lottery.pruning.sources.base import ScoreInput, ScoringBatches, batch_gradients, register_mask_source, weights_of


@register_mask_source("snip", stream=31, options=ScoringBatches, needs_data=True)
def snip(inp: ScoreInput) -> dict[str, Tensor]:
    """Score = |g ⊙ w| with g the gradient of the mean batch loss."""
    grads = batch_gradients(inp)
    weights = weights_of(inp.model, inp.names)
    return {name: (g * w).detach().abs() for name, g, w in zip(inp.names, grads, weights, strict=True)}
