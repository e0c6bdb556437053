"""A preset: the settings of one paper protocol, with the source of each number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lottery.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    description: str  # what it reproduces and where each number comes from
    settings: dict[str, Any]  # group -> field -> value, as in a spec file


presets: Registry[Preset] = Registry("preset")


def add(preset: Preset) -> Preset:
    return presets.register(preset.name)(preset)
