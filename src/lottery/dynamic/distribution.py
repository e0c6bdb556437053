"""Initial layer densities of a sparse network: `erk`, `uniform` or `global`, with exact counts.

ERK (Erdős–Rényi–Kernel; Evci et al., "Rigging the Lottery", ICML 2020, §3 "Sparsity distribution"; the reference
is `get_sparsities_erdos_renyi` in google-research/rigl, rigl/sparse_utils.py, with `erk_power_scale = 1`): layer l
of shape (n_1, ..., n_k) keeps a fraction eps * (n_1 + ... + n_k) / (n_1 * ... * n_k), one eps for all layers,
chosen so that the kept weights total `density` of the pool. A layer whose fraction would exceed 1 is made dense,
and eps is solved again over the others (repeatedly, the layers of largest ratio first).

Densities are then turned into whole counts whose total is exactly round(density * pool size): each layer gets the
floor of its share, and the weights left over go one each to the layers with the largest fractional parts (ties to
the earlier layer). `uniform` gives every layer the same share; `global` fixes no layer count: the kept weights are
drawn from the pool as a whole (for GMP: chosen by one magnitude ranking over the pool).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from lottery.errors import UserError
from lottery.pruning.mask import Mask
from lottery.seeding import generator

DISTRIBUTIONS = ("erk", "uniform", "global")


def kept_count(density: float, total: int) -> int:
    """The number of weights a pool of `total` keeps at `density`: floor(density * total + 0.5)."""
    return min(total, int(density * total + 0.5))


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """ERK's density for every layer (see the module docstring): {name: fraction kept}, in [0, 1]."""
    if not 0 < density <= 1:
        raise UserError(f"density must be in (0, 1], got {density}")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            return dict.fromkeys(shapes, 1.0)
        rhs = density * total - sum(sizes[name] for name in dense)
        eps = rhs / sum(raw[name] * sizes[name] for name in sparse)
        largest = max(raw[name] for name in sparse)
        if eps * largest <= 1:
            return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}
        dense |= {name for name in sparse if raw[name] == largest}


def allocate(total: int, targets: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Whole counts, each at most its cap, summing to exactly `total`, close to the real `targets`: the floor of
    each target, then one more each to the largest fractional parts (ties to the earlier entry), skipping full
    entries."""
    if total > sum(caps) or total < 0:
        raise ValueError(f"cannot place {total} weights in layers of {sum(caps)}")
    floors = [math.floor(max(0.0, x)) for x in targets]
    counts = [min(cap, f) for f, cap in zip(floors, caps)]
    order = sorted(range(len(targets)), key=lambda i: (-(targets[i] - floors[i]), i))
    left = total - sum(counts)
    while left < 0:  # float rounding made the floors overshoot: take back from the smallest fractional parts
        for i in reversed(order):
            if left < 0 and counts[i] > 0:
                counts[i] -= 1
                left += 1
    while left > 0:
        for i in order:
            if left > 0 and counts[i] < caps[i]:
                counts[i] += 1
                left -= 1
    return counts


def layer_densities(shapes: Mapping[str, Sequence[int]], density: float, distribution: str) -> dict[str, float]:
    """The real-valued density of every layer under `erk` or `uniform`."""
    if distribution == "erk":
        return erk_densities(shapes, density)
    if distribution == "uniform":
        return dict.fromkeys(shapes, float(density))
    raise UserError(f"distribution '{distribution}' fixes no layer densities (per-layer ones: erk, uniform)")


def layer_counts(
    shapes: Mapping[str, Sequence[int]],
    density: float,
    distribution: str,
    caps: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Weights kept per layer under `erk` or `uniform`, totalling exactly `kept_count(density, pool size)`;
    `caps`: no layer gets more than its cap (GMP: the weights it still has)."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    densities = layer_densities(shapes, density, distribution)
    limit = {name: sizes[name] if caps is None else min(sizes[name], caps[name]) for name in shapes}
    kept = min(kept_count(density, sum(sizes.values())), sum(limit.values()))
    counts = allocate(kept, [densities[name] * sizes[name] for name in shapes], list(limit.values()))
    return dict(zip(shapes, counts))


def initial_mask(shapes: Mapping[str, Sequence[int]], density: float, distribution: str, seed: int) -> Mask:
    """A random mask at `density` of the pool: each layer keeps its `layer_counts` weights, drawn uniformly from
    `generator("dynamic.initial_mask", seed, layer index)`; `global` draws the kept weights from the pool at once
    (`generator("dynamic.initial_mask", seed)`)."""
    sizes = [math.prod(shape) for shape in shapes.values()]
    if distribution == "global":
        order = torch.randperm(sum(sizes), generator=generator("dynamic.initial_mask", seed))
        flat = torch.zeros(sum(sizes), dtype=torch.bool)
        flat[order[: kept_count(density, sum(sizes))]] = True
        parts = flat.split(sizes)
    else:
        counts = layer_counts(shapes, density, distribution)
        parts = []
        for index, (name, size) in enumerate(zip(shapes, sizes)):
            layer = torch.zeros(size, dtype=torch.bool)
            layer[torch.randperm(size, generator=generator("dynamic.initial_mask", seed, index))[: counts[name]]] = True
            parts.append(layer)
    return Mask({name: part.reshape(tuple(shape)) for (name, shape), part in zip(shapes.items(), parts)})
