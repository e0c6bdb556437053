"""Channel structure: which coordinates of a built-in network belong to one output channel (or hidden unit).

A **unit** is one channel with everything that depends on it: the output slices of the layers that write it (its
*producers*: a convolution's filter, a linear layer's row, and, through a residual addition, every layer adding
into the same channel) and the input slices of the layers that read it (its *consumers*: the next layer's input
channel, the flattened features of a channel, every block reading a residual stream). Pruning a unit sets all of
these to zero, so the channel's BatchNorm and bias only add a constant that no kept weight reads: the network
computes exactly what the network without that channel computes (`lottery.export.compact` removes it physically).

Units are read off the prunable weights' names and shapes of the built-in families, the ones that support
channel pruning:
- `lenet_*` (hidden units), `conv2`/`conv4`/`conv6` (convolution channels and hidden units),
- `vgg11`-`vgg19` (convolution channels; BatchNorm follows its convolution),
- `resnet20`-`resnet110` for CIFAR, both shortcuts: block-internal channels, and the residual stream of each
  stage as coupled units (the stem, every block's second convolution and the projection shortcut write a stream
  channel; with 'padding' shortcuts a channel continues into the next stage's channel of the same index).
Every other model (the ImageNet ResNets, Inception, SqueezeNet, plugins) is refused in one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lottery.errors import UserError
from lottery.pruning.mask import Mask
from lottery.pruning.ranking import rounded_count

Slice = tuple[str, int, int]  # (parameter name, start, stop) along its output (producers) or input (consumers) dim

SUPPORTED = "lenet_*, conv2/conv4/conv6, vgg11-vgg19 and the CIFAR resnet20-resnet110"


@dataclass
class Unit:
    group: str  # the parameter whose layer the unit belongs to (its first producer): rates and rankings per layer
    producers: list[Slice] = field(default_factory=list)
    consumers: list[Slice] = field(default_factory=list)

    def weights(self, shapes: Mapping[str, Sequence[int]]) -> int:
        """How many producer coordinates the unit has (the size its score is averaged over)."""
        total = 0
        for name, start, stop in self.producers:
            total += (stop - start) * _prod(shapes[name][1:])
        return total


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _indexed(names: Sequence[str], pattern: str) -> list[str]:
    """The names matching `pattern` (one integer group), in index order; [] if their indices are not 0..k-1."""
    found = sorted(
        ((int(match[1]), name) for name in names if (match := re.fullmatch(pattern, name))), key=lambda x: x[0]
    )
    return [name for _, name in found]


def _chain(shapes: Mapping[str, Sequence[int]], layers: list[str], reader: str, span: int | None = None) -> list[Unit]:
    """Units of a plain chain: layer i's output channel c is read by layer i+1's input c; the last by `reader`
    (`span` inputs per channel when it reads flattened feature maps)."""
    units = []
    for i, name in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else reader
        out = int(shapes[name][0])
        width = 1 if nxt != reader or span is None else span
        if int(shapes[nxt][1]) != out * width:
            return []
        units += [Unit(name, [(name, c, c + 1)], [(nxt, c * width, (c + 1) * width)]) for c in range(out)]
    return units


def _lenet(shapes: Mapping[str, Sequence[int]]) -> list[Unit] | None:
    hidden = _indexed(list(shapes), r"hidden\.(\d+)\.weight")
    if set(shapes) != {*hidden, "out.weight"} or any(len(shapes[n]) != 2 for n in shapes):
        return None
    return _chain(shapes, hidden, "out.weight") or None


def _convnet(shapes: Mapping[str, Sequence[int]]) -> list[Unit] | None:
    convs = _indexed(list(shapes), r"convs\.(\d+)\.weight")
    hidden = _indexed(list(shapes), r"hidden\.(\d+)\.weight")
    if not convs or not hidden or set(shapes) != {*convs, *hidden, "out.weight"}:
        return None
    last = int(shapes[convs[-1]][0])
    if int(shapes[hidden[0]][1]) % last:
        return None
    conv_units = _chain(shapes, convs, hidden[0], int(shapes[hidden[0]][1]) // last)
    fc_units = _chain(shapes, hidden, "out.weight")
    return conv_units + fc_units if conv_units and fc_units else None


def _vgg(shapes: Mapping[str, Sequence[int]]) -> list[Unit] | None:
    convs = sorted(
        (name for name in shapes if re.fullmatch(r"layers\.\d+\.conv\.weight", name)),
        key=lambda n: int(n.split(".")[1]),
    )
    if not convs or set(shapes) != {*convs, "fc.weight"}:
        return None
    return _chain(shapes, convs, "fc.weight") or None


def _resnet(shapes: Mapping[str, Sequence[int]]) -> list[Unit] | None:
    names = set(shapes)
    conv1 = _indexed(list(shapes), r"blocks\.(\d+)\.conv1\.weight")
    expected = {"conv.weight", "fc.weight", *conv1, *(n.replace("conv1", "conv2") for n in conv1)}
    shortcuts = {n for n in names if re.fullmatch(r"blocks\.\d+\.shortcut\.0\.weight", n)}
    if not conv1 or names != expected | shortcuts:
        return None
    stream = [Unit("conv.weight", [("conv.weight", c, c + 1)]) for c in range(int(shapes["conv.weight"][0]))]
    units: list[Unit] = list(stream)
    for b in range(len(conv1)):
        c1, c2, sc = (f"blocks.{b}.{part}.weight" for part in ("conv1", "conv2", "shortcut.0"))
        inner, width_in, width_out = int(shapes[c1][0]), int(shapes[c1][1]), int(shapes[c2][0])
        if width_in != len(stream) or int(shapes[c2][1]) != inner:
            return None
        units += [Unit(c1, [(c1, c, c + 1)], [(c2, c, c + 1)]) for c in range(inner)]
        for c, unit in enumerate(stream):
            unit.consumers.append((c1, c, c + 1))
        if sc in shortcuts:  # projection: a new stream, written by conv2 and the shortcut, which reads the old one
            if tuple(shapes[sc][:2]) != (width_out, width_in):
                return None
            for c, unit in enumerate(stream):
                unit.consumers.append((sc, c, c + 1))
            stream = [Unit(c2, [(c2, c, c + 1), (sc, c, c + 1)]) for c in range(width_out)]
            units += stream
        elif width_out != width_in:  # padding: old channel c continues as new channel c; the rest are new
            if width_out < width_in:
                return None
            fresh = [Unit(c2) for _ in range(width_out - width_in)]
            units += fresh
            stream = [*stream, *fresh]
            for c, unit in enumerate(stream):
                unit.producers.append((c2, c, c + 1))
        else:  # identity: conv2 adds into the same stream
            for c, unit in enumerate(stream):
                unit.producers.append((c2, c, c + 1))
    if int(shapes["fc.weight"][1]) != len(stream):
        return None
    for c, unit in enumerate(stream):
        unit.consumers.append(("fc.weight", c, c + 1))
    return units


FAMILIES = (_lenet, _convnet, _vgg, _resnet)


def units(shapes: Mapping[str, Sequence[int]]) -> list[Unit]:
    """The channel units of a built-in network, from its prunable weights' {name: shape}; UserError for others."""
    shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
    for family in FAMILIES:
        found = family(shapes)
        if found:
            return found
    layers = ", ".join(list(shapes)[:4]) + (", ..." if len(shapes) > 4 else "")
    raise UserError(
        f"pruning.structure = 'channel' supports the built-in {SUPPORTED} models; these layers ({layers}) are not "
        "one of them (use 'unstructured' or 'n:m')"
    )


def shapes_of(tensors: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in tensors.items()}


def alive(mask: Mask, all_units: list[Unit]) -> Tensor:
    """Whether each unit is kept: some coordinate of its producers' slices is kept."""
    return torch.tensor(
        [any(bool(mask[name][start:stop].any()) for name, start, stop in u.producers) for u in all_units],
        dtype=torch.bool,
    )


def unit_scores(scores: Mapping[str, Tensor], mask: Mask, all_units: list[Unit]) -> Tensor:
    """Each unit's score: the mean of the per-coordinate scores over its producers' kept coordinates (0 if none).
    For magnitude pruning (|w|) this is the L1 norm of the channel's filters over their size (Li et al. 2017,
    "Pruning Filters for Efficient ConvNets"; divided by the size so that layers of any fan-in rank together, and
    counting kept weights only, so that inputs removed upstream do not lower it)."""
    masked = {name: scores[name].to("cpu", torch.float64) * mask[name].to("cpu", torch.float64) for name in mask}
    values = []
    for u in all_units:
        total = sum(float(masked[name][start:stop].sum()) for name, start, stop in u.producers)
        count = sum(int(mask[name][start:stop].sum()) for name, start, stop in u.producers)
        values.append(total / count if count else 0.0)
    return torch.tensor(values, dtype=torch.float64)


def remove_units(values: Tensor, layers: list[str], fraction: float) -> Tensor:
    """Which of these alive units survive when `rounded_count(fraction, len(values))` of lowest score are removed
    (the earlier first on ties), except that every layer keeps its highest-scoring unit (the last on ties): a layer
    without channels would cut the network."""
    count = rounded_count(fraction, values.numel())
    protected = {}
    for i, (value, layer) in enumerate(zip(values.tolist(), layers, strict=True)):
        if layer not in protected or value >= values[protected[layer]]:
            protected[layer] = i
    order = torch.sort(values, stable=True).indices.tolist()
    keep_one = set(protected.values())
    removable = [i for i in order if i not in keep_one]
    kept = torch.ones(values.numel(), dtype=torch.bool)
    kept[removable[:count]] = False
    return kept


def apply_units(mask: Mask, all_units: list[Unit], kept: Tensor) -> Mask:
    """`mask` with every unit not `kept` removed: its producers' output slices and consumers' input slices."""
    new = Mask({name: t.to("cpu", torch.bool).clone() for name, t in mask.items()})
    for u, keep in zip(all_units, kept.tolist(), strict=True):
        if keep:
            continue
        for name, start, stop in u.producers:
            new[name][start:stop] = False
        for name, start, stop in u.consumers:
            new[name][:, start:stop] = False
    return new


def in_pool(all_units: list[Unit], pool: list[str]) -> Tensor:
    """Whether each unit may be pruned: every layer writing it is in the pool (an ignored layer keeps its channels;
    its input columns still follow the channels removed upstream)."""
    chosen = set(pool)
    return torch.tensor([all(name in chosen for name, _, _ in u.producers) for u in all_units], dtype=torch.bool)


def prune_channels(
    scores: Mapping[str, Tensor],
    mask: Mask,
    pool: list[str],
    fractions: dict[str, float],
    target: float | None,
    layerwise: bool,
) -> Mask:
    """One channel level: remove `rounded_count(fraction, alive units)` units of lowest score, over the pool's
    units at once (global) or per layer (layerwise: each unit's layer is its first producer); one shot, `target` is
    the fraction of the pool's units (of each layer's, layerwise) kept."""
    all_units = units(shapes_of(mask))
    live = alive(mask, all_units)
    pooled = in_pool(all_units, pool)
    values = unit_scores(scores, mask, all_units)
    groups = [u.group if layerwise else "pool" for u in all_units]
    kept = live.clone()
    for group in dict.fromkeys(g for g, p in zip(groups, (pooled & live).tolist(), strict=True) if p):
        members = torch.tensor([g == group for g in groups]) & pooled
        index = members & live
        count = int(index.sum())
        if target is not None:
            fraction = min(1.0, max(0.0, 1.0 - target * int(members.sum()) / count))
        else:
            fraction = fractions[group] if layerwise else next(iter(fractions.values()))
        layers = [u.group for u, chosen in zip(all_units, index.tolist(), strict=True) if chosen]
        kept[index] = remove_units(values[index], layers, fraction)
    return apply_units(mask, all_units, kept)


def random_channels(
    imp_mask: Mask, previous: Mask | None, generator: torch.Generator, pool: list[str] | None = None
) -> Mask:
    """A random channel mask: every layer keeps as many units as `imp_mask` keeps there (with `pool`: the pool's
    units together keep `imp_mask`'s total, placed across all of them), drawn uniformly among the units `previous`
    keeps (all if None); units outside the pool are kept as `imp_mask` keeps them."""
    all_units = units(shapes_of(imp_mask))
    live = alive(imp_mask, all_units)
    candidates = alive(previous, all_units) if previous is not None else torch.ones(len(all_units), dtype=torch.bool)
    chosen = in_pool(all_units, pool) if pool is not None else torch.ones(len(all_units), dtype=torch.bool)
    kept = live & ~chosen
    groups = ["pool"] * len(all_units) if pool is not None else [u.group for u in all_units]
    for group in dict.fromkeys(g for g, c in zip(groups, chosen.tolist(), strict=True) if c):
        index = torch.tensor([g == group for g in groups]) & chosen
        count = int((live & index).sum())
        places = (index & candidates).nonzero().reshape(-1)
        if count > places.numel():
            raise ValueError(f"cannot keep {count} channels among {places.numel()} candidates")
        kept[places[torch.randperm(places.numel(), generator=generator)[:count]]] = True
    ones = Mask({name: torch.ones_like(t, dtype=torch.bool, device="cpu") for name, t in imp_mask.items()})
    return apply_units(ones, all_units, kept)


def is_channel_mask(mask: Mask) -> bool:
    """Whether `mask` is exactly all-ones with some units removed (what `prune_channels` makes from all-ones)."""
    all_units = units(shapes_of(mask))
    ones = Mask({name: torch.ones_like(t, dtype=torch.bool, device="cpu") for name, t in mask.items()})
    rebuilt = apply_units(ones, all_units, alive(mask, all_units))
    return all(torch.equal(rebuilt[name], mask[name].to("cpu", torch.bool)) for name in mask)
