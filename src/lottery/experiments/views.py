"""An experiment as a view of the store: each of its run directories is a link to the network (named by its recipe,
experiments/recipes.py) that the run needs, created before any task runs, and listed in the experiment's
`runs.json`. Every reader then reads the experiment's directories as before; networks shared with other experiments
are found finished and never trained again.

`networks(ctx)` is the one list of the networks a spec implies: for each, its run directory in the experiment, its
recipe and the task that trains it. Binding (`bind`), `lottery verify --recompute` and the tests read it. Nothing is
trusted by its name (store/networks.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lottery import collective
from lottery.experiments import dynamic, dynamic_stability, recipes
from lottery.experiments import tasks as names
from lottery.experiments.context import Context
from lottery.store import RunDir, layout
from lottery.store.identity import digest
from lottery.store.networks import bind_one, check_experiment


@dataclass(frozen=True)
class Network:
    """One network an experiment needs: its run directory relative to the experiment, its recipe, and the name of
    the task that trains it (plan.py; a stacked group's task answers to its members' names)."""

    view: Path
    recipe: dict[str, Any]
    task: str

    @property
    def kind(self) -> str:
        return str(self.recipe["kind"])

    @property
    def digest(self) -> str:
        return digest(self.recipe)


def networks(ctx: Context, dense_only: bool = False) -> Iterator[Network]:
    """Every network the experiment's tasks train."""
    spec, root = ctx.spec, Path()
    for r in range(spec.replicates):
        rdir = layout.replicate(root, r)
        yield Network(layout.dense(rdir), recipes.dense(ctx, r), names.dense(r))
        if dense_only:
            continue
        for k in ctx.rewind_points:
            for level_ in range(1, spec.imp.levels + 1):
                yield Network(
                    layout.level(rdir, k, level_), recipes.level(ctx, r, k, level_), names.level(r, k, level_)
                )
                for kind, seed in recipes.planned_controls(ctx, level_):
                    recipe = recipes.control(ctx, r, k, level_, kind, seed)
                    yield Network(
                        layout.control(rdir, k, level_, kind, seed), recipe, names.control(r, k, level_, kind, seed)
                    )
        for k in ctx.stability_points:
            for level_ in recipes.analysed_levels(ctx):
                yield from copies(ctx, rdir, r, k, level_, spec.stability.controls)
        for kind in spec.masks.kinds() if spec.masks.sources else []:
            for density in spec.masks.densities:
                for seed in spec.masks.seeds:
                    recipe = recipes.mask_run(ctx, r, kind, density, seed)
                    yield Network(
                        layout.mask_run(rdir, kind, density, seed), recipe, names.mask(r, kind, density, seed)
                    )
        for view, recipe, task in dynamic.networks(ctx, rdir, r):  # RigL, SET, GMP and their rewound masks
            yield Network(view, recipe, task)


def copies(ctx: Context, rdir: Path, r: int, k: int, level: int, controls_: tuple[str, ...]) -> Iterator[Network]:
    """The stability copies of (k, level): the dense network's (trained by the first analysed level's task), at
    level > 0 the IMP subnetwork's and those of the controls `controls_`, and at (masks.at, 0) those of the
    `stability.masks` subjects."""
    first = recipes.dense_copies_level(ctx)
    for kind in ["dense"] + (["imp", *controls_] if level > 0 else []):
        where = layout.stability(rdir, k, 0 if kind == "dense" else level)
        task = names.stability(r, k, first if kind == "dense" else level)
        for i in range(ctx.spec.stability.copies):
            yield Network(
                layout.copy(where, kind, i), recipes.copy(ctx, r, k, level, kind, i, recipes.CONTROL_SEED), task
            )
    for kind, density, seed in recipes.mask_subjects(ctx, k, level):  # stability.masks, at (masks.at, 0)
        where = layout.mask_run(layout.stability(rdir, k, 0), kind, density, seed)
        for i in range(ctx.spec.stability.copies):
            recipe = recipes.mask_copy(ctx, r, kind, density, seed, i)
            yield Network(layout.copy(where, kind, i), recipe, names.stability(r, k, level))
    for view, recipe, task in dynamic_stability.networks(ctx, rdir, r, k, level):  # stability.dynamic (issue 28)
        yield Network(view, recipe, task)


def bind_point(ctx: Context, experiment: RunDir, r: int, k: int, level: int, controls_: tuple[str, ...]) -> None:
    """Link what analysing (k, level) of replicate r needs, k anywhere (the rewind search probes points off the
    grid): the dense run, IMP levels 1..level rewound to k, and the copies."""
    ctx.fingerprint_cache = layout.fingerprints(layout.store_of(experiment.path))
    rdir = layout.replicate(Path(), r)
    found = [Network(layout.dense(rdir), recipes.dense(ctx, r), names.dense(r))]
    found += [
        Network(layout.level(rdir, k, level_), recipes.level(ctx, r, k, level_), names.level(r, k, level_))
        for level_ in range(1, level + 1)
    ]
    found += list(copies(ctx, rdir, r, k, level, controls_))
    _link(ctx, experiment, found)


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
