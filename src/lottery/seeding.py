"""Derive independent seeds from a recorded seed and a position (epoch, iteration, copy, ...)."""

from __future__ import annotations

import numpy as np
import torch


def derive(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers; the same parts always give the same seed."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from `derive(*parts)`."""
    return torch.Generator().manual_seed(derive(*parts))
