"""Model families by name pattern; `build` turns a ModelSpec into an initialized network."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import torch

from lottery.errors import UserError, unknown_name
from lottery.models.base import Network
from lottery.spec import ModelSpec

Builder = Callable[[ModelSpec, tuple[int, ...], int], Network]

# Example name -> (full-match pattern, builder). Builders take the spec, input shape (C, H, W), class count.
_families: dict[str, tuple[re.Pattern[str], Builder]] = {}


def register(pattern: str, example: str) -> Callable[[Builder], Builder]:
    """Register a family: names matching `pattern` (e.g. r'resnet(20|32|44|56|110)') build with it."""

    def add(builder: Builder) -> Builder:
        _families[example] = (re.compile(pattern), builder)
        return builder

    return add


def names() -> list[str]:
    """One example name per family."""
    return sorted(_families)


BYTES_PER_PARAMETER = 16  # float32 weights, gradients and two optimizer moments: the least training needs


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _described(spec: ModelSpec) -> str:
    return f"model {spec.name!r}" + (f" with model.width = {spec.width}" if spec.width is not None else "")


def check_size(spec: ModelSpec, model: torch.nn.Module) -> None:
    """Refuse a network that cannot fit in memory, saying how much it would need."""
    count = sum(p.numel() for p in model.parameters())
    need, have = count * BYTES_PER_PARAMETER, memory_bytes()
    if need > have:
        raise UserError(
            f"{_described(spec)} has {count:.3g} parameters: training it needs at least {need / 2**30:.3g} GiB of "
            f"memory (weights, gradients, optimizer state); this machine has {have / 2**30:.3g} GiB"
        )


def build(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, init_seed: int) -> Network:
    """The network `spec.name` for this data, initialized from `init_seed` alone."""
    for pattern, builder in _families.values():
        if pattern.fullmatch(spec.name):
            try:
                with torch.device("meta"):  # its size first, without allocating anything
                    check_size(spec, builder(spec, input_shape, num_classes))
            except RuntimeError as error:  # a tensor whose size overflows 64 bits
                if "overflow" not in str(error):
                    raise
                too_big = f"{_described(spec)} has a layer of more than 2**63 bytes: it cannot fit in memory"
                raise UserError(too_big) from None
            model = builder(spec, input_shape, num_classes)
            model.initialize(spec.init, torch.Generator().manual_seed(init_seed), spec.batchnorm_init)
            return model
    raise unknown_name("model", spec.name, names())
