"""`synflow`: Iterative Synaptic Flow Pruning (Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without
any data by iteratively conserving synaptic flow", NeurIPS 2020, Algorithm 1): data-free; with every
parameter replaced by its absolute value and an all-ones input, R = 1ᵀ(∏_l |W_l|)1 is the sum of the
network's outputs, and the score is the synaptic saliency |∂R/∂w ⊙ w| (Eq. 2 with R_SF). Scores are
recomputed on the masked network over 100 rounds with an exponential density schedule by default (the
paper's §6). BatchNorm as in the authors' code: the network scores in eval mode (running statistics; the
source's `default_mode`, `masks.score_mode` changes it). Precision: scores are computed in float64 here; the
authors' code has its conversion to double commented out (`# model.double()`) and so scores in float32 — float64
keeps the products of |W| over many layers and 100 rounds from under- or overflowing, and can choose a different
mask where float32 rounding ties scores. The absolute values are taken on a working copy, so the model's signs
are untouched."""

from __future__ import annotations

import torch
from torch import Tensor

from lottery.pruning.sources.base import ScoreInput, register_mask_source, weights_of


@register_mask_source("synflow", stream=33, default_rounds=100, default_mode="eval")
def synflow(inp: ScoreInput) -> dict[str, Tensor]:
    """Score = |∂R/∂w ⊙ w| with R the output sum of the |θ| network on an all-ones input."""
    model = inp.model  # in its scoring mode already (eval by default)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.abs_()
    shape = inp.options.get("input_shape")
    if shape is None:
        raise ValueError("synflow needs the input shape (input_shape=(C, H, W) or batches)")
    first = next(model.parameters())
    r = model(torch.ones((1, *shape), dtype=torch.float64, device=first.device)).sum()
    weights = weights_of(model, inp.names)
    grads = torch.autograd.grad(r, weights)
    return {name: (g * w).detach().abs() for name, g, w in zip(inp.names, grads, weights, strict=True)}
