"""The training loss by name (`training.loss`): built-in losses and plugin ones (`lottery.plugins.register_loss`).

A loss is called like the `torch.nn.functional` losses: `loss(output, target, reduction="mean")`, where output is
the model's output (N, C) and target the class labels (N,); reduction 'sum' sums over examples and 'none' gives
one loss per example (N,). Training takes the mean over its batch, evaluation the sum over a split divided by
its size, and copies trained together (training/stacked.py) the per-example losses of each copy's batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from lottery.registry import Registry, provide_builtin
from lottery.spec import TrainingSpec

Loss = Callable[..., Tensor]  # (output, target, reduction="mean") -> Tensor

# Built-in losses by name: a factory from the training spec (its loss settings) to the loss.
losses: Registry[Callable[[TrainingSpec], Loss]] = Registry("training.loss")
provide_builtin("loss", losses.__contains__, losses.names)


@losses.register("cross_entropy")
def _cross_entropy(training: TrainingSpec) -> Loss:
    """Softmax cross-entropy over logits, with `training.label_smoothing` (0: none)."""
    smoothing = training.label_smoothing

    def loss(output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        if smoothing:
            return F.cross_entropy(output, target, reduction=reduction, label_smoothing=smoothing)
        return F.cross_entropy(output, target, reduction=reduction)  # the call the engine always made

    return loss


@losses.register("nll")
def _nll(training: TrainingSpec) -> Loss:
    """Negative log-likelihood of a model whose output is already log-probabilities (a LogSoftmax last)."""
    return F.nll_loss


@losses.register("mse")
def _mse(training: TrainingSpec) -> Loss:
    """Squared error between the output and the one-hot label, summed over classes (per example)."""

    def loss(output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        one_hot = F.one_hot(target, output.shape[1]).to(output.dtype)
        per_example = (output - one_hot).square().sum(1)
        return per_example if reduction == "none" else per_example.sum() if reduction == "sum" else per_example.mean()

    return loss


@losses.register("multi_margin")
def _multi_margin(training: TrainingSpec) -> Loss:
    """The multi-class hinge loss (`torch.nn.functional.multi_margin_loss`, margin 1)."""
    return F.multi_margin_loss


def make(training: TrainingSpec) -> Loss:
    """The loss `training.loss` names: built in, or a plugin (registered, or found through an entry point)."""
    if training.loss in losses:
        return losses.get(training.loss)(training)
    from lottery import plugins

    return plugins.check("loss", training.loss, training.loss_source_hash).factory


DEFAULT = make(TrainingSpec())  # cross-entropy: what evaluation uses when given no loss
