"""What a control kind's `start` receives and returns (its registration: `lottery.extension_points.register_control`).

A control gives an IMP result its meaning: a subnetwork of the IMP level's density made by chance (a random mask, or
fresh weights), trained like the level from iteration k. `start(inp)` makes its mask and start weights from the
level's mask m_L, W_k (and the optimizer state at k), W_0, fresh weights, and the control's seed (`inp.seed`,
derived from the seed stream `control.<kind>`, its recorded seed and its chain's seed values:
`lottery.experiments.imp_step`); the engine (`lottery run`) and `lottery.imp` call the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lottery import seeding
from lottery.extension_points import register_control
from lottery.pruning import Mask
from lottery.spec.groups import PruningSpec

__all__ = ["ControlInput", "ControlStart", "register_control"]


@dataclass(frozen=True)
class ControlInput:
    mask: Mask  # the IMP level's mask m_L
    rewound: dict[str, Tensor]  # W_k: the state dict the level starts from, before its mask is applied
    optimizer_state: dict | None  # the optimizer state at k where IMP rewinds it, else None
    seed: int  # the control's derived seed (below 2**63)
    fresh: Callable[[int], dict[str, Tensor]]  # fresh initial weights (a whole state dict) drawn with a seed
    initial: Callable[[], dict[str, Tensor]]  # W_0: the chain's initial weights (the dense run's start), when called
    pool: list[str]  # the layers pruning may change (pruning.layers_to_ignore left out)
    pruning: PruningSpec  # the spec's pruning settings (its structure: 'unstructured', 'channel', 'n:m')

    @property
    def generator(self) -> torch.Generator:
        """A CPU generator seeded with `seed`."""
        return seeding.seeded(self.seed)


@dataclass(frozen=True)
class ControlStart:
    mask: Mask  # the control's mask (held during its training)
    weights: dict[str, Tensor]  # the state dict it starts from at iteration k (pruned weights zero)
    optimizer_state: dict | None = None  # the optimizer state it starts with (None: a fresh optimizer)
