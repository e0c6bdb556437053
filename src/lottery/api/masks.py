"""The pruning half of the Python API: `prune` any model or weights dict, and the random controls
(`random_mask_like`, `reinitialize`), all on top of `lottery.pruning`'s exact counting and tie-breaking."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from lottery import seeding
from lottery.errors import UserError
from lottery.models import Network
from lottery.pruning import Mask, prunable, random_global_like, random_like
from lottery.pruning import prune as prune_level
from lottery.spec.groups import PruningSpec

SCOPES = {"global": "global_magnitude", "layerwise": "layerwise_magnitude"}


def weights_of(model_or_state_dict: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A model's weights as a detached CPU state dict (a state dict is returned as a dict)."""
    if isinstance(model_or_state_dict, nn.Module):
        return {k: v.detach().cpu() for k, v in model_or_state_dict.state_dict().items()}
    return dict(model_or_state_dict)


def _kinds_from_shapes(mask: Mask) -> dict[str, str]:
    """Layer kinds of a bare state dict: 'conv' for weights of more than 2 dimensions, 'fc' otherwise, and the
    last 2-D entry the 'output' layer (the defaults of `lottery.prunable` for ordinary models)."""
    kinds = {name: "conv" if m.dim() > 2 else "fc" for name, m in mask.items()}
    linear = [name for name, kind in kinds.items() if kind == "fc" and mask[name].dim() == 2]
    if linear:
        kinds[linear[-1]] = "output"
    return kinds


def check_seed(seed: object, who: str) -> int:
    """`seed` if it is a whole number in [0, 2**63) (`lottery.seeding`'s seeds), else UserError: torch would wrap a
    negative or larger one onto another seed (2**63 gives seed 0's weights, -1 those of 2**63 - 1) and truncate 1.5."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise UserError(f"{who}: seed must be a whole number in [0, 2**63), got {seed!r}")
    return int(seed)


def starting_mask(
    model: nn.Module | Mapping[str, Tensor], mask: Mask | None, names: Iterable[str] | None, who: str
) -> Mask:
    """`mask`, or the all-kept mask over `names` (default `lottery.prunable(model)`) of a model; one of the two."""
    if mask is not None and names is not None:
        raise UserError(f"{who}: give mask= or names=, not both (names= makes the all-kept mask over those parameters)")
    if mask is not None:
        if not isinstance(mask, Mapping) or not all(isinstance(m, Tensor) for m in mask.values()):
            raise UserError(f"{who}: mask= must be a lottery.Mask (parameter name -> bool tensor), got {mask!r:.80}")
        for name, m in mask.items():
            if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
                raise UserError(f"{who}: the mask of '{name}' holds values other than 0 and 1 (True = kept)")
        if isinstance(mask, Mask) and all(m.dtype == torch.bool for m in mask.values()):
            return mask
        return Mask({name: m.to(torch.bool) for name, m in mask.items()})  # a dict, or 0/1 numbers: a bool Mask
    if not isinstance(model, nn.Module):
        raise UserError(f"{who}: a state dict needs a mask (e.g. lottery.Mask.ones(model))")
    if names is None:
        return Mask.ones(model)
    return Mask.ones(model, list(prunable(model, names=names)))


def prune(
    model_or_state_dict: nn.Module | Mapping[str, Tensor],
    mask: Mask | None = None,
    *,
    names: Iterable[str] | None = None,
    fraction: float | None = None,
    density: float | None = None,
    scope: str = "global",
    rates: Mapping[str, float] | None = None,
    ignore: Iterable[str] = (),
    kinds: Mapping[str, str] | None = None,
    structure: str = "unstructured",
    n: int = 2,
    m: int = 4,
) -> Mask:
    """A new mask: `mask` (default: all of `names` kept, by default `lottery.prunable(model)`) with the
    smallest-magnitude surviving weights removed. `mask` is not changed.

    - `fraction`: remove this fraction of the surviving weights (default 0.2), `round(fraction * surviving)` per
      pool, ties broken by position; or `density`: prune straight to this density (one shot).
    - `scope`: 'global' (one threshold over all layers) or 'layerwise' (each layer its own fraction).
    - `rates`: layerwise only, a fraction per layer kind ('conv', 'fc', 'output'), module or parameter name.
    - `ignore`: layers (parameter names, module names or kinds) left as they are.
    - `kinds`: {parameter name: kind}; default `lottery.prunable(model)`, or for a state dict guessed from shapes
      (more than 2 dimensions: 'conv'; the last 2-D weight: 'output'; others: 'fc').
    - `structure`: 'unstructured' (single weights), 'channel' (whole channels of a built-in network, with the
      layers that read them: docs/structure.md; `fraction` and `density` then count channels) or 'n:m' (every
      group of `m` consecutive inputs keeps the same count, down to `n`), as `pruning.structure`.
    """
    if scope not in SCOPES:
        raise UserError(f"prune: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if fraction is not None and density is not None:
        raise UserError("prune: give fraction or density, not both")
    mask = starting_mask(model_or_state_dict, mask, names, "prune")
    weights = weights_of(model_or_state_dict)
    missing = [name for name in mask if name not in weights]
    if missing:
        raise UserError(f"prune: the weights have no {', '.join(missing[:5])} (masked parameters)")
    if kinds is None:
        if isinstance(model_or_state_dict, nn.Module):
            own = prunable(model_or_state_dict)
            kinds = {name: own.get(name, "fc") for name in mask}
        else:
            kinds = _kinds_from_shapes(mask)
    spec = PruningSpec(
        strategy=SCOPES[scope],
        fraction=0.2 if fraction is None else fraction,
        rates=dict(rates or {}),
        layers_to_ignore=tuple(ignore),
        structure=structure,
        n=n,
        m=m,
    )
    if density is None:
        spec.validate()
    else:
        PruningSpec(structure=structure, n=n, m=m).validate()
    return prune_level(weights, mask, dict(kinds), spec, target_density=density)


def random_mask_like(
    mask: Mask,
    seed: int,
    scope: str = "layerwise",
    *,
    previous: Mask | None = None,
    ignore: Iterable[str] = (),
    structure: str = "unstructured",
    n: int = 2,
    m: int = 4,
) -> Mask:
    """A random-pruning control: a mask with `mask`'s kept count in every layer ('layerwise') or over all layers
    not ignored ('global'), placed uniformly at random from `seed`. `previous` (layerwise): draw only among the
    coordinates it keeps, so that successive levels nest. `structure` (with `n`, `m`): keep `mask`'s structure
    (random channels, or random places in every N:M group), as the engine's random-pruning control does."""
    generator = seeding.generator("api.random_mask", check_seed(seed, "random_mask_like"))
    shape = PruningSpec(structure=structure, n=n, m=m).validate()
    if scope == "layerwise":
        return random_like(mask, previous, generator, shape)
    if scope == "global":
        ignored = set(ignore)
        pool = [n for n in mask if not ({n, n.rsplit(".", 1)[0]} & ignored)]
        return random_global_like(mask, generator, pool, shape)
    raise UserError(f"random_mask_like: scope must be 'layerwise' or 'global', got {scope!r}")


def _post_order(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """(name, module) with every module after its children, siblings in registration order."""
    out = []
    for name, child in module.named_children():
        out += _post_order(child, f"{prefix}{name}.")
    return [*out, (prefix.rstrip("."), module)]


def _reset_methods(module: nn.Module) -> Callable[[], None] | None:
    for name in ("reset_parameters", "_reset_parameters"):
        method = getattr(module, name, None)
        if callable(method):
            return method
    return None


def not_reset(model: nn.Module) -> list[str]:
    """The parameters of `model` that no module's `reset_parameters` (or `_reset_parameters`) covers."""
    covered = {id(p) for m in model.modules() if _reset_methods(m) for p in m.parameters()}
    return [name for name, p in model.named_parameters() if id(p) not in covered]


def reinitialize(
    model: nn.Module, mask: Mask | None = None, seed: int = 0, *, init: Callable[[nn.Module], None] | None = None
) -> nn.Module:
    """The random-reinitialization control: fresh weights for `model` (in place) drawn from `seed`, then `mask`
    applied. Every module's own `reset_parameters` runs (children before parents, as at construction) under a
    forked RNG seeded with `seed`, so the global RNG is left untouched; or `init(model)` runs there instead.
    A `lottery.models.Network` that lottery initialized (`model.init`: the models `lottery.models.build` and the
    engine build) is then initialized again as at construction, from a generator seeded with `seed`: its fresh
    weights are those the engine builds with that seed, bit for bit. A parameter no `reset_parameters` covers is
    refused (pass `init`). Returns the model."""
    seed = check_seed(seed, "reinitialize")
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        if init is not None:
            init(model)
        else:
            uncovered = not_reset(model)
            if uncovered:  # refused before any module is reset: the model is left as it was
                raise UserError(
                    f"reinitialize: no reset_parameters covers {', '.join(uncovered[:5])}; pass init=fn(model)"
                )
            for _, module in _post_order(model):  # children first, as at construction
                reset = _reset_methods(module)
                if reset is not None:
                    reset()
            if isinstance(model, Network) and model.init_settings is not None:
                weights, batchnorm = model.init_settings
                model.initialize(weights, torch.Generator().manual_seed(seed), batchnorm)
    if mask is not None:
        mask.apply_(model)
    return model
