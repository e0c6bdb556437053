"""Random-pruning controls: masks with the IMP mask's kept counts, placed uniformly at random."""

from __future__ import annotations

import torch
from torch import Tensor

from lottery.pruning.mask import Mask
from lottery.pruning.structure import Structure, random_structured
from lottery.spec.groups import PruningSpec

StructureLike = Structure | PruningSpec | str | None


def _place(count: int, candidates: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """A flat bool tensor of `size` keeping `count` of the `candidates` positions, chosen uniformly."""
    if count > candidates.numel():
        raise ValueError(f"cannot keep {count} weights among {candidates.numel()} candidates")
    kept = torch.zeros(size, dtype=torch.bool)
    kept[candidates[torch.randperm(candidates.numel(), generator=generator)[:count]]] = True
    return kept


def random_like(
    imp_mask: Mask, previous: Mask | None, generator: torch.Generator, structure: StructureLike = None
) -> Mask:
    """A random mask with exactly `imp_mask`'s kept count in every layer, drawn uniformly among the
    coordinates `previous` keeps (all coordinates if `previous` is None), so that successive levels nest.
    With a `structure` (a PruningSpec, a Structure or its name) other than 'unstructured', the same structure:
    as many random channels per layer, or the same count at random places in every N:M group."""
    shape = Structure.of(structure)
    if shape.structured:
        return random_structured(imp_mask, previous, generator, shape, None)
    new = Mask()
    for name, m in imp_mask.items():
        alive = previous[name].reshape(-1).cpu() if previous is not None else torch.ones(m.numel(), dtype=torch.bool)
        kept = _place(int(m.sum()), alive.nonzero().reshape(-1), m.numel(), generator)
        new[name] = kept.reshape(m.shape)
    return new


def random_global_like(
    imp_mask: Mask, generator: torch.Generator, pool: list[str], structure: StructureLike = None
) -> Mask:
    """A random mask keeping `imp_mask`'s total count over the `pool` layers, placed uniformly across all
    their coordinates (per-layer counts vary). Layers outside the pool are copied from `imp_mask`. With a
    `structure`: the pool's channel count placed across all its channels, or (N:M) every group's count."""
    shape = Structure.of(structure)
    if shape.structured:
        return random_structured(imp_mask, None, generator, shape, pool)
    layers = [name for name in imp_mask if name in pool]
    sizes = [imp_mask[name].numel() for name in layers]
    count = sum(int(imp_mask[name].sum()) for name in layers)
    kept = _place(count, torch.arange(sum(sizes)), sum(sizes), generator)
    placed = dict(zip(layers, kept.split(sizes), strict=True))
    return Mask(
        {
            name: placed[name].reshape(m.shape) if name in placed else m.clone().cpu().to(torch.bool)
            for name, m in imp_mask.items()
        }
    )
