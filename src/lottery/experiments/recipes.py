"""A network's recipe: the complete description of what its weights are, whose hash names its directory in the
store (`<store>/networks/<kind>/<hash>`, store/layout.py). Two networks with one recipe are one network, computed
once and shared by every experiment that needs it; a stored network is exactly what its recipe says
(docs/run-format.md, "Recipes").

Every recipe holds `version` (the version of the code that computes its kind: `VERSIONS`) and `arithmetic` (how
its bits are computed: `arithmetic`). Beyond that, each kind holds exactly what its weights depend on:
- dense: the model (a plugin's code hash included), the dataset's settings and content fingerprint (not its path:
  data/fingerprint.py), the training settings with the replicate's seed values;
- imp (level L): level L-1's recipe (the chain down to the dense run), the pruning settings, the one-shot density
  (level 1), the rewind point k and the optimizer-state option;
- a control: its level's recipe, its kind, its recorded seed and the pairing rule (its seed is derived from these
  values and the chain's seed values: experiments/controls.py), and a plugin kind's code hash;
- copy: its subject's recipe (the dense run at k, an IMP level, a control or a [masks] run) and its index;
- a [masks] run: the dense run's recipe, k, its kind, target density, recorded seed and the settings its source
  reads (`source_reads`: its registered options, and a plugin source's code hash);
- prefix: the dense run's recipe and the snapshot points.
- a dynamic run (experiments/dynamic.py `key`) and its copy from k (`dynamic_copy`,
  experiments/dynamic_stability.py `recipe`): the run's recipe, k, the optimizer-state option and the copy's index.

Seeds are derived from values (lottery/seeding.py), never from a replicate's number or a position, so replicate r
of a spec with seed s is the network of replicate 0 with seed s + r. Analysis settings, snapshot points and counts
of levels, controls or replicates never enter a recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from lottery import collective
from lottery.experiments.context import Context
from lottery.experiments.mask_points import at_iteration, stability_point, trace_points
from lottery.experiments.mask_recipe import extra_reads
from lottery.extension_points import control_kinds, mask_sources
from lottery.models.lenet import LeNet
from lottery.plugins import Plugin
from lottery.pruning.early_bird import TRACE_NORMALISATION
from lottery.pruning.structure import recipe_reads
from lottery.results.kinds import split_kind
from lottery.spec import to_dict
from lottery.training.loop import uses_channels_last

# The version of the code path that computes each kind. Bump a kind's number with any change that alters what it
# computes (its weights, mask or recorded results): tests/test_recipe_versions.py compares a tiny run of every kind
# with golden figures recorded for these numbers, and fails where a change forgot the bump.
VERSIONS: dict[str, int] = {
    "dense": 3,
    "imp": 3,
    "control": 3,
    "copy": 3,
    "masks": 3,
    "prefix": 3,
    "dynamic": 1,
    "dynamic_copy": 1,
}
CONTROL_SEED = 0  # the control seed whose subnetwork the stability analysis studies


def _settings(ctx: Context, group: str, replicate: int | None = None) -> dict[str, Any]:
    """One group of the spec as the spec hash sees it (defaults left out); training with replicate r's seeds."""
    spec = ctx.spec
    if replicate is not None:
        spec = dataclasses.replace(spec, training=ctx.training(replicate))
    return to_dict(spec, omit_defaults=True).get(group, {})


# -- how a network's bits are computed -------------------------------------------------------------------------


def stack_independent(ctx: Context) -> bool:
    """Whether a stacked run's bits are known not to depend on its stack's size (two or more) and its position in it:
    LeNet on the CPU (batched matmuls over rows aligned per copy, training/stacked.py; tests/test_recipes.py checks
    it at 1 and 2 threads). Elsewhere (vmap's grouped convolutions, accelerators) the size and position enter the
    recipe. A stack of one differs from a stack of two with more than one thread: its size enters the recipe."""
    return ctx.runtime.device.type == "cpu" and isinstance(ctx._network, LeNet)


def arithmetic(ctx: Context, stacked: bool, size: int = 1, position: int = 0) -> dict[str, Any]:
    """How a network is computed, where that changes its bits: the device, the CPU thread count, the data-parallel
    world size, whether it trains stacked with others (with the stack's size and its position where those matter:
    `stack_independent`), and, trained alone, channels_last convolutions and torch.compile where used."""
    device = ctx.runtime.device.type
    out: dict[str, Any] = {"device": device, "world_size": collective.world_size(), "stacked": stacked}
    if device == "cpu":
        out["threads"] = ctx.runtime.threads or torch.get_num_threads()
    if stacked and (size < 2 or not stack_independent(ctx)):
        out.update(stack=size, position=position)
    if not stacked:  # the single-run backend's options that change bits (training/loop.py Alone)
        if uses_channels_last(ctx._network, ctx.runtime):
            out["channels_last"] = True
        if ctx.runtime.compile:
            out["compiled"] = True
    return out


# A group of one trains alone; from two members on it trains stacked where that is faster (`Context.stacks`, whose
# answer for two or more does not depend on how many). So adding a second replicate or control retrains the first
# (its arithmetic changes from alone to stacked: its recipe says so); adding a third or more trains only what is new
# where stacked bits do not depend on the stack (`stack_independent`), and retrains the group where they do.


def replicates_stacked(ctx: Context) -> bool:
    """Whether the replicates' dense runs and levels train as one stacked model (the planner's group)."""
    return ctx.spec.replicates > 1 and ctx.stacks(ctx.spec.replicates)


def planned_controls(ctx: Context, level: int) -> list[tuple[str, int]]:
    """The controls the spec asks for at `level`: (kind, seed) for every kind and seed, at the control levels."""
    spec = ctx.spec.controls
    if level not in (spec.levels or range(1, ctx.spec.imp.levels + 1)):
        return []
    return [(kind, seed) for kind in spec.kinds for seed in spec.seeds]


def controls_stacked(ctx: Context, level: int) -> bool:
    """Whether the controls the spec plans at `level` train together, as one stacked model (one task)."""
    group = planned_controls(ctx, level)
    return len(group) > 1 and ctx.stacks(len(group))


def analysed_levels(ctx: Context) -> tuple[int, ...]:
    """The levels the stability analysis covers (0 = dense)."""
    spec = ctx.spec.stability
    return spec.levels if spec.levels is not None else tuple(range(ctx.spec.imp.levels + 1))


def dense_copies_level(ctx: Context) -> int:
    """The analysed level whose task trains the dense network's copies at each k (the first): the other levels'
    analyses depend on it."""
    return min(analysed_levels(ctx), default=0)


def mask_subjects(ctx: Context, k: int, level_: int) -> list[tuple[str, float, int]]:
    """(kind, target density, seed) of every `stability.masks` subject of (k, level): at (masks.at, 0) every
    listed kind at every target density, seed masks.seeds[0]; none elsewhere."""
    if level_ != 0 or k != stability_point(ctx):
        return []
    seed = ctx.spec.masks.seeds[0]
    return [(kind, density, seed) for kind in ctx.spec.stability.masks for density in ctx.spec.masks.densities]


def masks_stacked(ctx: Context) -> bool:
    """Whether the [masks] runs of every kind at one density and seed train together, as one stacked model."""
    group = ctx.spec.masks.kinds()
    return len(group) > 1 and ctx.stacks(len(group))


# -- the recipes -----------------------------------------------------------------------------------------------


def _dataset(ctx: Context) -> dict[str, Any]:
    settings = {k: v for k, v in _settings(ctx, "dataset").items() if k != "root"}
    return {**settings, "content": ctx.data_fingerprint}


def dense(ctx: Context, r: int) -> dict[str, Any]:
    return {
        "kind": "dense",
        "version": VERSIONS["dense"],
        "model": _settings(ctx, "model"),
        "dataset": _dataset(ctx),
        "training": _settings(ctx, "training", r),
        "arithmetic": arithmetic(ctx, replicates_stacked(ctx), ctx.spec.replicates, r),
    }


def level(ctx: Context, r: int, k: int, level_: int) -> dict[str, Any]:
    """IMP level `level_` rewound to k (level 0: the dense run)."""
    if level_ == 0:
        return dense(ctx, r)
    imp = ctx.spec.imp
    return {
        "kind": "imp",
        "version": VERSIONS["imp"],
        "parent": level(ctx, r, k, level_ - 1),
        "pruning": _settings(ctx, "pruning"),
        "one_shot_density": imp.one_shot_density if level_ == 1 else None,
        "rewind_iteration": k,
        "optimizer_state": imp.optimizer_state,
        "arithmetic": arithmetic(ctx, replicates_stacked(ctx), ctx.spec.replicates, r),
    }


def control(ctx: Context, r: int, k: int, level_: int, kind: str, seed: int) -> dict[str, Any]:
    group = planned_controls(ctx, level_)
    together = (kind, seed) in group and controls_stacked(ctx, level_)
    position = group.index((kind, seed)) if together else 0
    registered = control_kinds.get(kind)
    code = None if registered.builtin else plugin_code(registered.start)  # (a built-in's: the "control" version)
    return {
        "kind": kind,
        "version": VERSIONS["control"],
        "level": level(ctx, r, k, level_),
        "seed": seed,
        "pairing": ctx.spec.controls.pairing,
        **({"code": code} if code is not None else {}),
        "arithmetic": arithmetic(ctx, together, len(group), position),
    }


def copy(ctx: Context, r: int, k: int, level_: int, kind: str, i: int, control_seed: int) -> dict[str, Any]:
    """Copy i of the stability subject `kind` at (k, level) (the dense network's copies: at k, any level); a
    control subject is the control of seed `control_seed`."""
    if kind == "dense":
        subject = {"dense": dense(ctx, r), "rewind_iteration": k, "optimizer_state": ctx.spec.imp.optimizer_state}
    elif kind == "imp":
        subject = level(ctx, r, k, level_)
    else:
        subject = _start_of(control(ctx, r, k, level_, kind, control_seed))
    return _copy(ctx, subject, i, copy_position(ctx, k, level_, kind, None, i))


def mask_copy(ctx: Context, r: int, kind: str, density: float, seed: int, i: int) -> dict[str, Any]:
    """Copy i of the [masks] run (kind, density, seed) as a stability subject (`stability.masks`): its mask and
    start are the run's."""
    k = at_iteration(ctx)
    subject = _start_of(mask_run(ctx, r, kind, density, seed))
    return _copy(ctx, subject, i, copy_position(ctx, k, 0, kind, density, i))


def _start_of(recipe: dict[str, Any]) -> dict[str, Any]:
    """A control's or [masks] run's recipe as a stability subject: its copies start from its mask and start weights,
    which do not depend on how the run itself is trained."""
    return {key: value for key, value in recipe.items() if key != "arithmetic"}


def _copy(ctx: Context, subject: dict[str, Any], i: int, where: tuple[int, int]) -> dict[str, Any]:
    size, position = where
    stacked = ctx.stacks(size)  # as the point's task decides (stability.train_copies)
    return {
        "kind": "copy",
        "version": VERSIONS["copy"],
        "subject": subject,
        "copy": i,
        "arithmetic": arithmetic(ctx, stacked, size, position),
    }


def point_subjects(ctx: Context, k: int, level_: int) -> list[tuple[str, float | None]]:
    """The subjects whose copies the task of the stability point (k, level) trains, in its stack order: the dense
    network (at the first analysed level only), at level > 0 the IMP subnetwork and `stability.controls`, and at
    (masks.at, 0) the `stability.masks` subjects at every target density."""
    subjects: list[tuple[str, float | None]] = [("dense", None)] if level_ == dense_copies_level(ctx) else []
    if level_ > 0:
        subjects += [("imp", None), *((kind, None) for kind in ctx.spec.stability.controls)]
    subjects += [(kind, density) for kind, density, _ in mask_subjects(ctx, k, level_)]
    return subjects


def copy_position(ctx: Context, k: int, level_: int, kind: str, density: float | None, i: int) -> tuple[int, int]:
    """(stack size, position) of copy i of a subject in the stack its point's task trains (`point_subjects`); the
    dense network's copies are trained by the first analysed level's task."""
    copies = ctx.spec.stability.copies
    if kind == "dense":
        level_ = dense_copies_level(ctx)
    subjects = point_subjects(ctx, k, level_)
    return copies * len(subjects), subjects.index((kind, density)) * copies + i


def plugin_code(fn: Callable[..., Any]) -> str:
    """The hash of a plugin's code (its file, and the files beside it that it imports: `lottery.plugins.Plugin`): what
    the recipes of a plugin mask source's or control kind's networks record, so that changed code is never reused."""
    return Plugin("extension", getattr(fn, "__name__", "plugin"), fn).source_hash()


def source_reads(ctx: Context, source: str) -> dict[str, Any]:
    """The [masks] settings a mask source reads (besides the density and seed), for its recipe: as its registration
    says (`lottery.extension_points.MaskSource`), its options, its rounds where iterative, a plugin's code."""
    spec = ctx.spec.masks
    reads: dict[str, Any] = {"scope": spec.scope, "layers_to_ignore": list(ctx.spec.pruning.layers_to_ignore)}
    reads.update(recipe_reads(ctx.spec.pruning))  # pruning.structure (n, m), where not the default
    reads.update(extra_reads(spec, source))  # a score mode that is not the source's default; early-bird's rule
    registered = mask_sources.get(source) if source in mask_sources else None  # (early_bird: the engine's own)
    if source in spec.rounds or (registered is not None and registered.default_rounds > 1):
        reads.update(rounds=spec.rounds.get(source), schedule=spec.schedule)
    if registered is not None:
        reads.update({key: spec.option(key) for key in registered.option_types()})
        if not registered.builtin:  # a plugin source: its code (a built-in's is the version of the "masks" kind)
            reads["code"] = plugin_code(registered.score)
    if source == "early_bird":
        traced = spec.early_bird_source
        early = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name.startswith("early_bird")}
        reads.update(early, trace_points=trace_points(ctx), normalised_by=TRACE_NORMALISATION)
        reads["traced"] = source_reads(ctx, traced)  # what the traced source reads (snip_batches, ...)
    return reads


def mask_run(ctx: Context, r: int, kind: str, density: float, seed: int) -> dict[str, Any]:
    """A [masks] run: `kind` is a source or `<source>_<ablation>`."""
    source, ablation = split_kind(kind)
    group = ctx.spec.masks.kinds()
    together = masks_stacked(ctx)
    return {
        "kind": kind,
        "version": VERSIONS["masks"],
        "dense": dense(ctx, r),
        "rewind_iteration": at_iteration(ctx),
        "density": density,
        "seed": seed,
        "reads": source_reads(ctx, source),
        # a reinitialized ablation trains from fresh weights with a fresh optimizer, whatever imp.optimizer_state
        "optimizer_state": None if ablation == "reinit" else ctx.spec.imp.optimizer_state,
        "arithmetic": arithmetic(ctx, together, len(group), group.index(kind) if together else 0),
    }


def prefix(ctx: Context, r: int, points: tuple[int, ...], dense_arithmetic: dict[str, Any]) -> dict[str, Any]:
    """The dense run's first iterations, retrained to save W_k (and the optimizer state at k) at `points`, with the
    dense run's arithmetic."""
    return {
        "kind": "prefix",
        "version": VERSIONS["prefix"],
        "dense": dense(ctx, r),
        "snapshots": list(points),
        "arithmetic": dense_arithmetic,
    }
