"""The signature every mask source implements; the registry and its decorator, `register_mask_source`, are
`lottery.extension_points`' (one registration per source: its name, seed stream, options, rounds, mode, data).

A source scores the prunable weights of a model (higher = keep). It receives a float64 working copy of the
model, in its scoring mode (train or eval: `default_mode`, or the caller's `score_mode`), that it may change (sign
flips), the names of the weights to score, the seeded training
batches (or None), the loss function, a seeded generator and its settings (its options dataclass), and returns
{name: float64 tensor}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lottery.errors import UserError
from lottery.extension_points import register_mask_source

__all__ = [
    "Batches",
    "LossFn",
    "ScoreFn",
    "ScoreInput",
    "ScoringBatches",
    "batch_gradients",
    "register_mask_source",
    "weights_of",
]

Batches = Iterable[tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ScoreInput:
    model: nn.Module  # a float64 copy, masked weights already zero; the source may change it
    names: list[str]  # the prunable weights to score, in parameter order
    batches: list[tuple[Tensor, Tensor]] | None
    loss_fn: LossFn
    generator: torch.Generator
    options: dict[str, Any]  # every keyword the caller gave (and `input_shape`: one example's shape, or None)
    settings: Any = None  # the source's options dataclass with the spec's (or the caller's) values; None: it has none


ScoreFn = Callable[[ScoreInput], dict[str, Tensor]]


@dataclass(frozen=True)
class ScoringBatches:
    """The option every source that needs data has (inherit it, or declare the same field): how many seeded
    training batches (`training.batch_size` each) it scores on."""

    snip_batches: int = 1

    def validate(self) -> None:
        if not self.snip_batches > 0:
            raise UserError(f"masks.snip_batches must be > 0, got {self.snip_batches}")


def weights_of(model: nn.Module, names: list[str]) -> list[nn.Parameter]:
    params = dict(model.named_parameters())
    return [params[name] for name in names]


def batch_gradients(inp: ScoreInput, create_graph: bool = False) -> list[Tensor]:
    """The gradient of the mean loss over the batches w.r.t. the scored weights (summed per batch / count)."""
    if not inp.batches:
        raise ValueError("this mask source needs training batches (batches=[(x, y), ...])")
    weights = weights_of(inp.model, inp.names)
    total = [torch.zeros_like(w) for w in weights]
    for x, y in inp.batches:
        loss = inp.loss_fn(inp.model(x.to(torch.float64)), y) / len(inp.batches)
        grads = torch.autograd.grad(loss, weights, create_graph=create_graph)
        total = [t + g for t, g in zip(total, grads, strict=True)]
    return total
