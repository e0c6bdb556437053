"""Mask sources: ways of choosing a mask without IMP's retraining, scored in float64 (higher = keep).

`scores(model, method, ...)` scores the prunable weights of any `nn.Module`; `mask_from_scores` turns scores
into a mask at a target density with the counts, tie-breaking and ignore rules of magnitude pruning
(`lottery.pruning.strategies`); `find_mask` does both, one-shot or over an iterative schedule (SynFlow: 100
rounds, exponential). One module per source, each citing its paper and equation and registering itself
(`lottery.extension_points.register_mask_source`), the decorator a plugin source uses too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lottery.errors import UserError
from lottery.extension_points import SCORE_MODES, MaskSource, run_plugin
from lottery.extension_points import mask_sources as sources
from lottery.pruning.mask import Mask
from lottery.pruning.prunable import prunable
from lottery.pruning.ranking import remove_lowest
from lottery.pruning.sources import grasp, magnitude, random, snip, synflow  # noqa: F401  (register them)
from lottery.pruning.sources.base import Batches, LossFn, ScoreInput
from lottery.pruning.strategies import layer_pool, target_fractions
from lottery.pruning.structure import Structure, prune_structured
from lottery.spec.groups import PruningSpec

SCOPES = ("global", "layerwise")
SCHEDULES = ("exponential", "linear")

__all__ = ["MaskSource", "density_schedule", "find_mask", "mask_from_scores", "scores", "sources"]


def scores(
    model: nn.Module,
    method: str,
    *,
    batches: Batches | None = None,
    loss_fn: LossFn | None = None,
    names: Iterable[str] | None = None,
    mask: Mask | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    score_mode: str | None = None,
    **options: object,
) -> dict[str, Tensor]:
    """Scores (float64, on the CPU, higher = keep) of the prunable weights of `model` by `method` (one of
    `sources`: every registered mask source). `model` is not changed: a float64 copy is scored, with `mask`'s
    pruned weights set to zero.
    `batches`: (inputs, labels) pairs for the data-dependent sources (snip, grasp); `loss_fn` (default
    cross-entropy); `names` (default `lottery.prunable(model)`); `seed` drives `random`; `input_shape` (per
    example, default: from the first batch) is what SynFlow feeds its all-ones input. `score_mode`: 'train' or
    'eval', the mode the copy scores in (default: the source's, the reference code's choice: SNIP and GraSP
    train, SynFlow eval). Extra `options` go to the source: its options dataclass's fields (e.g. `grasp_temperature`)
    are its `settings`, the defaults for the rest."""
    source = sources.get(method)
    mode = source.default_mode if score_mode is None else score_mode
    if mode not in SCORE_MODES:
        raise UserError(f"score_mode must be one of {SCORE_MODES}, got {mode!r}")
    names = list(names) if names is not None else list(prunable(model))
    batch_list = [(x, y) for x, y in batches] if batches is not None else None
    if source.needs_data and not batch_list:
        raise UserError(f"mask source '{method}' needs training batches (batches=[(inputs, labels), ...])")
    if input_shape is None and batch_list:
        input_shape = tuple(batch_list[0][0].shape[1:])
    work = copy.deepcopy(model).to(torch.float64)
    if mask is not None:
        with torch.no_grad():
            params = dict(work.named_parameters())
            for name, m in mask.items():
                params[name].mul_(m.to(params[name].device, torch.float64))
    work.zero_grad(set_to_none=True)
    work.train(mode == "train")
    inp = ScoreInput(
        model=work,
        names=names,
        batches=batch_list,
        loss_fn=loss_fn or F.cross_entropy,
        generator=torch.Generator().manual_seed(seed),
        options={**options, "input_shape": input_shape},
        settings=source.settings(options),
    )
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # dropout while scoring: seeded, and the caller's RNG untouched
        torch.manual_seed(seed)
        out = run_plugin(f"mask source '{method}'", source.score, inp)
    if not source.builtin:
        _check_scores(method, out, work, names)
    return {name: out[name].detach().to("cpu", torch.float64) for name in names}


def _check_scores(method: str, out: object, model: nn.Module, names: list[str]) -> None:
    """A plugin source's return: {name: a tensor of the weight's shape} for every scored weight."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    for name in names:
        value = out.get(name) if isinstance(out, dict) else None
        if not isinstance(value, Tensor) or tuple(value.shape) != shapes.get(name):
            got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise UserError(
                f"mask source '{method}' must return {{name: scores}} with a tensor of the weight's shape for every "
                f"scored weight; for {name} (shape {shapes.get(name)}) it returned {got}"
            )


def mask_from_scores(
    scores: dict[str, Tensor],
    *,
    density: float,
    scope: str = "global",
    ignore: Iterable[str] = (),
    layer_kinds: dict[str, str] | None = None,
    previous: Mask | None = None,
    invert: bool = False,
    structure: Structure | PruningSpec | str | None = None,
) -> Mask:
    """The mask keeping the highest scores at `density` of the pool (global scope) or of each pool layer
    (layerwise), with magnitude pruning's exact counts (`round(p × surviving)`) and stable tie-breaking (the
    earlier position wins). `ignore`: layers left unpruned (parameter, module names or kinds, as
    `pruning.layers_to_ignore`; kinds from `layer_kinds`). `previous`: only its kept coordinates are
    candidates (iterative schedules). `invert`: keep the LOWEST scores instead (the "invert" ablation).
    `structure` ('unstructured', 'channel', 'n:m' or digits like '2:4'; or a PruningSpec): channels ranked by
    their mean score (density: the fraction of channels kept), or the highest scores of every N:M group (density:
    round(density × m) kept per group)."""
    if scope not in SCOPES:
        raise UserError(f"mask scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    if not 0 <= density <= 1:
        raise UserError(f"target density must be in [0, 1], got {density}")
    for name, s in scores.items():
        if not bool(torch.isfinite(s).all()):
            raise UserError(f"the scores of {name} are not all finite (a diverged network?)")
    current = previous or Mask({name: torch.ones(s.shape, dtype=torch.bool) for name, s in scores.items()})
    current = Mask({name: current[name].to("cpu", torch.bool).clone() for name in scores})
    pool = layer_pool(current, layer_kinds or {}, PruningSpec(layers_to_ignore=tuple(ignore)))
    if not pool:
        raise UserError("the ignored layers leave no layer to prune")
    sign = -1.0 if invert else 1.0
    shape = Structure.of(structure)
    if shape.structured:
        signed = {name: sign * s for name, s in scores.items()}
        return prune_structured(signed, current, pool, {}, density, scope == "layerwise", shape)
    fractions = target_fractions(current, pool, density, scope == "layerwise")
    if scope == "global":
        kept = remove_lowest([sign * scores[n] for n in pool], [current[n] for n in pool], fractions[pool[0]])
        current.update(zip(pool, kept, strict=True))
    else:
        for name in pool:
            (current[name],) = remove_lowest([sign * scores[name]], [current[name]], fractions[name])
    return current


def density_schedule(density: float, rounds: int, schedule: str = "exponential") -> list[float]:
    """The target density after each of `rounds` rounds, ending at `density`: exponential d^(r/R) (SynFlow's)
    or linear 1 − (1 − d)·r/R."""
    if rounds < 1:
        raise UserError(f"mask rounds must be at least 1, got {rounds}")
    if schedule not in SCHEDULES:
        raise UserError(f"mask schedule must be one of {', '.join(SCHEDULES)}, got '{schedule}'")
    if schedule == "exponential":
        return [density if r == rounds else math.pow(density, r / rounds) for r in range(1, rounds + 1)]
    return [density if r == rounds else 1 - (1 - density) * r / rounds for r in range(1, rounds + 1)]


def find_mask(
    model: nn.Module,
    method: str,
    *,
    density: float,
    scope: str = "global",
    rounds: int | None = None,
    schedule: str = "exponential",
    invert: bool = False,
    ignore: Iterable[str] = (),
    layer_kinds: dict[str, str] | None = None,
    structure: Structure | PruningSpec | str | None = None,
    **score_options: object,
) -> Mask:
    """Score and prune to `density`, one-shot (`rounds=1`) or iteratively: each round rescores the masked
    network and prunes its survivors to the schedule's next density (`rounds` default: the source's, 100 for
    SynFlow). `invert` keeps the lowest scores in every round. `structure`: as in `mask_from_scores`.
    `score_options` go to `scores`."""
    source = sources.get(method)
    rounds = source.default_rounds if rounds is None else rounds
    names = list(score_options.pop("names", None) or prunable(model))
    layer_kinds = layer_kinds if layer_kinds is not None else prunable(model)
    mask = Mask.ones(model, names)
    for target in density_schedule(density, rounds, schedule):
        s = scores(model, method, names=names, mask=mask, **score_options)
        mask = mask_from_scores(
            s,
            density=target,
            scope=scope,
            ignore=ignore,
            layer_kinds=layer_kinds,
            previous=mask,
            invert=invert,
            structure=structure,
        )
    return mask
