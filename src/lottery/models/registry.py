"""Model families by name pattern; `build` turns a ModelSpec into an initialized network."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from lottery.errors import unknown_name
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


def build(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, init_seed: int) -> Network:
    """The network `spec.name` for this data, initialized from `init_seed` alone."""
    for pattern, builder in _families.values():
        if pattern.fullmatch(spec.name):
            model = builder(spec, input_shape, num_classes)
            model.initialize(spec.init, torch.Generator().manual_seed(init_seed), spec.batchnorm_init)
            return model
    raise unknown_name("model", spec.name, names())
