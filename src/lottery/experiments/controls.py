"""The controls that give IMP results meaning, run on finished levels and reusing their artifacts: every registered
control kind (lottery.controls: random reinitialization, the level's mask on fresh weights; random pruning, a random
mask of the same per-layer, or global, density on the rewound weights; plugins). Every control is seeded.

Pairing (`controls.pairing`, docs/measured.md): by default ('paired') a control's seed depends on its
recorded seed, replicate and kind only, not on the level or the rewind point: every level's random
reinitialization draws the same fresh weights (masked by that level's mask), and random masks of the
same kind are drawn from the same stream at every level. Comparisons across levels are then paired.
'independent' also mixes the level and k into the seed, so every (k, level) draws its own."""

from __future__ import annotations

from typing import TypeVar

from torch import Tensor

from lottery.experiments import imp_step, recipes, tasks
from lottery.experiments.context import Context
from lottery.experiments.imp import rewind_state, rules
from lottery.experiments.tasks import MissingDependency
from lottery.pruning import Mask
from lottery.spec import TrainingSpec
from lottery.store import RunDir, layout
from lottery.training import train, train_together

R = TypeVar("R")


def control_seed(
    kind: str, seed: int, training: TrainingSpec, pairing: str = "paired", k: int = 0, level: int = 0
) -> int:
    """The seed a control actually uses (`imp_step.control_seed`): from its kind, its recorded seed and the seed values
    of its chain (`training`: the replicate's training settings); with pairing 'independent' also from k and level."""
    return imp_step.control_seed(kind, seed, imp_step.chain_seeds(training), pairing, k, level)


def control_start(
    ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int, imp_mask: Mask, kind: str, seed: int
) -> tuple[Mask, dict[str, Tensor], dict | None]:
    """(mask, start weights, optimizer state) of a control of the IMP subnetwork `imp_mask` of `level`, rewound
    to k: `imp_step.control_start`, the fresh weights of a seed being the spec's model built with it."""
    start = _controls(ctx, replicate_dir, replicate, k, level, imp_mask, [(kind, seed)], lambda starts: starts)[0]
    return start.mask, start.weights, start.optimizer_state


def _controls(
    ctx: Context,
    replicate_dir: RunDir,
    replicate: int,
    k: int,
    level: int,
    imp_mask: Mask,
    wanted: list[tuple[str, int]],
    train_group: imp_step.Train[R],
) -> list[R]:
    """`imp_step.controls` for the controls `wanted` ((kind, recorded seed) each) of a level of replicate's chain."""
    rewound = imp_step.Rewound(k, *rewind_state(ctx, replicate_dir, replicate, k))
    training, pairing = ctx.training(replicate), ctx.spec.controls.pairing
    derived = [(kind, control_seed(kind, seed, training, pairing, k, level)) for kind, seed in wanted]

    def fresh(init_seed: int) -> dict[str, Tensor]:
        return {name: v.detach().cpu() for name, v in ctx.model(init_seed).state_dict().items()}

    def initial() -> dict[str, Tensor]:
        dense = layout.dense(replicate_dir)
        weights = dense.read_tensors("start.safetensors")
        if weights is None:
            raise MissingDependency(tasks.dense(replicate), f"W_0 of the dense run {dense.path}")
        return weights

    return imp_step.controls(derived, imp_mask, rewound, fresh, initial, rules(ctx), train_group)


def run_control(
    ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int, imp_mask: Mask, kind: str, seed: int
) -> dict:
    """Train the control (kind, seed) of a level, or read it back. Where the spec's controls at this level are
    stacked (`stacked`: the plan's one task for them), all of them are trained together, as one stacked model in
    the spec's order (each control keeps its position whichever of them is asked for). A control the spec does not
    plan here (one the stability analysis asks for) is trained alone."""
    group = recipes.planned_controls(ctx, level)
    together = (kind, seed) in group and recipes.controls_stacked(ctx, level)  # as the recipe's arithmetic says
    wanted = group if together else [(kind, seed)]
    runs = [layout.control(replicate_dir, k, level, kind_, seed_) for kind_, seed_ in wanted]
    ctx.runtime.label = f"r{replicate} k={k} level {level} " + ("controls" if together else f"{kind} seed {seed}")

    def train_group(starts: list[imp_step.Start]) -> list[dict]:
        """The engine's training of a level's controls: alone, or as one stacked model in the spec's order."""
        models, jobs = [], []
        for run, (kind_, seed_), start in zip(runs, wanted, starts):
            models.append(ctx.model(0, start.weights))
            tags = ctx.tags(run, replicate, kind_, level, k, seed=seed_)
            jobs.append(ctx.job(replicate, start=k, mask=start.mask, optimizer_state=start.optimizer_state, tags=tags))
        if not together:
            return [train(runs[0], models[0], ctx.data, jobs[0], ctx.runtime)]
        return train_together(runs, models, ctx.data, jobs, ctx.runtime, stacked=True)

    return _controls(ctx, replicate_dir, replicate, k, level, imp_mask, wanted, train_group)[wanted.index((kind, seed))]
