"""The training loss by name (`training.loss`): one registry (`lottery.registry.losses`) for built-in and plugin
losses, which register through the same decorator, `lottery.register_loss`.

A loss is called like the `torch.nn.functional` losses: `loss(output, target, reduction="mean")`, where output is
the model's output (N, C) and target the class labels (N,); reduction 'sum' sums over examples and 'none' gives
one loss per example (N,). A loss whose signature names `spec` receives the TrainingSpec (its loss settings, such
as `label_smoothing`). Training takes the mean over its batch, evaluation the sum over a split divided by its
size, and copies trained together (training/stacked.py) the per-example losses of each copy's batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from lottery.plugins import register_loss
from lottery.registry import losses
from lottery.spec import TrainingSpec

Loss = Callable[..., Tensor]  # (output, target, reduction="mean") -> Tensor


@register_loss("cross_entropy")
def cross_entropy(output: Tensor, target: Tensor, reduction: str = "mean", *, spec: TrainingSpec) -> Tensor:
    """Softmax cross-entropy over logits, with `training.label_smoothing` (0: none)."""
    if spec.label_smoothing:
        return F.cross_entropy(output, target, reduction=reduction, label_smoothing=spec.label_smoothing)
    return F.cross_entropy(output, target, reduction=reduction)  # the call the engine always made


@register_loss("nll")
def nll(output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of a model whose output is already log-probabilities (a LogSoftmax last)."""
    return F.nll_loss(output, target, reduction=reduction)


@register_loss("mse")
def mse(output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Squared error between the output and the one-hot label, summed over classes (per example)."""
    one_hot = F.one_hot(target, output.shape[1]).to(output.dtype)
    per_example = (output - one_hot).square().sum(1)
    return per_example if reduction == "none" else per_example.sum() if reduction == "sum" else per_example.mean()


@register_loss("multi_margin")
def multi_margin(output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """The multi-class hinge loss (`torch.nn.functional.multi_margin_loss`, margin 1)."""
    return F.multi_margin_loss(output, target, reduction=reduction)


def make(training: TrainingSpec) -> Loss:
    """The loss `training.loss` names (built in, or a plugin whose code still matches the spec's hash), given
    `spec=training` where its signature names it."""
    entry = losses.check(training.loss, training.loss_source_hash)
    loss = entry.factory if entry.builtin else entry  # (a plugin's failure: one line naming it)
    return functools.partial(loss, spec=training) if entry.takes("spec") else loss


DEFAULT = make(TrainingSpec())  # cross-entropy: what evaluation uses when given no loss
