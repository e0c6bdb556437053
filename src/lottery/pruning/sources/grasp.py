"""`grasp`: Gradient Signal Preservation (Wang, Zhang, Grosse, "Picking Winning Tickets Before Training by
Preserving Gradient Flow", ICLR 2020, Eq. 8): S(−θ) = −θ ⊙ Hg, with H the Hessian of the loss and g its
gradient, Hg computed by double backward (Hg = ∂(gᵀ·stopgrad(g))/∂θ over the prunable weights, Algorithm 1).
The paper removes the weights with the HIGHEST S (those whose removal reduces gradient flow least; the
authors' code keeps `S <= threshold` of the top fraction), so the keep score returned here is
−S = θ ⊙ Hg (higher = keep). Optional `grasp_temperature` divides the logits as the authors' code does
(T = 200 there; the paper's equation has none, default 1)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lottery.errors import UserError
from lottery.pruning.sources.base import ScoreInput, ScoringBatches, batch_gradients, register_mask_source, weights_of


@dataclass(frozen=True)
class GraspOptions(ScoringBatches):
    """`[masks] snip_batches` (the scoring batches) and `grasp_temperature`: the logits are divided by T in the
    loss (the authors' code: 200)."""

    grasp_temperature: float = 1.0

    def validate(self) -> None:
        super().validate()
        if not self.grasp_temperature > 0:
            raise UserError(f"masks.grasp_temperature must be > 0, got {self.grasp_temperature}")


def hessian_gradient(inp: ScoreInput) -> list[Tensor]:
    """H g for the scored weights: g from a first pass (no graph), then ∂(g · ∇L)/∂θ with ∇L differentiable."""
    temperature = float(inp.settings.grasp_temperature)
    loss_fn = inp.loss_fn
    scaled = inp if temperature == 1.0 else replace(inp, loss_fn=lambda out, y: loss_fn(out / temperature, y))
    g = [t.detach() for t in batch_gradients(scaled)]
    grad_f = batch_gradients(scaled, create_graph=True)
    z = sum((a * b).sum() for a, b in zip(g, grad_f, strict=True))
    return list(torch.autograd.grad(z, weights_of(inp.model, inp.names)))


@register_mask_source("grasp", stream=32, options=GraspOptions, needs_data=True)
def grasp(inp: ScoreInput) -> dict[str, Tensor]:
    """Keep score = θ ⊙ Hg = −S(−θ): the weights with the lowest S are kept."""
    hg = hessian_gradient(inp)
    weights = weights_of(inp.model, inp.names)
    return {name: (w * h).detach() for name, w, h in zip(inp.names, weights, hg, strict=True)}
