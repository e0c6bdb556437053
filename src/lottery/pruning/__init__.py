"""Pruning: masks, the magnitude and random strategies (one module each), and their registry."""

from lottery.pruning.mask import Mask, MaskEnforcer

__all__ = ["Mask", "MaskEnforcer"]
