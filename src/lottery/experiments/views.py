"""An experiment as a view of the store: each of its run directories is a link to the network (named by its key,
experiments/keys.py) that the run needs, created before any task runs, and listed in the experiment's `runs.json`.
Every reader then reads the experiment's directories as before; networks shared with other experiments are found
finished and never trained again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lottery import collective
from lottery.experiments import (
    controls,
    dynamic,  # dynamic sparsity (issue 28)
    keys,
    masks,
    stability,
)
from lottery.experiments.context import Context
from lottery.store import RunDir, layout


def views(ctx: Context, dense_only: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(run directory relative to the experiment, key) of every network the experiment's tasks train."""
    spec, root = ctx.spec, Path()
    for r in range(spec.replicates):
        rdir = layout.replicate(root, r)
        yield layout.dense(rdir), keys.dense(ctx, r)
        if dense_only:
            continue
        for k in ctx.rewind_points:
            for level_ in range(1, spec.imp.levels + 1):
                yield layout.level(rdir, k, level_), keys.level(ctx, r, k, level_)
                for kind, seed in controls.planned(ctx, level_):
                    yield layout.control(rdir, k, level_, kind, seed), keys.control(ctx, r, k, level_, kind, seed)
        for k in ctx.stability_points:
            for level_ in stability.levels(ctx):
                yield from copies(ctx, rdir, r, k, level_, spec.stability.controls)
        for kind in masks.kinds(spec) if spec.masks.sources else []:
            for density in spec.masks.densities:
                for seed in spec.masks.seeds:
                    key = keys.mask_run(ctx, r, kind, masks.split_kind(kind)[0], density, seed)
                    yield layout.mask_run(rdir, kind, density, seed), key
        yield from dynamic.views(ctx, rdir, r)  # dynamic sparsity (issue 28)


def copies(
    ctx: Context, rdir: Path, r: int, k: int, level: int, controls_: tuple[str, ...]
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The stability copies of (k, level): the dense network's, at level > 0 the IMP subnetwork's and those of
    the controls `controls_`, and at (masks.at, 0) those of the `stability.masks` subjects."""
    for kind in ["dense"] + (["imp", *controls_] if level > 0 else []):
        where = layout.stability(rdir, k, 0 if kind == "dense" else level)
        for i in range(ctx.spec.stability.copies):
            yield layout.copy(where, kind, i), keys.copy(ctx, r, k, level, kind, i, stability.CONTROL_SEED)
    for kind, density, seed in stability.mask_subject_keys(ctx, k, level):  # stability.masks, at (masks.at, 0)
        where = stability.mask_subject_dir(rdir, k, kind, density, seed)
        source = masks.split_kind(kind)[0]
        for i in range(ctx.spec.stability.copies):
            yield layout.copy(where, kind, i), keys.mask_copy(ctx, r, kind, source, density, seed, i)


def bind_point(ctx: Context, experiment: RunDir, r: int, k: int, level: int, controls_: tuple[str, ...]) -> None:
    """Link what analysing (k, level) of replicate r needs, k anywhere (the rewind search probes points off the
    grid): the dense run, IMP levels 1..level rewound to k, and the copies."""
    rdir = layout.replicate(experiment.path, r)
    found = [(layout.dense(rdir), keys.dense(ctx, r))]
    found += [(layout.level(rdir, k, level_), keys.level(ctx, r, k, level_)) for level_ in range(1, level + 1)]
    found += list(copies(ctx, rdir, r, k, level, controls_))
    _link(found)


def bind(ctx: Context, experiment: RunDir, dense_only: bool = False) -> None:
    """Link every run directory of the experiment to its network and record the view in `runs.json` (rank 0 under
    torchrun; the others wait for it). A store made before format 2 keeps its directories (used in place)."""
    _link([(experiment.path / view, key) for view, key in views(ctx, dense_only)])
    record(experiment)


def _link(found: list[tuple[Path, dict[str, Any]]]) -> None:
    """Link each run directory to the network of its key (rank 0 under torchrun; the others wait for it)."""
    with collective.main_writes() as main:
        if main:
            for view, key in found:
                keys.bind_one(view, key)


def record(experiment: RunDir) -> None:
    """Write `runs.json`: every run directory of the experiment that links to a network (those `bind` made, and a
    prefix run made on demand), with the network's path in the store."""
    view = {"format": layout.FORMAT, "runs": layout.links(experiment.path)}
    if experiment.read_json(layout.RUNS_FILE) != view:
        experiment.write_json(layout.RUNS_FILE, view)
