"""An experiment as a graph of tasks: the dense run once per replicate, IMP levels in order for each rewind
point, controls and stability points after the level they use. Every task is idempotent (finished work
is read back from the store, unfinished work resumes), so any executor may run, retry or re-run them."""

from __future__ import annotations

from dataclasses import dataclass

from lottery.experiments import controls, imp, masks, stability
from lottery.experiments.context import Context
from lottery.experiments.imp import replicate_dir
from lottery.store import RunDir


@dataclass(frozen=True)
class Task:
    name: str  # unique within the experiment, readable: 'r0/dense', 'r0/k100/level3/random_prune/seed0'
    action: str  # 'dense', 'level', 'control', 'stability', 'mask' or 'mask_trace'
    replicate: int
    rewind: int = 0
    level: int = 0
    control: str = ""
    seed: int = 0
    deps: tuple[str, ...] = ()
    density: float = 1.0  # a mask source's target density


def plan(ctx: Context, dense_only: bool = False) -> list[Task]:
    """The experiment's tasks in an order that respects their dependencies."""
    spec = ctx.spec
    tasks: list[Task] = []
    for r in range(spec.replicates):
        dense = Task(f"r{r}/dense", "dense", r)
        tasks.append(dense)
        if dense_only:
            continue
        for k in ctx.rewind_points:
            previous = dense.name
            for level in range(1, spec.imp.levels + 1):
                name = f"r{r}/k{k}/level{level}"
                tasks.append(Task(name, "level", r, k, level, deps=(previous,)))
                previous = name
                for kind, seed in controls.planned(ctx, level):
                    tasks.append(Task(f"{name}/{kind}/seed{seed}", "control", r, k, level, kind, seed, deps=(name,)))
        for k in ctx.stability_points:
            for level in stability.levels(ctx):
                after = (f"r{r}/k{k}/level{level}",) if level else (dense.name,)
                tasks.append(Task(f"r{r}/k{k}/stability/level{level}", "stability", r, k, level, deps=after))
        tasks += mask_tasks(ctx, r, dense.name)
    return tasks


def mask_tasks(ctx: Context, r: int, dense: str) -> list[Task]:
    """The [masks] runs of replicate r: the early-bird trace, then each source, then its ablations, at every
    target density and seed; all after the dense run."""
    spec = ctx.spec.masks
    if not spec.sources:
        return []
    tasks, k = [], masks.at_iteration(ctx)
    after = (dense,)
    if "early_bird" in spec.sources:
        tasks.append(Task(f"r{r}/masks/early_bird_trace", "mask_trace", r, deps=(dense,)))
        after = (tasks[-1].name,)
    for kind in masks.kinds(ctx.spec):
        source, ablation = masks.split_kind(kind)
        for density in spec.densities:
            for seed in spec.seeds:
                name = f"r{r}/masks/{kind}/density{density:g}/seed{seed}"
                deps = (f"r{r}/masks/{source}/density{density:g}/seed{seed}",) if ablation else after
                tasks.append(Task(name, "mask", r, k, control=kind, seed=seed, deps=deps, density=density))
    return tasks


def execute(task: Task, ctx: Context, experiment: RunDir) -> None:
    """Run one task (a no-op when its results are already in the store)."""
    rdir = replicate_dir(experiment, task.replicate)
    if task.action == "dense":
        imp.train_dense(ctx, rdir, task.replicate)
    elif task.action == "level":
        imp.run_level(ctx, rdir, task.replicate, task.rewind, task.level)
    elif task.action == "control":
        level = imp.level_dir(rdir, task.rewind, task.level)
        mask = level.read_tensors("mask.safetensors") if level.read_json("summary.json") is not None else None
        if mask is None:
            if imp.run_level(ctx, rdir, task.replicate, task.rewind, task.level) is None:
                return  # an earlier level diverged: there is no mask to control for
            mask = level.read_tensors("mask.safetensors")
        controls.run_control(
            ctx, rdir, task.replicate, task.rewind, task.level, ctx.mask(mask), task.control, task.seed
        )
    elif task.action == "mask":
        masks.run_source(ctx, rdir, task.replicate, task.control, task.density, task.seed)
    elif task.action == "mask_trace":
        masks.trace(ctx, rdir, task.replicate)
    elif task.action == "stability":
        stability.run_point(ctx, experiment, rdir, task.replicate, task.rewind, task.level)
    else:
        raise ValueError(f"unknown task action {task.action!r}")
