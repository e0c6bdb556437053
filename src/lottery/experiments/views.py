"""An experiment as a view of the store: each of its run directories is a link to the network (named by its recipe,
experiments/recipes.py) that the run needs, created before any task runs, and listed in the experiment's
`runs.json`. Every reader then reads the experiment's directories as before; networks shared with other experiments
are found finished and never trained again.

`networks(ctx)` is the one list of the networks a spec implies: for each, its run directory in the experiment, its
recipe and the task that trains it (with that task's dependencies). Binding (`bind`), the plan (plan.py: its tasks
are the networks' tasks, `steps`), the rewind search's missing lists and costs (`point_networks`), `lottery verify
--recompute` and the tests read it. Nothing is trusted by its name (store/networks.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from lottery import collective
from lottery.experiments import dynamic, dynamic_stability, recipes
from lottery.experiments import tasks as names
from lottery.experiments.context import Context
from lottery.experiments.mask_points import at_iteration
from lottery.experiments.tasks import Task
from lottery.results.kinds import split_kind
from lottery.store import RunDir, layout
from lottery.store.identity import digest
from lottery.store.networks import bind_one, check_experiment


@dataclass(frozen=True)
class Network:
    """One network an experiment needs: its run directory relative to the experiment, its recipe (`make` computes
    it when first asked: planning needs none), and the task that trains it (`step`: its name, action and
    dependencies; plan.py merges a stacked group's members into one task, which answers to their names too)."""

    view: Path
    make: Callable[[], dict[str, Any]] = field(repr=False, compare=False)
    step: Task

    @cached_property
    def recipe(self) -> dict[str, Any]:
        return self.make()

    @property
    def task(self) -> str:
        """The name of the task that trains it."""
        return self.step.name

    @property
    def kind(self) -> str:
        return str(self.recipe["kind"])

    @property
    def digest(self) -> str:
        return digest(self.recipe)


# -- the task that trains each kind of network -------------------------------------------------------------------


def dense_step(r: int) -> Task:
    return Task(names.dense(r), "dense", r)


def level_step(r: int, k: int, level_: int) -> Task:
    """IMP level `level_` rewound to k: after level `level_` - 1 (level 0: the dense run)."""
    return Task(names.level(r, k, level_), "level", r, k, level_, deps=(names.level(r, k, level_ - 1),))


def control_step(r: int, k: int, level_: int, kind: str, seed: int) -> Task:
    name = names.control(r, k, level_, kind, seed)
    return Task(name, "control", r, k, level_, kind, seed, deps=(names.level(r, k, level_),))


def stability_step(ctx: Context, r: int, k: int, level_: int) -> Task:
    """The analysis of (k, level), whose task trains the point's copies: after the IMP level, the [masks] runs it
    studies, and (for another level than the first analysed) the first level's task, which trains the dense
    network's copies."""
    first = recipes.dense_copies_level(ctx)
    deps = (names.level(r, k, level_), *mask_dependencies(ctx, r, k, level_))
    deps += (names.stability(r, k, first),) if level_ != first else ()
    deps += dynamic_stability.dependencies(ctx, r, k, level_)  # the dynamic runs whose copies it trains
    return Task(names.stability(r, k, level_), "stability", r, k, level_, deps=deps)


def mask_dependencies(ctx: Context, r: int, k: int, level_: int) -> tuple[str, ...]:
    """The tasks of the [masks] runs whose subnetworks the point (k, level) studies."""
    return tuple(names.mask(r, kind, density, seed) for kind, density, seed in recipes.mask_subjects(ctx, k, level_))


def trace_step(r: int) -> Task:
    """The early-bird trace of replicate r: no network, the record `early_bird.json` that every [masks] run of a
    spec whose sources include early_bird waits for (the trace says when its ticket is drawn)."""
    return Task(names.mask_trace(r), "mask_trace", r, deps=(names.dense(r),))


def mask_step(ctx: Context, r: int, kind: str, density: float, seed: int) -> Task:
    """A [masks] run: an ablation after its source's run; a source after the dense run, or after the early-bird
    trace where the sources include early_bird."""
    source, ablation = split_kind(kind)
    if ablation:
        deps: tuple[str, ...] = (names.mask(r, source, density, seed),)
    else:
        deps = (names.mask_trace(r),) if "early_bird" in ctx.spec.masks.sources else (names.dense(r),)
    name = names.mask(r, kind, density, seed)
    return Task(name, "mask", r, at_iteration(ctx), control=kind, seed=seed, deps=deps, density=density)


def steps(ctx: Context, dense_only: bool = False) -> list[Task]:
    """The tasks of the experiment, each once, in the order of `networks` (plan.py orders and groups them): the
    task of every network, and before the first task that needs it the one task that trains no network, the
    early-bird trace."""
    out: dict[str, Task] = {}
    for network in networks(ctx, dense_only):
        step = network.step
        for dep in step.deps:
            if dep == names.mask_trace(step.replicate) and dep not in out:
                out[dep] = trace_step(step.replicate)
        out.setdefault(step.name, step)
    return list(out.values())


# -- the networks ------------------------------------------------------------------------------------------------


def networks(ctx: Context, dense_only: bool = False) -> Iterator[Network]:
    """Every network the experiment's tasks train, replicate by replicate: the dense run, IMP levels and their
    controls, the [masks] runs, the dynamic-sparsity runs, then the stability copies (which study the others)."""
    spec, root = ctx.spec, Path()
    for r in range(spec.replicates):
        rdir = layout.replicate(root, r)
        yield Network(layout.dense(rdir), partial(recipes.dense, ctx, r), dense_step(r))
        if dense_only:
            continue
        for k in ctx.rewind_points:
            for level_ in range(1, spec.imp.levels + 1):
                recipe = partial(recipes.level, ctx, r, k, level_)
                yield Network(layout.level(rdir, k, level_), recipe, level_step(r, k, level_))
                for kind, seed in recipes.planned_controls(ctx, level_):
                    recipe = partial(recipes.control, ctx, r, k, level_, kind, seed)
                    yield Network(
                        layout.control(rdir, k, level_, kind, seed), recipe, control_step(r, k, level_, kind, seed)
                    )
        for kind in spec.masks.kinds() if spec.masks.sources else []:
            for density in spec.masks.densities:
                for seed in spec.masks.seeds:
                    recipe = partial(recipes.mask_run, ctx, r, kind, density, seed)
                    step = mask_step(ctx, r, kind, density, seed)
                    yield Network(layout.mask_run(rdir, kind, density, seed), recipe, step)
        yield from _dynamic(ctx, rdir, r)
        for k in ctx.stability_points:
            for level_ in recipes.analysed_levels(ctx):
                yield from copies(ctx, rdir, r, k, level_, spec.stability.controls)


def _dynamic(ctx: Context, rdir: Path, r: int) -> Iterator[Network]:
    """Replicate r's dynamic-sparsity runs (RigL, SET, GMP and their rewound masks: experiments/dynamic.py)."""
    planned = {fields["name"]: Task(**fields) for fields in dynamic.planned(ctx, r, names.dense(r))}
    for view, recipe, task in dynamic.networks(ctx, rdir, r):
        yield Network(view, partial(dict, recipe), planned[task])


def copies(ctx: Context, rdir: Path, r: int, k: int, level: int, controls_: tuple[str, ...]) -> Iterator[Network]:
    """The stability copies of (k, level): the dense network's (trained by the first analysed level's task), at
    level > 0 the IMP subnetwork's and those of the controls `controls_`, and at (masks.at, 0) those of the
    `stability.masks` subjects."""
    first = recipes.dense_copies_level(ctx)
    own = stability_step(ctx, r, k, level)  # the point's task: it trains every copy but the dense network's
    for kind in ["dense"] + (["imp", *controls_] if level > 0 else []):
        where = layout.stability(rdir, k, 0 if kind == "dense" else level)
        step = stability_step(ctx, r, k, first) if kind == "dense" else own
        for i in range(ctx.spec.stability.copies):
            recipe = partial(recipes.copy, ctx, r, k, level, kind, i, recipes.CONTROL_SEED)
            yield Network(layout.copy(where, kind, i), recipe, step)
    for kind, density, seed in recipes.mask_subjects(ctx, k, level):  # stability.masks, at (masks.at, 0)
        where = layout.mask_run(layout.stability(rdir, k, 0), kind, density, seed)
        for i in range(ctx.spec.stability.copies):
            yield Network(layout.copy(where, kind, i), partial(recipes.mask_copy, ctx, r, kind, density, seed, i), own)
    for view, recipe in dynamic_stability.networks(ctx, rdir, r, k, level):  # stability.dynamic (issue 28)
        yield Network(view, recipe, own)


def point_networks(ctx: Context, r: int, k: int, level: int, controls_: tuple[str, ...]) -> list[Network]:
    """What analysing (k, level) of replicate r needs, k anywhere (the rewind search probes points off the grid):
    the dense run, IMP levels 1..level rewound to k, and the point's copies (those of the dense network once)."""
    rdir = layout.replicate(Path(), r)
    found = [Network(layout.dense(rdir), partial(recipes.dense, ctx, r), dense_step(r))]
    found += [
        Network(layout.level(rdir, k, level_), partial(recipes.level, ctx, r, k, level_), level_step(r, k, level_))
        for level_ in range(1, level + 1)
    ]
    return found + list(copies(ctx, rdir, r, k, level, controls_))


def bind_point(
    ctx: Context, experiment: RunDir, r: int, k: int, level: int, controls_: tuple[str, ...]
) -> list[Network]:
    """Link what analysing (k, level) of replicate r needs (`point_networks`); returns those networks."""
    ctx.fingerprint_cache = layout.fingerprints(layout.store_of(experiment.path))
    found = point_networks(ctx, r, k, level, controls_)
    _link(ctx, experiment, found)
    return found


def bind(ctx: Context, experiment: RunDir, dense_only: bool = False) -> None:
    """Link every run directory of the experiment to its network and record the view in `runs.json` (rank 0 under
    torchrun; the others wait for it)."""
    check_experiment(experiment)
    ctx.fingerprint_cache = layout.fingerprints(layout.store_of(experiment.path))
    _link(ctx, experiment, list(networks(ctx, dense_only)))
    record(experiment)


def _link(ctx: Context, experiment: RunDir, found: list[Network]) -> None:
    """Link each run directory to the network of its recipe (rank 0 under torchrun; the others wait for it)."""
    with collective.main_writes() as main:
        if main:
            for network in found:
                bind_one(experiment.path / network.view, network.recipe)


def record(experiment: RunDir) -> None:
    """Write `runs.json`: every run directory of the experiment that links to a network (those `bind` made, and a
    prefix run made on demand), with the network's path in the store."""
    view = {"format": layout.FORMAT, "runs": layout.links(experiment.path)}
    if experiment.read_json(layout.RUNS_FILE) != view:
        experiment.write_json(layout.RUNS_FILE, view)
