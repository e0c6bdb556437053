"""The optimizers by name (`training.optimizer`). Their exact fast step: `lottery/exact_step.py`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lottery.spec import TrainingSpec

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
    "nadam": torch.optim.NAdam,
    "adamax": torch.optim.Adamax,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
}
FUSED = ("sgd", "adam", "adamw")  # torch has a fused implementation of these on every device


def optimizer_args(spec: TrainingSpec) -> dict[str, Any]:
    """The keyword arguments of `spec.optimizer`: lr, weight_decay, and the hyperparameters the spec sets (the
    others keep torch's defaults). The spec's own validation refuses one the optimizer does not take."""
    from lottery.spec.groups import OPTIMIZER_ARGS

    args: dict[str, Any] = {"lr": spec.lr, "weight_decay": spec.weight_decay}
    if spec.optimizer == "sgd":
        args.update(momentum=spec.momentum, nesterov=spec.nesterov)
    for name, takers in OPTIMIZER_ARGS.items():
        value = getattr(spec, name)
        unset = value is None or value is False or (name == "momentum" and value == 0)  # torch's defaults
        if spec.optimizer in takers and not unset and name not in args:
            args[name] = tuple(value) if name == "betas" else value
    return args


def make_optimizer(
    params: Iterable[torch.nn.Parameter], spec: TrainingSpec, fused: bool | None = None
) -> torch.optim.Optimizer:
    """The spec's optimizer; `fused`: torch's fused implementation (one kernel per tensor, the same arithmetic up
    to rounding) where it has one (SGD, Adam, AdamW), which stacked copies use; None: torch's default, which the
    training loop's runs use."""
    args = optimizer_args(spec)
    if spec.optimizer in FUSED:
        args["fused"] = fused
    return OPTIMIZERS[spec.optimizer](params, **args)
