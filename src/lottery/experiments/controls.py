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
from lottery.experiments.context import Context
from lottery.experiments.imp import rewind_state
from lottery.pruning import Mask, random_global_like, random_like
from lottery.pruning.strategies import layer_pool
from lottery.store import RunDir, layout
from lottery.training import train, train_together

STREAMS = {"random_reinit": 11, "random_prune": 12, "random_prune_global": 13}


def control_dir(replicate_dir: RunDir, k: int, level: int, kind: str, seed: int) -> RunDir:
    return layout.control(replicate_dir, k, level, kind, seed)


def control_seed(kind: str, seed: int, replicate: int, pairing: str = "paired", k: int = 0, level: int = 0) -> int:
    """The seed a control actually uses: derived from its recorded seed, its replicate and its kind; with
    pairing 'independent' also from its rewind point k and level."""
    if pairing == "paired":
        return seeding.derive(seed, replicate, STREAMS[kind])
    return seeding.derive(seed, replicate, STREAMS[kind], k, level)


def control_start(
    ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int, imp_mask: Mask, kind: str, seed: int
) -> tuple[Mask, dict[str, Tensor], dict | None]:
    """(mask, start weights, optimizer state) of a control of the IMP subnetwork `imp_mask` of `level`, rewound
    to k."""
    rewound, optimizer_state = rewind_state(ctx, replicate_dir, replicate, k)
    derived = control_seed(kind, seed, replicate, ctx.spec.controls.pairing, k, level)
    if kind == "random_reinit":
        fresh = ctx.model(derived % 2**63)
        return imp_mask, imp_mask.apply_to({k_: v.detach().cpu() for k_, v in fresh.state_dict().items()}), None
    generator = seeding.generator(derived)
    if kind == "random_prune":
        mask = random_like(imp_mask, None, generator, ctx.spec.pruning)  # keeps pruning.structure
    else:
        pool = layer_pool(imp_mask, ctx.layer_kinds, ctx.spec.pruning)
        mask = random_global_like(imp_mask, generator, pool, ctx.spec.pruning)
    return mask, mask.apply_to(rewound), optimizer_state


def planned(ctx: Context, level: int) -> list[tuple[str, int]]:
    """The controls the spec asks for at `level`: (kind, seed) for every kind and seed, at the control levels."""
    spec = ctx.spec.controls
    if level not in (spec.levels or range(1, ctx.spec.imp.levels + 1)):
        return []
    return [(kind, seed) for kind in spec.kinds for seed in spec.seeds]


def stacked(ctx: Context, level: int) -> bool:
    """Whether the controls the spec plans at `level` train together, as one stacked model (one task)."""
    group = planned(ctx, level)
    return len(group) > 1 and ctx.stacks(len(group))


def run_control(
    ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int, imp_mask: Mask, kind: str, seed: int
) -> dict:
    """Train the control (kind, seed) of a level, or read it back. Where the spec's controls at this level are
    stacked (`stacked`: the plan's one task for them), all of them are trained together, as one stacked model in
    the spec's order (each control keeps its position whichever of them is asked for). A control the spec does not
    plan here (one the stability analysis asks for) is trained alone."""
    group = planned(ctx, level)
    together = (kind, seed) in group and stacked(ctx, level)  # the same for every caller
    wanted = group if together else [(kind, seed)]
    runs, models, jobs = [], [], []
    for kind_, seed_ in wanted:
        mask, weights, optimizer_state = control_start(ctx, replicate_dir, replicate, k, level, imp_mask, kind_, seed_)
        runs.append(control_dir(replicate_dir, k, level, kind_, seed_))
        models.append(ctx.model(0, weights))
        tags = ctx.tags(runs[-1], replicate, kind_, level, k, seed=seed_)
        jobs.append(ctx.job(replicate, start=k, mask=mask, optimizer_state=optimizer_state, tags=tags))
    ctx.runtime.label = f"r{replicate} k={k} level {level} " + ("controls" if together else f"{kind} seed {seed}")
    if not together:
        return train(runs[0], models[0], ctx.data, jobs[0], ctx.runtime)
    return train_together(runs, models, ctx.data, jobs, ctx.runtime, stacked=True)[wanted.index((kind, seed))]
