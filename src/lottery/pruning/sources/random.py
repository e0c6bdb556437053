"""`random`: uniform random scores from a seeded generator, the random-pruning baseline of every paper of the
area (e.g. Frankle et al., "Pruning Neural Networks at Initialization: Why Are We Missing the Mark?", ICLR 2021).
With global scope every coordinate is equally likely to be kept (per-layer counts vary); with layerwise scope
each layer keeps the target density uniformly at random."""

from __future__ import annotations

import torch
from torch import Tensor

from lottery.pruning.sources.base import ScoreInput, register_mask_source, weights_of


@register_mask_source("random", stream=34)
def random(inp: ScoreInput) -> dict[str, Tensor]:
    """Score ~ U(0, 1) per coordinate, drawn on the CPU from the seeded generator (device independent)."""
    return {
        name: torch.rand(w.shape, generator=inp.generator, dtype=torch.float64)
        for name, w in zip(inp.names, weights_of(inp.model, inp.names), strict=True)
    }
