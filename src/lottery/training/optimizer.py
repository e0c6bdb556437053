"""The optimizers of the papers' protocols."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from lottery.spec import TrainingSpec


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: TrainingSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay
    )
