"""Tasks never recurse: a task reads what its declared dependencies produced and, where that is missing, raises
MissingDependency naming the task to run; only the executor's step (`plan.run_task`) runs that task, then this
one again. Results are those of the ordinary run, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_spec
from lottery.experiments.context import Context
from lottery.experiments.plan import execute, index, plan, run_task
from lottery.experiments.run import run_experiment
from lottery.experiments.tasks import MissingDependency
from lottery.store import RunDir, experiment_dir, layout
from lottery.store.layout import walk
from lottery.training import Runtime, loop

OVERRIDES = ("imp.levels=2", "imp.rewind=['20it']", "controls.kinds=['random_prune']")


def trained(root: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(root)) for p in walk(root, "summary.json"))


def test_every_task_on_an_empty_store_names_a_declared_dependency_and_trains_nothing(tmp_path: Path) -> None:
    spec = tiny_spec(*OVERRIDES)
    ctx = Context(spec, Runtime(progress=False))
    experiment = experiment_dir(tmp_path, spec)
    for task in plan(ctx):
        if not task.deps:
            continue
        with pytest.raises(MissingDependency) as missing:
            execute(task, ctx, experiment)
        assert missing.value.task in task.deps, task.name
        assert missing.value.task in str(missing.value)
    assert trained(tmp_path) == []


def test_the_executor_runs_missing_dependencies_first_with_identical_results(tmp_path: Path) -> None:
    spec = tiny_spec(*OVERRIDES)
    reference, _ = run_experiment(spec, None, tmp_path / "reference", Runtime(progress=False))

    ctx = Context(spec, Runtime(progress=False))
    experiment = experiment_dir(tmp_path / "repaired", spec)
    tasks = {t.name: t for t in plan(ctx)}
    run_task(tasks["r0/k20/level2/random_prune/seed0"], ctx, experiment, tasks)  # the last task, alone
    assert trained(experiment.path) == [
        "replicate_0/level_0",
        "replicate_0/rewind_20it/controls/level_2/random_prune_seed0",
        "replicate_0/rewind_20it/level_1",
        "replicate_0/rewind_20it/level_2",
    ]
    for relative in trained(experiment.path):
        ours, theirs = (
            (experiment / relative).read_tensors("final.safetensors"),
            (reference / relative).read_tensors("final.safetensors"),
        )
        assert all(torch.equal(ours[n], theirs[n]) for n in theirs), relative

    # A dependency's artifact lost after its task ran: the task says which task to rerun; the executor reruns it.
    dense = layout.dense(layout.replicate(experiment, 0))
    (dense.path / layout.snapshot(20)).unlink()
    (experiment.path / "replicate_0/rewind_20it/level_1/summary.json").unlink()
    with pytest.raises(MissingDependency) as missing:
        execute(tasks["r0/k20/level1/random_prune/seed0"], ctx, experiment)
    assert missing.value.task == "r0/k20/level1"
    run_task(tasks["r0/k20/level1/random_prune/seed0"], ctx, experiment, tasks)
    assert dense.read_tensors(layout.snapshot(20)) is not None
    control = experiment / "replicate_0/rewind_20it/controls/level_1/random_prune_seed0"
    reference_control = reference / "replicate_0/rewind_20it/controls/level_1/random_prune_seed0"
    ours, theirs = control.read_tensors("final.safetensors"), reference_control.read_tensors("final.safetensors")
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs)


def test_a_stacked_group_is_one_task_and_no_task_trains_another_tasks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planner chooses the stacked groups (LeNet on the CPU: the replicates' runs, a level's controls): each is
    one task, and every network is trained by exactly one task, its own or its group's."""
    spec = tiny_spec(
        "imp.levels=2",
        "replicates=2",
        "controls.kinds=['random_prune', 'random_reinit']",
        "stability.rewind=[0]",
        "stability.levels=[0, 2]",
        "stability.controls=['random_reinit']",
        "stability.interpolation_points=3",
        "stability.train_subset=300",
    )
    ctx = Context(spec, Runtime(progress=False))
    tasks = plan(ctx)
    by_name = index(tasks)
    assert by_name["r0/dense"] is by_name["r1/dense"] and by_name["r1/dense"].name == "r*/dense"
    assert by_name["r1/k0/level2"].members == ("r0/k0/level2", "r1/k0/level2")
    controls = by_name["r1/k0/level1/random_reinit/seed0"]
    assert controls.name == "r1/k0/level1/controls" and len(controls.members) == 2
    assert by_name["r0/k0/stability/level2"].deps == ("r*/k0/level2", "r0/k0/stability/level0")
    assert len({t.name for t in tasks}) == len(tasks) < len(by_name)

    opened: list[Path] = []
    init = loop.Session.__init__

    def recording(self: loop.Session, run: RunDir, *args: object, **kwargs: object) -> None:
        opened.append(run.path.resolve())
        init(self, run, *args, **kwargs)

    monkeypatch.setattr(loop.Session, "__init__", recording)
    experiment = experiment_dir(tmp_path, spec)
    trained_by: dict[Path, str] = {}
    for task in tasks:  # in the plan's order: every dependency is done before its task runs
        before = len(opened)
        execute(task, ctx, experiment)
        for run in opened[before:]:
            assert run not in trained_by, f"{task.name} trained {run}, which {trained_by.get(run)} trained"
            trained_by[run] = task.name
    assert set(trained_by) == {p.parent.resolve() for p in walk(experiment.path, "summary.json")}
    # dense 2 + levels 4 + controls 8 + copies: dense 2x2 at level 0, imp and random_reinit 2x2x2 at level 2
    assert len(trained_by) == 2 + 4 + 8 + 4 + 8
