"""Tasks never recurse: a task reads what its declared dependencies produced and, where that is missing, raises
MissingDependency naming the task to run; only the executor's step (`plan.run_task`) runs that task, then this
one again. Results are those of the ordinary run, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_spec
from lottery.experiments.context import Context
from lottery.experiments.plan import execute, plan, run_task
from lottery.experiments.run import run_experiment
from lottery.experiments.tasks import MissingDependency
from lottery.store import experiment_dir, layout
from lottery.store.layout import walk
from lottery.training import Runtime

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
