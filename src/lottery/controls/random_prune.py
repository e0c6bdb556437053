"""`random_prune`: a random mask with the IMP level's per-layer density (and its `pruning.structure`) on W_k
(Frankle & Carbin, ICLR 2019, §2: "randomly sampled sparse networks"; Frankle et al., "Stabilizing the Lottery
Ticket Hypothesis", §4), trained like the level."""

from __future__ import annotations

from lottery.controls.base import ControlInput, ControlStart, register_control
from lottery.pruning import random_like


@register_control(
    "random_prune", stream=21, label="random pruning (layerwise)", colormap="Greens", linestyle=":", stability=True
)
def random_prune(inp: ControlInput) -> ControlStart:
    """A random mask of each layer's density, applied to W_k."""
    mask = random_like(inp.mask, None, inp.generator, inp.pruning)
    return ControlStart(mask, mask.apply_to(inp.rewound), inp.optimizer_state)
