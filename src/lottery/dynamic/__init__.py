"""Dynamic sparsity: RigL, SET and gradual magnitude pruning, one cited module each, and the handle
`lottery.dynamic(model, optimizer, ...)` that runs them in any training loop (docs/dynamic.md)."""

from lottery.dynamic.config import METHODS, Config, next_mask
from lottery.dynamic.distribution import DISTRIBUTIONS, erk_densities, initial_mask, layer_counts
from lottery.dynamic.gmp import gmp_density, gmp_update
from lottery.dynamic.handle import DynamicSparsity, dynamic
from lottery.dynamic.rigl import rigl_update
from lottery.dynamic.set import set_update

__all__ = [
    "DISTRIBUTIONS",
    "METHODS",
    "Config",
    "DynamicSparsity",
    "dynamic",
    "erk_densities",
    "gmp_density",
    "gmp_update",
    "initial_mask",
    "layer_counts",
    "next_mask",
    "rigl_update",
    "set_update",
]
