"""Presets: the papers' protocols by name. Each family's presets live in one module."""

from lottery.presets import lenet  # noqa: F401  (registers its presets)
from lottery.presets.base import Preset, presets

__all__ = ["Preset", "presets"]
