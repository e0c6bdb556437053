"""Every seed the project derives, from one table: a purpose (a stream of `STREAMS`) and the seed *values* it
depends on (a recorded seed, a replicate's training seeds, an epoch, an iteration, a copy's index), never a
position such as a replicate number.

`derive(purpose, *values)` feeds NumPy's `SeedSequence` with the purpose's stream id, the number of values and the
values themselves. The stream id keeps purposes apart (two purposes never share a seed, whatever their values); the
count keeps `derive(p, a, b)` apart from `derive(p, a, b, 0)` (SeedSequence alone treats trailing zeros as absent).
Values are non-negative integers below 2**63. `tests/test_seeding.py` checks both properties.
"""

from __future__ import annotations

import numpy as np
import torch

# purpose -> stream id. Never reuse or renumber an id: a network's recipe (experiments/recipes.py) names the code
# version that derives its seeds, and a changed id changes what every stored network of that kind is. The purposes
# of the extension points are added by their registrations (`add_stream`): each mask source's `masks.<name>`
# (lottery.pruning.sources: magnitude 30, snip 31, grasp 32, synflow 33, random 34) and each control kind's
# `control.<name>` (lottery.controls: random_reinit 20, random_prune 21, random_prune_global 22).
STREAMS: dict[str, int] = {
    # the training loop and its data (data/batches.py, data/imaging.py, training/loop.py)
    "data_order": 1,  # the permutation of epoch e: (data_order_seed, e)
    "augmentation": 2,  # the crop and flip of iteration t: (augmentation_seed, t[, example])
    "dropout": 3,  # the dropout state of a run starting at iteration k: (data_order_seed, k)
    "loader_workers": 4,  # a DataLoader's worker seeds from iteration t on (lottery.integrations): (seed, t)
    # the stability analysis (experiments/stability.py)
    "copy_data_order": 10,  # copy i's data-order seed: (the chain's data_order_seed, i)
    "copy_augmentation": 11,  # copy i's augmentation seed: (the chain's augmentation_seed, i)
    # the [masks] engine beside its sources (experiments/masks.py): (recorded seed, the replicate's training seeds)
    "masks.early_bird": 35,
    "masks.trace": 36,  # the early-bird trace's scoring batches: (the replicate's training seeds)
    "masks.shuffle": 40,  # an ablation: (the source's stream id, recorded seed, the replicate's training seeds)
    "masks.reinit": 41,
    "masks.invert": 42,
    # dynamic sparsity (experiments/dynamic.py): the initial mask and SET's regrowth, (recorded seed, the chain's
    # training seeds)
    "dynamic": 60,
    "dynamic.initial_mask": 61,  # (the run's seed[, layer index])
    "dynamic.set_growth": 62,  # (the run's seed, step, layer index)
    # copy i of a dynamic run from k (experiments/dynamic_stability.py): (the chain's seed, the recorded seed, i)
    "dynamic.copy_data_order": 63,
    "dynamic.copy_augmentation": 64,
    "dynamic.copy_growth": 65,  # SET's regrowth in the copy: (the run's derived seed, i)
    # the Python API (api/masks.py)
    "api.random_mask": 53,
}
# Ids that once named a purpose and are never given to another: the API's own control streams (`lottery.imp`'s
# controls now derive their seeds as the engine's do, from `control.<kind>`: experiments/imp_step.py).
RETIRED = {50: "api.control.random_reinit", 51: "api.control.random_prune", 52: "api.control.random_prune_global"}


def add_stream(purpose: str, stream: int) -> None:
    """Add `purpose` with stream id `stream` to the table (an extension point's registration). The same pair again is
    a no-op; a purpose with another id, or an id another purpose (or a retired one) holds, raises ValueError."""
    if not isinstance(stream, int) or isinstance(stream, bool) or not 0 <= stream < 2**32:
        raise ValueError(f"the seed stream of {purpose!r} must be an integer in [0, 2**32), got {stream!r}")
    if STREAMS.get(purpose) == stream:
        return
    if purpose in STREAMS:
        raise ValueError(f"seed purpose {purpose!r} already has stream {STREAMS[purpose]}, not {stream}")
    holder = next((p for p, s in STREAMS.items() if s == stream), None) or RETIRED.get(stream)
    if holder is not None:
        raise ValueError(f"seed stream {stream} of {purpose!r} is already {holder!r}'s: choose an unused id")
    STREAMS[purpose] = stream


_LIMIT = 2**63


def derive(purpose: str, *values: int) -> int:
    """A well-mixed 63-bit seed for `purpose` from integer values; the same (purpose, values) always give the same
    seed, and distinct ones (with a different purpose, or a different number of values) distinct seeds."""
    stream = STREAMS[purpose]  # KeyError: a purpose not in the table
    parts = [int(v) for v in values]
    if any(not 0 <= v < _LIMIT for v in parts):
        raise ValueError(f"seed values must be integers in [0, 2**63): {parts}")
    state = np.random.SeedSequence([stream, len(parts), *parts]).generate_state(2, np.uint32)
    return ((int(state[0]) << 31) ^ int(state[1])) % _LIMIT


def generator(purpose: str, *values: int) -> torch.Generator:
    """A CPU generator seeded from `derive(purpose, *values)`."""
    return seeded(derive(purpose, *values))


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with a seed `derive` gave (recorded, e.g. a control's or a mask source's)."""
    return torch.Generator().manual_seed(seed)
