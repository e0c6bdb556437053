"""Control kinds: one module each, registering itself with `lottery.extension_points.register_control` (the
decorator a plugin's control uses too; docs/extending/control.md)."""

from lottery.controls import random_prune, random_prune_global, random_reinit  # noqa: F401  (register them)
from lottery.controls.base import ControlInput, ControlStart

__all__ = ["ControlInput", "ControlStart"]
