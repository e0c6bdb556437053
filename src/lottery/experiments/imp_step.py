"""One IMP, shared by `lottery run` (experiments/imp.py, controls.py) and `lottery.imp` (api/imp.py), so that the
two cannot drift: a level is prune -> rewind -> train -> record, and a control of a level is its start -> train ->
record, here, for both.

- `level`: IMP level L of a group of chains (one chain, or the replicates the engine stacks): prune each chain's
  level L-1 final weights among the weights it keeps, rewind (m_L ⊙ W_k at iteration k), and train and record the
  starts with the driver's `train`.
- `controls`: a level's controls (`lottery.register_control` kinds), each from its seed (`control_seed`, from its
  chain's seed values) and start (`control_start`), trained and recorded with the driver's `train`.

A driver gives only `train(starts)`, how a group of starts is trained from its iteration to the end: the engine's
loop (alone, or the group as one stacked model) or the user's `train_fn` (`lottery.imp`, one after another). Both
record through `lottery.training.record` (start, mask and sparsity when a run begins; final weights and summary
when it is done), so their stores hold the same files."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from lottery import seeding
from lottery.controls import ControlInput, ControlStart
from lottery.errors import UserError
from lottery.extension_points import control_kinds, run_plugin
from lottery.pruning import Mask, layer_pool, prune
from lottery.spec.groups import PruningSpec, TrainingSpec

R = TypeVar("R")

Chain = tuple[int, int, int]  # the seed values that tell a chain apart: init, data order, augmentation


def chain_seeds(training: TrainingSpec) -> Chain:
    """The seed values of a chain (a replicate's dense run and its levels): init, data order, augmentation."""
    return training.init_seed, training.data_order_seed, training.augmentation_seed


@dataclass(frozen=True)
class Trained:
    """A finished run of a chain, as the next level reads it: its mask and its final weights."""

    mask: Mask
    final: dict[str, Tensor]


@dataclass(frozen=True)
class Rewound:
    """A chain at its rewind point k: W_k, and the optimizer state at k where IMP rewinds it (else None)."""

    k: int
    weights: dict[str, Tensor]
    optimizer_state: dict | None = None


@dataclass(frozen=True)
class Rules:
    """How a level prunes: each prunable weight's layer kind ('conv', 'fc', 'output') and the pruning settings."""

    layer_kinds: dict[str, str]
    pruning: PruningSpec


@dataclass(frozen=True)
class Start:
    """Where a run of IMP starts: its mask (held while it trains), its weights (pruned ones zero), the optimizer state
    it starts with (None: a fresh optimizer) and the iteration it starts at."""

    mask: Mask
    weights: dict[str, Tensor]
    optimizer_state: dict | None
    iteration: int


Train = Callable[[list[Start]], list[R]]  # trains each start from its iteration to the end and records it


def level_start(previous: Trained, rewound: Rewound, rules: Rules, one_shot: float | None = None) -> Start:
    """Level L's start: level L-1 pruned (`next_mask`, one shot to `one_shot` where given) and rewound to k."""
    mask = next_mask(previous.final, previous.mask, rules.layer_kinds, rules.pruning, one_shot)
    return Start(mask, rewind(mask, rewound.weights), rewound.optimizer_state, rewound.k)


def level(
    previous: Sequence[Trained],
    rewound: Sequence[Rewound],
    rules: Rules,
    train: Train[R],
    one_shot: float | None = None,
) -> list[R]:
    """IMP level L of each chain of a group (`previous[i]`: chain i's level L-1, `rewound[i]`: its W_k): prune,
    rewind, then `train` (which trains the group, alone or stacked, and records each run); what `train` returns."""
    return train([level_start(p, w, rules, one_shot) for p, w in zip(previous, rewound, strict=True)])


def controls(
    wanted: Sequence[tuple[str, int]],
    level_mask: Mask,
    rewound: Rewound,
    fresh: Callable[[int], dict[str, Tensor]],
    initial: Callable[[], dict[str, Tensor]],
    rules: Rules,
    train: Train[R],
) -> list[R]:
    """The controls `wanted` ((kind, derived seed) each, `control_seed`) of the IMP level with mask `level_mask`: each
    one's start (`control_start`), then `train` (which trains them, alone or stacked, and records each run)."""
    return train([control_start(kind, seed, level_mask, rewound, fresh, initial, rules) for kind, seed in wanted])


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
    rewound: Rewound,
    fresh: Callable[[int], dict[str, Tensor]],
    initial: Callable[[], dict[str, Tensor]],
    rules: Rules,
) -> Start:
    """The start of the control `kind` of the IMP level with mask `imp_mask`, at the rewind point (W_k and the
    optimizer state at k: `rewound`; `fresh(seed)`: fresh weights; `initial()`: W_0), with its derived seed, as its
    registration (`lottery.register_control`) makes it."""
    pool = layer_pool(imp_mask, rules.layer_kinds, rules.pruning)
    registered = control_kinds.get(kind)
    own = registered.builtin  # a plugin gets copies: what it changes in place (`w.mul_(...)`) reaches no other run
    inp = ControlInput(
        mask=imp_mask if own else Mask({name: m.clone() for name, m in imp_mask.items()}),
        rewound=rewound.weights if own else {name: w.clone() for name, w in rewound.weights.items()},
        optimizer_state=rewound.optimizer_state if own else copy.deepcopy(rewound.optimizer_state),
        seed=derived,
        fresh=fresh,
        initial=initial if own else lambda: {name: w.clone() for name, w in initial().items()},
        pool=pool,
        pruning=rules.pruning,
    )
    start = run_plugin(f"control kind '{kind}'", registered.start, inp)
    if not registered.builtin:
        start = _check_start(kind, start, imp_mask, rewound.weights)
    return Start(start.mask, start.weights, start.optimizer_state, rewound.k)


def _check_start(kind: str, start: object, imp_mask: Mask, rewound: dict[str, Tensor]) -> ControlStart:
    """A plugin control's return: a ControlStart whose mask covers exactly the IMP mask's weights with 0/1 values and
    whose weights are the state dict's, each of its shape and dtype, zero where the mask prunes; given back with its
    mask a bool `Mask` in the IMP mask's order (the order ties and random masks follow)."""
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
            if what == "weights" and got.dtype != value.dtype:
                raise UserError(
                    f"control kind '{kind}': its ControlStart's weights {name} are {got.dtype}, not {value.dtype}"
                )
    extra = sorted(set(start.mask) - set(imp_mask))
    if extra:
        raise UserError(
            f"control kind '{kind}': its ControlStart's mask names {', '.join(extra[:3])}, which the IMP mask does not "
            "(a control masks the same weights as its level)"
        )
    mask = Mask({name: start.mask[name] for name in imp_mask})
    for name, m in mask.items():
        if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
            raise UserError(f"control kind '{kind}': its ControlStart's mask of {name} holds values other than 0 and 1")
        pruned = ~m.to(torch.bool).to(start.weights[name].device)
        if bool((start.weights[name][pruned] != 0).any()):
            raise UserError(
                f"control kind '{kind}': its ControlStart's weights of {name} are not zero where its mask prunes "
                "them: return mask.apply_to(weights)"
            )
    return ControlStart(
        Mask({name: m.to(torch.bool) for name, m in mask.items()}), start.weights, start.optimizer_state
    )
