"""Presets: the papers' protocols by name. Each family's presets live in one module."""

from lottery.presets import conv, dynamic, imagenet, lenet, masks, resnet, vgg  # noqa: F401  (register them)
from lottery.presets.base import Preset, presets

__all__ = ["Preset", "presets"]
