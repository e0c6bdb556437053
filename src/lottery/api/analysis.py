"""Stability and instability of any two networks: `distances`, `interpolate` (the linear path between two
models, evaluated by the user's function or a DataLoader) and `barrier`, on top of `lottery.analysis`."""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lottery.analysis import distance
from lottery.analysis.interpolation import BATCHNORM_MODES, batchnorms, recompute_batchnorm
from lottery.analysis.interpolation import barrier as barrier_of
from lottery.api.masks import starting_mask, weights_of
from lottery.errors import UserError
from lottery.pruning import Mask

Metric = Callable[[Tensor, Tensor], Tensor]


def distances(
    a: nn.Module | Mapping[str, Tensor],
    b: nn.Module | Mapping[str, Tensor],
    mask: Mask | None = None,
    *,
    reference: nn.Module | Mapping[str, Tensor] | None = None,
    names: Iterable[str] | None = None,
    pruned: str = "warn",
) -> dict[str, float]:
    """{'l2', 'angle_degrees', 'normalized_l2'} between `a` and `b` (models or state dicts) over the coordinates
    `mask` keeps ("Stabilizing the LTH" §2): ‖m⊙a − m⊙b‖₂, the angle between m⊙a and m⊙b, and the L2 distance over
    ‖m⊙reference‖₂ (default `a`). `mask` default: every weight of `names` (default `lottery.prunable(a)`; `a` a
    model).

    `pruned`: what to do when `a` or `b` is not exactly zero where `mask` prunes (a copy trained without the mask
    attached drifted there, and distances over the mask cannot see it): 'warn' (default, a `PrunedWeightsWarning`),
    'raise' (UserError) or 'ignore' (e.g. the dense network against its subnetwork, stability to pruning)."""
    if pruned not in PRUNED_CHECKS:
        raise UserError(f"distances: pruned must be one of {', '.join(PRUNED_CHECKS)}, got {pruned!r}")
    mask = starting_mask(a, mask, names, "distances")
    wa, wb = weights_of(a), weights_of(b)
    missing = [n for n in mask if n not in wa or n not in wb]
    if missing:
        raise UserError(f"distances: the weights have no {', '.join(missing[:5])} (masked parameters)")
    if pruned != "ignore":
        _check_pruned(wa, wb, mask, pruned)
    ref = weights_of(reference) if reference is not None else None
    return distance.distances(wa, wb, mask, ref)


PRUNED_CHECKS = ("warn", "raise", "ignore")


class PrunedWeightsWarning(UserWarning):
    """`distances`: a network is not zero where the mask prunes it."""


def _check_pruned(wa: Mapping[str, Tensor], wb: Mapping[str, Tensor], mask: Mask, how: str) -> None:
    for which, weights in (("a", wa), ("b", wb)):
        found = distance.pruned_nonzero(dict(weights), mask)
        if not found:
            continue
        layers = ", ".join(f"{name} ({count})" for name, count in list(found.items())[:3])
        message = (
            f"distances: network {which} has {sum(found.values())} non-zero weight(s) where the mask prunes "
            f"({layers}): was it trained without the mask attached (lottery.attach / lottery.train_subnetwork)? "
            "Distances cover only the kept coordinates; pass pruned='ignore' when this is intended"
        )
        if how == "raise":
            raise UserError(message)
        warnings.warn(message, PrunedWeightsWarning, stacklevel=3)


@dataclass
class Curve:
    """The linear path W(α) = (1 − α)·W_a + α·W_b: `alphas` and, per metric `evaluate` returned, its values."""

    alphas: list[float]
    metrics: dict[str, list[float]]

    def __getitem__(self, metric: str) -> list[float]:
        return self.metrics[metric]

    def barrier(self, metric: str = "error") -> float:
        return barrier(self, metric)


def classification_metrics(
    loader: Iterable, loss_fn: Metric | None = None, metrics: Mapping[str, Metric] | None = None
) -> Callable[[nn.Module], dict[str, float]]:
    """An `evaluate(model)` over `loader`'s (inputs, targets) batches: the example-weighted mean of `loss_fn`
    (default cross-entropy) as 'loss', the error in percent (argmax) as 'error', and `metrics` (name: fn(outputs,
    targets) -> batch mean), in eval mode without gradients, on the model's device."""
    loss_fn = loss_fn or F.cross_entropy
    extra = dict(metrics or {})

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {"loss": 0.0, "error": 0.0, **dict.fromkeys(extra, 0.0)}
        count = 0
        for batch in loader:
            x, y = batch[0].to(device), batch[1].to(device)
            out = model(x)
            n = len(y)
            sums["loss"] += float(loss_fn(out, y)) * n
            sums["error"] += 100.0 * float((out.argmax(-1) != y).sum())
            for name, fn in extra.items():
                sums[name] += float(fn(out, y)) * n
            count += n
        model.train(was_training)
        if count == 0:
            raise UserError("classification_metrics: the loader gave no batches")
        return {name: value / count for name, value in sums.items()}

    return evaluate


def _first_inputs(loader: Iterable, batches: int, device: torch.device) -> Iterator[Tensor]:
    """The inputs (a batch's first element) of the first `batches` batches of `loader`, on `device`."""
    for batch in itertools.islice(loader, batches):
        yield (batch[0] if isinstance(batch, list | tuple) else batch).to(device)


@torch.no_grad()
def interpolate(
    model_a: nn.Module | Mapping[str, Tensor],
    model_b: nn.Module | Mapping[str, Tensor],
    evaluate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    *,
    points: int = 30,
    loader: Iterable | None = None,
    loss_fn: Metric | None = None,
    batchnorm: str = "recompute",
    batchnorm_loader: Iterable | None = None,
    batchnorm_batches: int = 30,
    model: nn.Module | None = None,
) -> Curve:
    """Evaluate the networks W(α) = (1 − α)·W_a + α·W_b at `points` evenly spaced α in [0, 1] (the LMC paper:
    30) with `evaluate(model) -> {metric: value}`, or, without it, `classification_metrics(loader, loss_fn)`
    ('loss', 'error' in percent). Pruned coordinates are zero in both endpoints, so they stay zero on the path.

    BatchNorm running statistics (if any): 'recompute' re-estimates them at every α on `batchnorm_batches`
    batches of `batchnorm_loader` (default `loader`; training data); 'interpolate' interpolates them like the
    weights. `model`: the instance to load W(α) into (default: a copy of `model_a`, which must then be a model).
    """
    if batchnorm not in BATCHNORM_MODES:
        raise UserError(f"interpolate: batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {batchnorm!r}")
    if points < 2:
        raise UserError(f"interpolate: points must be at least 2, got {points}")
    if evaluate is None:
        if loader is None:
            raise UserError("interpolate: give evaluate=fn(model) -> dict, or loader= (with loss_fn=)")
        evaluate = classification_metrics(loader, loss_fn)
    if model is None:
        if not isinstance(model_a, nn.Module):
            raise UserError("interpolate: state dicts need model= (an instance to load the weights into)")
        model = copy.deepcopy(model_a)
    state = model.state_dict()
    a = {k: v.to(state[k].device) for k, v in weights_of(model_a).items()}
    b = {k: v.to(state[k].device) for k, v in weights_of(model_b).items()}
    recompute = batchnorm == "recompute" and bool(batchnorms(model))
    bn_loader = batchnorm_loader if batchnorm_loader is not None else loader
    if recompute and bn_loader is None:
        raise UserError("interpolate: batchnorm='recompute' needs batchnorm_loader= (or loader=): training batches")
    alphas = [i / (points - 1) for i in range(points)]
    metrics: dict[str, list[float]] = {}
    for alpha in alphas:
        for name, target in state.items():
            if target.is_floating_point():
                torch.lerp(a[name], b[name], alpha, out=target)  # a + α(b − a) = (1 − α)·a + α·b
            else:
                target.copy_(b[name] if alpha >= 0.5 else a[name])
        if recompute:
            recompute_batchnorm(model, _first_inputs(bn_loader, batchnorm_batches, next(model.parameters()).device))
        for metric, value in evaluate(model).items():
            metrics.setdefault(metric, []).append(float(value))
    return Curve(alphas, metrics)


def barrier(curve: Curve | Mapping[str, list[float]] | list[float], metric: str = "error") -> float:
    """The error barrier of a path: max over α of E_α minus the mean of the endpoints' E (same units), for
    `curve[metric]` (a `Curve` or a mapping) or a plain list of values."""
    if isinstance(curve, Curve):
        values = curve.metrics.get(metric)
    elif isinstance(curve, Mapping):
        values = curve.get(metric)
    else:
        values = list(curve)
    if not values:
        raise UserError(f"barrier: the curve has no '{metric}' values")
    return barrier_of(list(values))
