"""Loss and accuracy over a whole split, in large batches, without autograd."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor, nn

from lottery.training.losses import DEFAULT, Loss

EVAL_BATCH = 2000


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: Loss = DEFAULT, batch_size: int = EVAL_BATCH
) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` in eval mode, the loss the training's (default: cross-entropy); the
    model's mode is restored after."""
    if len(x) == 0:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size]).float()
        loss += loss_fn(logits, y[i : i + batch_size], reduction="sum").double()
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    model.train(was_training)
    return float(loss) / len(x), float(correct) / len(x)


@torch.inference_mode()
def evaluate_sums(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: Loss = DEFAULT
) -> tuple[float, int]:
    """(summed loss, number correct) of `model` in eval mode over streamed batches (image folders)."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for x, y in batches:
        logits = model(x).float()
        loss += float(loss_fn(logits, y, reduction="sum").double())
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    return loss, correct


class Batched(Protocol):
    """Examples of known number read in (inputs, labels) batches, each reading anew (`data.stream.Examples`)."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int = ...) -> Iterable[tuple[Tensor, Tensor]]: ...


def evaluate_batched(model: nn.Module, examples: Batched, loss_fn: Loss = DEFAULT) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` in eval mode over examples streamed in batches (`evaluate_sums`); NaN for
    none, as `evaluate`."""
    n = len(examples)
    if n == 0:
        return float("nan"), float("nan")
    loss, correct = evaluate_sums(model, examples.batches(), loss_fn)
    return loss / n, correct / n
