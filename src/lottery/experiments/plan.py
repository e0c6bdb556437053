"""An experiment as a graph of tasks: the dense run once per replicate, IMP levels in order for each rewind
point, controls and stability points after the level they use. Every task is idempotent (finished work
is read back from the store, unfinished work resumes), so any executor may run, retry or re-run them.

The planner chooses once which runs train together as one stacked model (`grouped`): the replicates' dense runs
and each of their IMP levels, a level's controls, the [masks] runs at one density and seed. Such a group is one
task, which trains every member; its members' names stay valid names of it (`index`), so a task that finds a
member's artifacts missing names the member."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from lottery.experiments import controls, dynamic, dynamic_stability, imp, masks, recipes, stability, views
from lottery.experiments import tasks as names
from lottery.experiments.context import Context
from lottery.experiments.imp import replicate_dir
from lottery.experiments.tasks import MissingDependency
from lottery.spec import split_kind
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
    members: tuple[str, ...] = ()  # a stacked group's task: the names of the runs' own tasks it stands for


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
                for kind, seed in recipes.planned_controls(ctx, level):
                    control = names.control(r, k, level, kind, seed)
                    tasks.append(Task(control, "control", r, k, level, kind, seed, deps=(name,)))
        tasks += mask_tasks(ctx, r, dense.name)  # before the stability points: stability.masks studies them
        tasks += [Task(**fields) for fields in dynamic.planned(ctx, r, dense.name)]  # dynamic sparsity (issue 28)
        for k in ctx.stability_points:
            first = recipes.dense_copies_level(ctx)
            for level in recipes.analysed_levels(ctx):
                after = (names.level(r, k, level), *stability.mask_dependencies(ctx, r, k, level))
                after += (names.stability(r, k, first),) if level != first else ()
                after += dynamic_stability.dependencies(ctx, r, k, level)  # stability.dynamic (issue 28)
                tasks.append(Task(names.stability(r, k, level), "stability", r, k, level, deps=after))
    return grouped(ctx, tasks)


def group_name(ctx: Context, task: Task) -> str | None:
    """The name of the stacked group `task`'s run trains in, or None: trained alone (the planner's one choice,
    asked of `Context.stacks` through each kind's rule)."""
    if task.action in ("dense", "level") and recipes.replicates_stacked(ctx):
        return names.replicates(task.rewind, task.level)
    if task.action == "control" and recipes.controls_stacked(ctx, task.level):
        return names.controls(task.replicate, task.rewind, task.level)
    if task.action == "mask" and recipes.masks_stacked(ctx):
        return names.masks_at(task.replicate, task.density, task.seed)
    return None


def grouped(ctx: Context, tasks: list[Task]) -> list[Task]:
    """The tasks with each stacked group's runs merged into one task (at its first member's place, with every
    member's dependencies), in an order that respects the dependencies."""
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        name = group_name(ctx, task)
        if name is not None:
            groups.setdefault(name, []).append(task)
    alias = {member.name: name for name, members in groups.items() if len(members) > 1 for member in members}
    merged: dict[str, Task] = {}
    for task in tasks:
        name = alias.get(task.name, task.name)
        if name in merged:
            continue
        members = groups[name] if name in groups and name != task.name else [task]
        deps = dict.fromkeys(alias.get(d, d) for member in members for d in member.deps)
        deps.pop(name, None)
        merged[name] = dataclasses.replace(
            task, name=name, deps=tuple(deps), members=tuple(m.name for m in members) if len(members) > 1 else ()
        )
    return _in_dependency_order(list(merged.values()))


def _in_dependency_order(tasks: list[Task]) -> list[Task]:
    """A stable topological order: each task after its dependencies, otherwise as given."""
    done: set[str] = set()
    ordered: list[Task] = []
    waiting = list(tasks)
    while waiting:
        ready = next(t for t in waiting if all(d in done for d in t.deps))
        waiting.remove(ready)
        ordered.append(ready)
        done.add(ready.name)
    return ordered


def index(tasks: list[Task]) -> dict[str, Task]:
    """Every task by its name and by its members' names."""
    return {name: task for task in tasks for name in (task.name, *task.members)}


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
        source, ablation = split_kind(kind)
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
    tasks = tasks if tasks is not None else index(plan(ctx))
    step = step or execute
    if not experiment.exists(layout.RUNS_FILE):  # not bound by a driver (run_experiment, sweep): bind it here
        views.bind(ctx, experiment)
    for _ in range(len(tasks)):
        try:
            step(task, ctx, experiment)
            return
        except MissingDependency as missing:
            if missing.task not in tasks or tasks[missing.task].name == task.name:
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
    elif task.action == "dynamic":  # dynamic sparsity (issue 28)
        dynamic.execute(ctx, rdir, task.replicate, task.control, task.density, task.seed, task.rewind)
    elif task.action == "mask_trace":
        masks.trace(ctx, rdir, task.replicate)
    elif task.action == "stability":
        stability.run_point(ctx, experiment, rdir, task.replicate, task.rewind, task.level)
    else:
        raise ValueError(f"unknown task action {task.action!r}")
