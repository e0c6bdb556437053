"""An experiment as a graph of tasks: the tasks that train the networks of `views.networks` (the dense run once per
replicate, IMP levels in order for each rewind point, controls and stability points after the level they use), each
network bringing its task and that task's dependencies, so the plan holds no second list of what a spec implies.
Every task is idempotent (finished work is read back from the store, unfinished work resumes), so any executor may
run, retry or re-run them.

The planner chooses once which runs train together as one stacked model (`grouped`): the replicates' dense runs
and each of their IMP levels, a level's controls, the [masks] runs at one density and seed. Such a group is one
task, which trains every member; its members' names stay valid names of it (`index`), so a task that finds a
member's artifacts missing names the member."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lottery.experiments import controls, dynamic, imp, masks, recipes, stability, views
from lottery.experiments import tasks as names
from lottery.experiments.context import Context
from lottery.experiments.tasks import MissingDependency, Task
from lottery.store import RunDir, layout


def plan(ctx: Context, dense_only: bool = False) -> list[Task]:
    """The experiment's tasks in an order that respects their dependencies: the tasks of the networks of
    `views.networks` (each network's recipe comes with the task that trains it and that task's dependencies), and
    the early-bird trace, with each stacked group's members merged into one task."""
    return grouped(ctx, views.steps(ctx, dense_only))


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
    rdir = layout.replicate(experiment, task.replicate)
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
