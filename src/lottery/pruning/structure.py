"""The structure of a mask (`pruning.structure`, docs/structure.md): which coordinates are pruned together.

- 'unstructured': any weight on its own (the default; `lottery.pruning.strategies` as before).
- 'channel': whole output channels / hidden units, with every coordinate that depends on them
  (`lottery.pruning.channels`).
- 'n:m': every group of m consecutive weights along a row of `weight.flatten(1)` (the input dimension: in × kh × kw
  for a convolution, the order im2col uses) keeps the same count, never fewer than n; after enough levels exactly n
  (2:4: the layout sparse tensor cores and `torch.sparse.to_sparse_semi_structured` take).

Every function here takes per-coordinate scores (higher = keep; |w| for magnitude pruning) and keeps the counting
and tie rules of unstructured pruning: `rounded_count` of the surviving units, the earlier position removed first on
ties, and the new mask a subset of the old one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from lottery.errors import UserError
from lottery.pruning.mask import Mask
from lottery.spec.groups import STRUCTURES, PruningSpec


@dataclass(frozen=True)
class Structure:
    """`pruning.structure` with its n and m (n and m matter only for 'n:m')."""

    kind: str = "unstructured"
    n: int = 2
    m: int = 4

    @classmethod
    def of(cls, value: Structure | PruningSpec | str | None) -> Structure:
        """From a PruningSpec, a Structure, None (unstructured) or a string: 'unstructured', 'channel', 'n:m' (2:4)
        or digits such as '1:4'."""
        if value is None:
            return cls()
        if isinstance(value, Structure):
            return value
        if isinstance(value, PruningSpec):
            return cls(value.structure, value.n, value.m)
        digits = re.fullmatch(r"(\d+):(\d+)", str(value))
        if digits:
            spec = PruningSpec(structure="n:m", n=int(digits[1]), m=int(digits[2])).validate()
            return cls("n:m", spec.n, spec.m)
        if value not in STRUCTURES:
            raise UserError(f"structure must be one of {', '.join(STRUCTURES)} (or digits like '2:4'), got {value!r}")
        return cls(str(value))

    @property
    def structured(self) -> bool:
        return self.kind != "unstructured"

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "n:m" else self.kind


def groups_view(t: Tensor, m: int, name: str) -> Tensor:
    """`t` as [rows, groups, m]: groups of m consecutive entries of each row of `t.flatten(1)`."""
    if t.dim() < 2:
        raise UserError(f"pruning.structure = 'n:m' prunes weight matrices; {name} has shape {list(t.shape)}")
    cols = t[0].numel()
    if cols % m:
        raise UserError(
            f"pruning.structure = 'n:m' needs each pruned layer's input size (in × kh × kw) to be a multiple of "
            f"m = {m}: {name} has {cols}; list it in pruning.layers_to_ignore"
        )
    return t.reshape(t.shape[0], cols // m, m)


def keep_in_groups(scores: Tensor, alive: Tensor, keep: Tensor) -> Tensor:
    """In each group (last dim), keep the `keep` (broadcast) alive entries of highest score: the rest, lowest first
    and the earlier position first on ties, are removed; entries not alive stay removed."""
    values = torch.where(alive, scores.to(torch.float64), torch.full_like(scores, -torch.inf, dtype=torch.float64))
    order = torch.sort(values, dim=-1, stable=True).indices
    ranks = torch.argsort(order, dim=-1)
    return (ranks >= values.shape[-1] - keep.unsqueeze(-1)) & alive


def nm_counts(mask: Tensor, m: int, name: str) -> Tensor:
    """Kept count of every group of a layer's mask, [rows, groups]."""
    return groups_view(mask, m, name).sum(-1)


def nm_keep(count: Tensor, fraction: float | None, target: int | None, n: int) -> Tensor:
    """The count every group keeps next: from `count` (kept now) remove `rounded_count(fraction, count)` (at least
    one) without going below n; or, one shot, `target` (never more than is kept now)."""
    if target is not None:
        return torch.clamp(count, max=target)
    assert fraction is not None
    # rounded_count(fraction, c) = min(c, floor(fraction * c + 0.5)) for every group at once, at least one
    remove = torch.minimum(count, torch.floor(fraction * count.to(torch.float64) + 0.5).to(count.dtype)).clamp(min=1)
    return torch.where(count > n, torch.clamp(count - remove, min=n), count)


def nm_target(density: float, structure: Structure) -> int:
    """The per-group count of a target density: round(density × m), which must be at least n."""
    keep = int(density * structure.m + 0.5)
    if keep < structure.n:
        raise UserError(
            f"pruning.structure = 'n:m' with n:m = {structure} keeps at least {structure.n} of every {structure.m} "
            f"weights (density >= {structure.n / structure.m:g}); density {density:g} asks for fewer"
        )
    return keep


def prune_nm(
    scores: dict[str, Tensor],
    mask: Mask,
    pool: list[str],
    fractions: dict[str, float],
    target: float | None,
    structure: Structure,
) -> Mask:
    """One N:M level over the pool layers (others unchanged): see `nm_keep`; `target` (a density) one shot."""
    new = Mask({name: t.clone().to(torch.bool) for name, t in mask.items()})
    goal = None if target is None else nm_target(target, structure)
    for name in pool:
        alive = groups_view(mask[name].to("cpu", torch.bool), structure.m, name)
        keep = nm_keep(alive.sum(-1), fractions.get(name), goal, structure.n)
        kept = keep_in_groups(groups_view(scores[name].to("cpu"), structure.m, name), alive, keep)
        new[name] = kept.reshape(mask[name].shape)
    return new


def random_nm(imp_mask: Mask, previous: Mask | None, generator: torch.Generator, structure: Structure) -> Mask:
    """A random N:M mask: every group of every layer keeps `imp_mask`'s count of that group, placed uniformly among
    the group's coordinates (those `previous` keeps, if given)."""
    new = Mask()
    for name, m in imp_mask.items():
        m = m.to("cpu", torch.bool)
        if m.dim() < 2 or m[0].numel() % structure.m:  # a layer the pool left out (its input size does not divide)
            new[name] = m.clone()
            continue
        count = nm_counts(m, structure.m, name)
        alive = groups_view(
            previous[name].to("cpu", torch.bool) if previous is not None else torch.ones_like(m), structure.m, name
        )
        draw = torch.rand(alive.shape, generator=generator, dtype=torch.float64)
        new[name] = keep_in_groups(draw, alive, count).reshape(m.shape)
    return new


def is_nm(mask: Tensor, structure: Structure, exact: bool = False) -> bool:
    """Whether every group of m of a layer's mask keeps one count of at least n (exactly n with `exact`)."""
    counts = nm_counts(mask.to(torch.bool), structure.m, "mask")
    if exact:
        return bool((counts == structure.n).all())
    return bool((counts == counts.reshape(-1)[0]).all()) and int(counts.reshape(-1)[0]) >= structure.n


MAGNITUDE = ("global_magnitude", "layerwise_magnitude")


def recipe_reads(spec: PruningSpec) -> dict[str, object]:
    """What a [masks] run's recipe must add to its source's reads: `structure`, `n`, `m` where not the default (so a
    structured mask is never reused for an unstructured one, and existing recipes keep their names)."""
    default = PruningSpec()
    return {k: getattr(spec, k) for k in ("structure", "n", "m") if getattr(spec, k) != getattr(default, k)}


def prune_structured(
    scores: dict[str, Tensor],
    mask: Mask,
    pool: list[str],
    fractions: dict[str, float],
    target: float | None,
    layerwise: bool,
    structure: Structure,
) -> Mask:
    """One structured level (see the module docstring): 'channel' or 'n:m', from per-coordinate scores."""
    if structure.kind == "channel":
        from lottery.pruning.channels import prune_channels

        return prune_channels(scores, mask, pool, fractions, target, layerwise)
    return prune_nm(scores, mask, pool, fractions, target, structure)


def random_structured(
    imp_mask: Mask, previous: Mask | None, generator: torch.Generator, structure: Structure, pool: list[str] | None
) -> Mask:
    """The random control of a structured mask: random channels (per layer, or over `pool` together) or random
    positions within every N:M group (`pool` makes no difference: every group keeps its count)."""
    if structure.kind == "channel":
        from lottery.pruning.channels import random_channels

        return random_channels(imp_mask, previous, generator, pool)
    return random_nm(imp_mask, previous, generator, structure)
