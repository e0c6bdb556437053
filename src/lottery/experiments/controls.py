"""The controls that give IMP results meaning, run on finished levels and reusing their artifacts:
random reinitialization (the level's mask on fresh weights) and random pruning (a random mask of the
same per-layer, or global, density on the rewound weights). Every control is seeded.

Pairing (`controls.pairing`, docs/measured.md): by default ('paired') a control's seed depends on its
recorded seed, replicate and kind only, not on the level or the rewind point: every level's random
reinitialization draws the same fresh weights (masked by that level's mask), and random masks of the
same kind are drawn from the same stream at every level. Comparisons across levels are then paired.
'independent' also mixes the level and k into the seed, so every (k, level) draws its own."""

from __future__ import annotations

from torch import Tensor

from lottery import seeding
from lottery.experiments import recipes
from lottery.experiments.context import Context
from lottery.experiments.imp import rewind_state
from lottery.pruning import Mask, random_global_like, random_like
from lottery.pruning.strategies import layer_pool
from lottery.spec import TrainingSpec
from lottery.store import RunDir, layout
from lottery.training import train, train_together

KINDS = ("random_reinit", "random_prune", "random_prune_global")


def control_seed(
    kind: str, seed: int, training: TrainingSpec, pairing: str = "paired", k: int = 0, level: int = 0
) -> int:
    """The seed a control actually uses: derived from its kind, its recorded seed and the seed values of its chain
    (`training`: the replicate's training settings), never a replicate's number; with pairing 'independent' also
    from its rewind point k and level."""
    chain = (training.init_seed, training.data_order_seed, training.augmentation_seed)
    where = () if pairing == "paired" else (k, level)
    return seeding.derive(f"control.{kind}", seed, *chain, *where)


def control_start(
    ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int, imp_mask: Mask, kind: str, seed: int
) -> tuple[Mask, dict[str, Tensor], dict | None]:
    """(mask, start weights, optimizer state) of a control of the IMP subnetwork `imp_mask` of `level`, rewound
    to k."""
    rewound, optimizer_state = rewind_state(ctx, replicate_dir, replicate, k)
    derived = control_seed(kind, seed, ctx.training(replicate), ctx.spec.controls.pairing, k, level)
    if kind == "random_reinit":
        fresh = ctx.model(derived % 2**63)
        return imp_mask, imp_mask.apply_to({k_: v.detach().cpu() for k_, v in fresh.state_dict().items()}), None
    generator = seeding.seeded(derived)
    if kind == "random_prune":
        mask = random_like(imp_mask, None, generator, ctx.spec.pruning)  # keeps pruning.structure
    else:
        pool = layer_pool(imp_mask, ctx.layer_kinds, ctx.spec.pruning)
        mask = random_global_like(imp_mask, generator, pool, ctx.spec.pruning)
    return mask, mask.apply_to(rewound), optimizer_state


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
    runs, models, jobs = [], [], []
    for kind_, seed_ in wanted:
        mask, weights, optimizer_state = control_start(ctx, replicate_dir, replicate, k, level, imp_mask, kind_, seed_)
        runs.append(layout.control(replicate_dir, k, level, kind_, seed_))
        models.append(ctx.model(0, weights))
        tags = ctx.tags(runs[-1], replicate, kind_, level, k, seed=seed_)
        jobs.append(ctx.job(replicate, start=k, mask=mask, optimizer_state=optimizer_state, tags=tags))
    ctx.runtime.label = f"r{replicate} k={k} level {level} " + ("controls" if together else f"{kind} seed {seed}")
    if not together:
        return train(runs[0], models[0], ctx.data, jobs[0], ctx.runtime)
    return train_together(runs, models, ctx.data, jobs, ctx.runtime, stacked=True)[wanted.index((kind, seed))]
