"""`random_prune_global`: a random mask with the IMP level's total density over the pruning pool, every coordinate
of the pool equally likely to be kept (per-layer densities vary), on W_k: random pruning at the same sparsity
without IMP's layer densities."""

from __future__ import annotations

from lottery.controls.base import ControlInput, ControlStart, register_control
from lottery.pruning import random_global_like


@register_control("random_prune_global", stream=22, label="random pruning (global)", colormap="Purples", linestyle="-.")
def random_prune_global(inp: ControlInput) -> ControlStart:
    """A random mask of the pool's total density, applied to W_k."""
    mask = random_global_like(inp.mask, inp.generator, inp.pool, inp.pruning)
    return ControlStart(mask, mask.apply_to(inp.rewound), inp.optimizer_state)
