"""An experiment as a graph of tasks: the dense run once per replicate, IMP levels in order for each rewind
point, controls and stability points after the level they use. Every task is idempotent (finished work
is read back from the store, unfinished work resumes), so any executor may run, retry or re-run them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lottery.experiments import controls, imp, masks, stability, views
from lottery.experiments import tasks as names
from lottery.experiments.context import Context
from lottery.experiments.imp import replicate_dir
from lottery.experiments.tasks import MissingDependency
from lottery.store import RunDir, layout


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
        dense = Task(names.dense(r), "dense", r)
        tasks.append(dense)
        if dense_only:
            continue
        for k in ctx.rewind_points:
            previous = dense.name
            for level in range(1, spec.imp.levels + 1):
                name = names.level(r, k, level)
                tasks.append(Task(name, "level", r, k, level, deps=(previous,)))
                previous = name
                for kind, seed in controls.planned(ctx, level):
                    control = names.control(r, k, level, kind, seed)
                    tasks.append(Task(control, "control", r, k, level, kind, seed, deps=(name,)))
        tasks += mask_tasks(ctx, r, dense.name)  # before the stability points: stability.masks studies them
        for k in ctx.stability_points:
            for level in stability.levels(ctx):
                after = (names.level(r, k, level), *stability.mask_dependencies(ctx, r, k, level))
                tasks.append(Task(names.stability(r, k, level), "stability", r, k, level, deps=after))
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
        tasks.append(Task(names.mask_trace(r), "mask_trace", r, deps=(dense,)))
        after = (tasks[-1].name,)
    for kind in masks.kinds(ctx.spec):
        source, ablation = masks.split_kind(kind)
        for density in spec.densities:
            for seed in spec.seeds:
                name = names.mask(r, kind, density, seed)
                deps = (names.mask(r, source, density, seed),) if ablation else after
                tasks.append(Task(name, "mask", r, k, control=kind, seed=seed, deps=deps, density=density))
    return tasks


def run_task(
    task: Task, ctx: Context, experiment: RunDir, tasks: dict[str, Task] | None = None, step: Callable | None = None
) -> None:
    """The executor's step: `execute` the task; where it finds a dependency's artifacts missing from the store
    (`MissingDependency`: deleted, or failing verification since its task ran), run that dependency's task, then
    this task again. A task itself never trains what another task produces. `step`: what runs one task (`execute`)."""
    tasks = tasks if tasks is not None else {t.name: t for t in plan(ctx)}
    step = step or execute
    if not experiment.exists(layout.RUNS_FILE):  # not bound by a driver (run_experiment, sweep): bind it here
        views.bind(ctx, experiment)
    for _ in range(len(tasks)):
        try:
            step(task, ctx, experiment)
            return
        except MissingDependency as missing:
            if missing.task not in tasks or missing.task == task.name:
                raise
            run_task(tasks[missing.task], ctx, experiment, tasks, step)
    step(task, ctx, experiment)


def execute(task: Task, ctx: Context, experiment: RunDir) -> None:
    """Run one task (a no-op when its results are already in the store). It reads what its dependencies produced;
    where that is missing it raises `MissingDependency` (`run_task` then runs the dependency's task)."""
    rdir = replicate_dir(experiment, task.replicate)
    if task.action == "dense":
        imp.train_dense(ctx, rdir, task.replicate)
    elif task.action == "level":
        imp.run_level(ctx, rdir, task.replicate, task.rewind, task.level)
    elif task.action == "control":
        mask = imp.level_mask(ctx, rdir, task.replicate, task.rewind, task.level)
        if mask is None:
            return  # an earlier level diverged: there is no mask to control for
        controls.run_control(ctx, rdir, task.replicate, task.rewind, task.level, mask, task.control, task.seed)
    elif task.action == "mask":
        masks.run_source(ctx, rdir, task.replicate, task.control, task.density, task.seed)
    elif task.action == "mask_trace":
        masks.trace(ctx, rdir, task.replicate)
    elif task.action == "stability":
        stability.run_point(ctx, experiment, rdir, task.replicate, task.rewind, task.level)
    else:
        raise ValueError(f"unknown task action {task.action!r}")
