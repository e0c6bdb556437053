"""The pruning-strategy registry and `prune`, the one entry point that resolves a PruningSpec.

A strategy takes (trained weights, current mask, fraction of surviving weights to remove per layer)
and returns the new mask. Only the layers named in the fractions are pruned; every other mask entry
is returned unchanged. `prune` decides which layers those are (`layers_to_ignore`) and their
fractions (`fraction`, `rates`, or a one-shot target density).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

import torch
from torch import Tensor

from lottery.errors import UserError
from lottery.pruning.mask import Mask
from lottery.pruning.structure import MAGNITUDE, Structure, prune_structured
from lottery.registry import Registry
from lottery.spec.groups import PruningSpec

StrategyFn = Callable[[dict[str, Tensor], Mask, dict[str, float]], Mask]

strategies: Registry[StrategyFn] = Registry("pruning strategy")

KINDS = ("conv", "fc", "output")


def per_layer(fn: StrategyFn) -> StrategyFn:
    """Mark a strategy whose layers each reach a one-shot target density on their own (else: the pool does)."""
    fn.per_layer = True  # type: ignore[attr-defined]
    return fn


def check_one_rate(strategy: str, fractions: dict[str, float]) -> None:
    """A pool-wide strategy needs one fraction for every layer it prunes."""
    if len(set(fractions.values())) > 1:
        rates = ", ".join(f"{name}: {rate:g}" for name, rate in fractions.items())
        raise UserError(
            f"{strategy} prunes all layers at one rate, but the rates differ by layer ({rates}); "
            "per-layer or per-kind rates need pruning.strategy = 'layerwise_magnitude' "
            "(to leave a layer unpruned, list it in pruning.layers_to_ignore)"
        )


def module_name(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def is_pattern(entry: str) -> bool:
    """Whether an entry is a glob pattern over parameter names, like 'blocks.*.shortcut.0.weight'."""
    return any(c in entry for c in "*?[")


def matches(entry: str, name: str, kind: str) -> bool:
    """Whether a `layers_to_ignore` entry or `rates` key names this layer: by parameter, module or kind, or as a
    glob pattern over parameter names."""
    return entry in (name, module_name(name), kind) or (is_pattern(entry) and fnmatch.fnmatchcase(name, entry))


def _no_match(what: str, entry: str, layer_kinds: dict[str, str]) -> UserError:
    names = list(layer_kinds)
    options = [*names, *(module_name(n) for n in names), *sorted(set(layer_kinds.values()))]
    close = difflib.get_close_matches(entry, options, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return UserError(
        f"{what} '{entry}' matches no prunable layer{hint} "
        f"(prunable: {', '.join(names)}; or a module name, or a kind: {', '.join(KINDS)})"
    )


def layer_pool(mask: Mask, layer_kinds: dict[str, str], spec: PruningSpec) -> list[str]:
    """The prunable layers (in mask order) that `spec.layers_to_ignore` leaves to prune."""
    kinds = {name: layer_kinds.get(name, "") for name in mask}
    ignored: set[str] = set()
    for entry in spec.layers_to_ignore:
        hits = {name for name, kind in kinds.items() if matches(entry, name, kind)}
        if not hits and not is_pattern(entry):  # a pattern may match nothing (ResNets with padding shortcuts)
            raise _no_match("pruning.layers_to_ignore entry", entry, kinds)
        ignored |= hits
    return [name for name in mask if name not in ignored]


def layer_fractions(pool: list[str], layer_kinds: dict[str, str], spec: PruningSpec) -> dict[str, float]:
    """Fraction to remove per pool layer: the rate for its parameter name, else its module, else its kind,
    else `spec.fraction`. Every rates key must name some prunable layer (ignored ones included)."""
    for key in spec.rates:
        if not any(matches(key, name, kind) for name, kind in layer_kinds.items()):
            raise _no_match("pruning.rates key", key, layer_kinds)
    fractions = {}
    for name in pool:
        for key in (name, module_name(name), layer_kinds.get(name, "")):
            if key in spec.rates:
                fractions[name] = spec.rates[key]
                break
        else:
            fractions[name] = spec.fraction
    return fractions


def _to_target(target: float, total: int, surviving: int) -> float:
    if surviving == 0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - target * total / surviving))


def target_fractions(mask: Mask, pool: list[str], target: float, layerwise: bool) -> dict[str, float]:
    """Fractions that bring the pool (or, layerwise, each pool layer) to density `target`."""
    if layerwise:
        return {name: _to_target(target, mask[name].numel(), int(mask[name].sum())) for name in pool}
    total = sum(mask[name].numel() for name in pool)
    surviving = sum(int(mask[name].sum()) for name in pool)
    fraction = _to_target(target, total, surviving)
    return dict.fromkeys(pool, fraction)


def prune(
    weights: dict[str, Tensor],
    mask: Mask,
    layer_kinds: dict[str, str],
    spec: PruningSpec,
    target_density: float | None = None,
) -> Mask:
    """One pruning level: the new mask (a subset of `mask`, same keys and order; `mask` is not changed).

    `target_density` (one-shot): prune so that the pool's density becomes this value, ignoring
    `fraction` and `rates`; per-layer strategies bring each layer to it instead.
    """
    strategy = strategies.get(spec.strategy)
    structure = Structure.of(spec)
    if structure.structured and spec.strategy not in MAGNITUDE:
        raise UserError(
            f"pruning.structure = {spec.structure!r} works with the magnitude strategies ({', '.join(MAGNITUDE)}), "
            f"not {spec.strategy!r}"
        )
    pool = layer_pool(mask, layer_kinds, spec)
    fractions = layer_fractions(pool, layer_kinds, spec)  # validates the rates keys even when one-shot
    if not pool:
        raise UserError("pruning.layers_to_ignore leaves no layer to prune")
    layerwise = getattr(strategy, "per_layer", False)
    if not layerwise:
        check_one_rate(spec.strategy, fractions)  # also in one-shot mode, where the rates go unused
    if target_density is not None:
        if not 0 <= target_density <= 1:
            raise UserError(f"target density must be in [0, 1], got {target_density}")
        if not structure.structured:
            fractions = target_fractions(mask, pool, target_density, layerwise)
    if structure.structured:  # magnitude: the score of a weight is |w|
        scores = {name: weights[name].detach().to("cpu", torch.float64).abs() for name in mask}
        return prune_structured(scores, mask, pool, fractions, target_density, layerwise, structure)
    current = Mask({name: m.clone() for name, m in mask.items()})
    new = strategy(weights, current, fractions)
    return Mask({name: new[name].to(torch.bool) for name in mask})
