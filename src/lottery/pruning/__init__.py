"""Pruning: masks, the magnitude and random strategies (one module each), and their registry."""

from lottery.pruning import global_magnitude, layerwise_magnitude  # noqa: F401  (register the strategies)
from lottery.pruning.attachment import Attachment, attach
from lottery.pruning.mask import Mask
from lottery.pruning.prunable import prunable
from lottery.pruning.random import random_global_like, random_like
from lottery.pruning.strategies import StrategyFn, layer_pool, prune, strategies

__all__ = [
    "Attachment",
    "Mask",
    "StrategyFn",
    "attach",
    "layer_pool",
    "prune",
    "prunable",
    "random_global_like",
    "random_like",
    "strategies",
]
