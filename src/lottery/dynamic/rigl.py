"""RigL (Evci, Gale, Menick, Castro, Elsen: "Rigging the Lottery: Making All Tickets Winners", ICML 2020, §3).

Every ΔT steps until a stop point, each layer drops the active weights of smallest magnitude and grows as many of
the inactive ones whose dense gradient (the gradient with respect to the masked weights, inactive ones included) is
largest in magnitude. Grown weights start at zero with zero optimizer state (the reference's `grow_init='zeros'`,
`initial_acc_scale=0`). Defaults from the paper and google-research/rigl: ΔT = 100, α = 0.3 with cosine decay, stop at
75% of training. Shared mechanics: lottery/dynamic/update.py.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lottery.dynamic.update import drop_and_grow
from lottery.pruning.mask import Mask


def rigl_update(weights: Mapping[str, Tensor], grads: Mapping[str, Tensor | None], mask: Mask, fraction: float) -> Mask:
    """The mask after one RigL update: drop score |w|, grow score |dense gradient| (None: a zero gradient)."""
    new = {}
    for name, active in mask.items():
        grad = grads.get(name)
        score = torch.zeros(active.shape, dtype=torch.float64) if grad is None else grad.abs()
        new[name] = drop_and_grow(active, weights[name].abs(), score, fraction)
    return Mask(new)
