"""One step of IMP with rewinding, shared by `lottery run` (experiments/imp.py, controls.py) and `lottery.imp`
(api/imp.py), so that the two cannot drift: prune level L-1's final weights among its survivors, rewind (m_L ⊙ W_k),
and make each control's start from the level's mask with the control's seed. Training and recording are the
drivers' own (the engine's loop and store; the user's `train_fn` and the API's store)."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor

from lottery import seeding
from lottery.controls import ControlInput, ControlStart
from lottery.errors import UserError
from lottery.extension_points import control_kinds, run_plugin
from lottery.pruning import Mask, layer_pool, prune
from lottery.spec.groups import PruningSpec, TrainingSpec

Chain = tuple[int, int, int]  # the seed values that tell a chain apart: init, data order, augmentation


def chain_seeds(training: TrainingSpec) -> Chain:
    """The seed values of a chain (a replicate's dense run and its levels): init, data order, augmentation."""
    return training.init_seed, training.data_order_seed, training.augmentation_seed


def next_mask(
    final: dict[str, Tensor],
    previous: Mask,
    layer_kinds: dict[str, str],
    pruning: PruningSpec,
    target_density: float | None = None,
) -> Mask:
    """Level L's mask: level L-1's final weights pruned among the weights `previous` keeps (one shot to
    `target_density` where given)."""
    return prune(final, previous, layer_kinds, pruning, target_density=target_density)


def rewind(mask: Mask, rewound: dict[str, Tensor]) -> dict[str, Tensor]:
    """The start of a level: m_L ⊙ W_k, a copy."""
    return mask.apply_to(rewound)


def control_seed(kind: str, seed: int, chain: Chain, pairing: str = "paired", k: int = 0, level: int = 0) -> int:
    """The seed a control actually uses: derived from its kind's stream, its recorded seed and the seed values of its
    chain, never a replicate's number; with pairing 'independent' also from its rewind point k and level ('paired':
    one seed per chain, so every level's control of a kind draws from the same stream)."""
    where = () if pairing == "paired" else (k, level)
    return seeding.derive(f"control.{kind}", seed, *chain, *where)


def control_start(
    kind: str,
    derived: int,
    imp_mask: Mask,
    rewound: dict[str, Tensor],
    optimizer_state: dict | None,
    fresh: Callable[[int], dict[str, Tensor]],
    initial: Callable[[], dict[str, Tensor]],
    layer_kinds: dict[str, str],
    pruning: PruningSpec,
) -> ControlStart:
    """The start of the control `kind` of the IMP level with mask `imp_mask` (rewound weights W_k, the optimizer state
    at k; `fresh(seed)`: fresh weights; `initial()`: W_0), with its derived seed, as its registration
    (`lottery.register_control`) makes it."""
    pool = layer_pool(imp_mask, layer_kinds, pruning)
    registered = control_kinds.get(kind)
    own = registered.builtin  # a plugin gets copies: what it changes in place (`w.mul_(...)`) reaches no other run
    inp = ControlInput(
        mask=imp_mask if own else Mask({name: m.clone() for name, m in imp_mask.items()}),
        rewound=rewound if own else {name: w.clone() for name, w in rewound.items()},
        optimizer_state=optimizer_state if own else copy.deepcopy(optimizer_state),
        seed=derived,
        fresh=fresh,
        initial=initial if own else lambda: {name: w.clone() for name, w in initial().items()},
        pool=pool,
        pruning=pruning,
    )
    start = run_plugin(f"control kind '{kind}'", registered.start, inp)
    if not registered.builtin:
        _check_start(kind, start, imp_mask, rewound)
    return start


def _check_start(kind: str, start: object, imp_mask: Mask, rewound: dict[str, Tensor]) -> None:
    """A plugin control's return: a ControlStart whose mask covers the IMP mask's weights and whose weights are the
    state dict's, each of its shape."""
    if not isinstance(start, ControlStart):
        raise UserError(f"control kind '{kind}' must return a lottery.ControlStart, got {type(start).__name__}")
    for what, given, like in (("mask", start.mask, imp_mask), ("weights", start.weights, rewound)):
        for name, value in like.items():
            got = given.get(name) if isinstance(given, dict) else None
            if not isinstance(got, Tensor) or got.shape != value.shape:
                raise UserError(
                    f"control kind '{kind}': its ControlStart's {what} needs {name} of shape {tuple(value.shape)}, "
                    f"got {tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}"
                )
