"""Linear mode connectivity (Frankle et al., ICML 2020): error along α·W₁ + (1 − α)·W₂ and its barrier.

One model instance is reused for every α: its parameters are overwritten in place with the
interpolated weights, never rebuilt. Pruned coordinates are zero in both endpoints, so they stay zero
on the whole path. BatchNorm running statistics are either re-estimated on training batches for each
α, the endpoints α = 0 and α = 1 included ('recompute', the default), or interpolated like the weights
('interpolate'). A split is a pair of tensors in memory, or examples streamed in batches (`Batched`: an image
folder's, decoded anew for every α, never held in memory). Definitions and choices: docs/measured.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from lottery.training.evaluate import Batched, evaluate, evaluate_batched

BATCHNORM_MODES = ("recompute", "interpolate")


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, inputs: Iterable[Tensor]) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain (cumulative) average over
    the input batches given, in their order: the result depends only on the weights and those batches."""
    layers = batchnorms(model)
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    for x in inputs:
        model(x)
    model.train(was_training)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


@torch.no_grad()
def interpolation_curve(
    model: nn.Module,
    w1: dict[str, Tensor],
    w2: dict[str, Tensor],
    alphas: list[float],
    splits: dict[str, tuple[Tensor, Tensor] | Batched],
    batchnorm: str = "recompute",
    bn_data: Tensor | Batched | None = None,
    bn_batch_size: int = 128,
    bn_batches: int = 30,
) -> dict[str, list[float]]:
    """Error (percent) and mean cross-entropy loss on each split at every α, for the network α·w1 + (1 − α)·w2:
    `<split>_error` and `<split>_loss`. BatchNorm statistics ('recompute') come from the first `bn_batches` batches
    of `bn_batch_size` consecutive examples of `bn_data` (one smaller batch when it holds fewer), whether it is a
    tensor or streamed."""
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    state = model.state_dict()
    device = next(model.parameters()).device
    a = {k: v.to(device) for k, v in w1.items()}
    b = {k: v.to(device) for k, v in w2.items()}
    curves: dict[str, list[float]] = {"alpha": list(alphas)}
    for name in splits:
        curves[f"{name}_error"], curves[f"{name}_loss"] = [], []
    has_bn = bool(batchnorms(model))
    for alpha in alphas:
        for name, target in state.items():
            if target.is_floating_point():
                torch.lerp(b[name], a[name], alpha, out=target)  # b + α(a − b) = α·a + (1 − α)·b
            else:
                target.copy_(a[name] if alpha >= 0.5 else b[name])
        if has_bn and batchnorm == "recompute":
            if bn_data is None:
                raise ValueError("batchnorm='recompute' needs training data (bn_data)")
            count = min(bn_batches, max(1, len(bn_data) // bn_batch_size))
            if isinstance(bn_data, Tensor):
                batches = (bn_data[i * bn_batch_size : (i + 1) * bn_batch_size] for i in range(count))
            else:
                batches = (x for x, _ in itertools.islice(bn_data.batches(bn_batch_size), count))
            recompute_batchnorm(model, batches)
        for name, split in splits.items():
            loss, accuracy = evaluate(model, *split) if isinstance(split, tuple) else evaluate_batched(model, split)
            curves[f"{name}_error"].append(100.0 * (1.0 - accuracy))
            curves[f"{name}_loss"].append(loss)
    return curves


def barrier(errors: list[float]) -> float:
    """Error barrier: max over α of E_α minus the mean of the endpoints' errors (same units as `errors`); given
    losses, the loss barrier."""
    return max(errors) - (errors[0] + errors[-1]) / 2
