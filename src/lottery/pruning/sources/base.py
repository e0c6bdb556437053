"""The mask-source registry and the signature every source implements.

A source scores the prunable weights of a model (higher = keep). It receives a float64 working copy of the
model, in its scoring mode (train or eval: `default_mode`, or the caller's `score_mode`), that it may change (sign
flips), the names of the weights to score, the seeded training
batches (or None), the loss function and a seeded generator, and returns {name: float64 tensor}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lottery.registry import Registry

Batches = Iterable[tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ScoreInput:
    model: nn.Module  # a float64 copy, masked weights already zero; the source may change it
    names: list[str]  # the prunable weights to score, in parameter order
    batches: list[tuple[Tensor, Tensor]] | None
    loss_fn: LossFn
    generator: torch.Generator
    options: dict[str, Any]


ScoreFn = Callable[[ScoreInput], dict[str, Tensor]]


@dataclass(frozen=True)
class Source:
    """A registered mask source: its score function, whether it needs training batches, its default number of
    scoring rounds (1: one-shot; SynFlow: 100 with an exponential schedule) and the mode the model scores in by
    default ('train': batch statistics in BatchNorm, dropout active, as SNIP's and GraSP's reference codes;
    'eval': running statistics, no dropout, as Synaptic-Flow's)."""

    score: ScoreFn
    needs_data: bool = False
    default_rounds: int = 1
    default_mode: str = "train"


sources: Registry[Source] = Registry("mask source")


SCORE_MODES = ("train", "eval")


def register(
    name: str, *, needs_data: bool = False, default_rounds: int = 1, default_mode: str = "train"
) -> Callable[[ScoreFn], ScoreFn]:
    if default_mode not in SCORE_MODES:
        raise ValueError(f"default_mode must be one of {SCORE_MODES}, got {default_mode!r}")

    def add(fn: ScoreFn) -> ScoreFn:
        sources.register(name)(Source(fn, needs_data, default_rounds, default_mode))
        return fn

    return add


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
