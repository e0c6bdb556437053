"""Distances between two trained networks over the coordinates a mask keeps ("Stabilizing the LTH" §2).

Only the mask's parameters (the prunable weights) and, within them, only kept coordinates count.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lottery.pruning import Mask


def _masked_vector(weights: dict[str, Tensor], mask: Mask) -> Tensor:
    return torch.cat([weights[name].detach().double().flatten()[mask[name].flatten()] for name in mask])


def distances(
    a: dict[str, Tensor], b: dict[str, Tensor], mask: Mask, reference: dict[str, Tensor] | None = None
) -> dict:
    """L2 distance ‖m⊙a − m⊙b‖₂, the angle between m⊙a and m⊙b in degrees, and the L2 distance divided
    by ‖m⊙reference‖₂ (the full network's masked weights; `a` when no reference is given)."""
    va, vb = _masked_vector(a, mask), _masked_vector(b, mask)
    l2 = float(torch.linalg.vector_norm(va - vb))
    na, nb = torch.linalg.vector_norm(va), torch.linalg.vector_norm(vb)
    # Kahan's formula: accurate for nearly parallel vectors, where acos of the cosine is not.
    angle = 2 * math.atan2(
        float(torch.linalg.vector_norm(va * nb - vb * na)), float(torch.linalg.vector_norm(va * nb + vb * na))
    )
    angle = math.degrees(angle)
    ref_norm = float(torch.linalg.vector_norm(_masked_vector(reference if reference is not None else a, mask)))
    return {"l2": l2, "angle_degrees": angle, "normalized_l2": l2 / ref_norm if ref_norm > 0 else math.nan}


def pruned_nonzero(weights: dict[str, Tensor], mask: Mask) -> dict[str, int]:
    """{parameter name: how many coordinates the mask prunes that are not zero in `weights`} (only those with any):
    a network trained without its mask attached drifted there, which distances over the mask do not see."""
    found = {}
    for name, m in mask.items():
        if name in weights:
            count = int((weights[name].detach().cpu()[~m.cpu().bool()] != 0).sum())
            if count:
                found[name] = count
    return found
