"""Weight initializers, each drawing from an explicit generator so the init seed alone decides them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lottery.registry import Registry

weight_initializers: Registry[Callable[[torch.Tensor, torch.Generator], None]] = Registry("initializer")
batchnorm_initializers: Registry[Callable[[nn.Module, torch.Generator], None]] = Registry("batchnorm initializer")


@weight_initializers.register("kaiming_normal")
def kaiming_normal(weight: torch.Tensor, generator: torch.Generator) -> None:
    nn.init.kaiming_normal_(weight, generator=generator)


@weight_initializers.register("kaiming_uniform")
def kaiming_uniform(weight: torch.Tensor, generator: torch.Generator) -> None:
    nn.init.kaiming_uniform_(weight, generator=generator)


@weight_initializers.register("glorot_normal")
def glorot_normal(weight: torch.Tensor, generator: torch.Generator) -> None:
    nn.init.xavier_normal_(weight, generator=generator)


@weight_initializers.register("glorot_uniform")
def glorot_uniform(weight: torch.Tensor, generator: torch.Generator) -> None:
    nn.init.xavier_uniform_(weight, generator=generator)


@batchnorm_initializers.register("default")
def batchnorm_default(module: nn.Module, generator: torch.Generator) -> None:
    """gamma = 1, beta = 0."""
    nn.init.ones_(module.weight)
    nn.init.zeros_(module.bias)


@batchnorm_initializers.register("uniform")
def batchnorm_uniform(module: nn.Module, generator: torch.Generator) -> None:
    """gamma ~ U[0, 1], beta = 0 (open_lth's 'uniform' option)."""
    nn.init.uniform_(module.weight, generator=generator)
    nn.init.zeros_(module.bias)
