"""One driver (experiments/driver.py) for `lottery run`, `lottery sweep` and `lottery rewind-search`: each runs
validate -> lock -> (bind, plan, execute) -> write results -> announce, in that order; `lottery run` executes its
plan through the local executor, stopping at the first error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY, tiny_spec
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.experiments import driver, executors, views
from lottery.experiments.context import Context
from lottery.experiments.plan import plan
from lottery.experiments.rewind_search import run_search
from lottery.experiments.run import run_experiment
from lottery.experiments.sweep import run_sweep
from lottery.experiments.tasks import Task
from lottery.store import layout, write_spec
from lottery.training import Runtime

STEPS = ("prepare", "held", "work", "write_results", "announce_results")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Record the driver's steps as the commands call them (each step still does its work)."""
    seen: list[tuple[str, Any]] = []
    prepare, held, drive, announce = driver.prepare, driver.held, driver.drive, driver.announce_results

    def recording_prepare(*args: Any, **kwargs: Any) -> list[driver.Experiment]:
        found = prepare(*args, **kwargs)
        seen.append(("prepare", [e.directory.path.name for e in found]))
        return found

    def recording_held(experiments: Any, wait: bool = True) -> Any:
        seen.append(("held", [e.directory.path.name for e in experiments]))
        return held(experiments, wait)

    def recording_drive(experiments: Any, runtime: Any, work: Any, write_results: Any, wait: bool = True) -> Any:
        def recording_work(found: Any) -> Any:
            seen.append(("work", None))
            return work(found)

        def recording_write(directory: Any, spec: Any) -> dict[str, Any]:
            seen.append(("write_results", directory.path.name))
            return write_results(directory, spec)

        return drive(experiments, runtime, recording_work, recording_write, wait)

    def recording_announce(experiment: Any, results: dict[str, Any], runtime: Any) -> None:
        seen.append(("announce_results", (experiment.path.name, results)))
        announce(experiment, results, runtime)

    monkeypatch.setattr(driver, "prepare", recording_prepare)
    monkeypatch.setattr(driver, "held", recording_held)
    monkeypatch.setattr(driver, "drive", recording_drive)
    monkeypatch.setattr(driver, "announce_results", recording_announce)
    return seen


def test_run_follows_the_drivers_sequence_through_the_local_executor(
    tmp_path: Path, calls: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    local: list[tuple[list[str], bool]] = []
    run_local = executors.run_local

    def recording_local(jobs: Any, *args: Any, **kwargs: Any) -> executors.Outcome:
        local.append(([job.task.name for job in jobs], kwargs["stop_on_error"]))
        return run_local(jobs, *args, **kwargs)

    monkeypatch.setattr(executors, "run_local", recording_local)
    spec = tiny_spec("imp.levels=1", "imp.rewind=['20it']")
    experiment, results = run_experiment(spec, None, tmp_path, Runtime(progress=False))
    assert [step for step, _ in calls] == list(STEPS)
    assert calls[0][1] == [experiment.path.name]
    assert local == [([task.name for task in plan(Context(spec, Runtime(progress=False)))], True)]
    announced = calls[-1][1]
    assert announced == (experiment.path.name, results)
    assert json.loads((experiment.path / "results.json").read_text()) == json.loads(json.dumps(results))


def test_sweep_and_rewind_search_follow_the_same_sequence(tmp_path: Path, calls: list[tuple[str, Any]]) -> None:
    spec_file = tmp_path / "sweep.toml"  # conftest's tiny settings, swept over two learning rates
    spec_file.write_text(
        '[dataset]\nname = "synthetic"\nvalidation_size = 200\n[model]\nname = "lenet_40_20"\n'
        '[training]\nbatch_size = 50\ntraining_steps = "60it"\neval_every = "20it"\n'
        "[imp]\nlevels = 0\n[sweep.training]\nlr = [0.1, 0.05]\n"
    )
    finished, outcome = run_sweep(spec_file, "lenet_300_100", [], tmp_path / "runs", Runtime(progress=False))
    assert not outcome.failed and len(finished) == 2
    names = sorted(experiment.path.name for experiment, _ in finished)
    steps = [step for step, _ in calls]
    assert steps == ["prepare", "held", "work", "write_results", "write_results", *["announce_results"] * 2]
    assert sorted(calls[0][1]) == sorted(calls[1][1]) == names

    calls.clear()
    experiment, found = run_search(
        tiny_spec("imp.levels=1"), None, tmp_path / "runs", Runtime(progress=False), grid=["0it"], max_copies=2
    )
    assert [step for step, _ in calls] == list(STEPS)
    assert calls[0][1] == [experiment.path.name]
    assert json.loads((experiment.path / "rewind_search.json").read_text()) == found


def test_the_local_executor_stops_at_the_first_error_for_run_and_goes_on_for_a_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_spec()
    jobs = [
        executors.TaskJob(spec, Task("a", "dense", 0)),
        executors.TaskJob(spec, Task("b", "level", 0, deps=("a",))),
        executors.TaskJob(spec, Task("c", "dense", 1)),
    ]
    ran: list[str] = []

    def run_job(spec: Any, task: Task, *args: Any) -> str:
        ran.append(task.name)
        if task.name == "a":
            raise UserError("task a failed")
        return task.name

    monkeypatch.setattr(executors, "run_job", run_job)
    outcome = executors.run_local(jobs, tmp_path, Runtime(progress=False), retries=1)
    assert ran == ["a", "a", "c"] and list(outcome.failed) == [jobs[0].key] and list(outcome.skipped) == [jobs[1].key]
    ran.clear()
    with pytest.raises(UserError, match="task a failed"):
        executors.run_local(jobs, tmp_path, Runtime(progress=False), retries=1, stop_on_error=True)
    assert ran == ["a", "a"]


def test_a_collision_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spec = tiny_spec()
    directory = driver.prepare([(spec, None)], tmp_path, Runtime(progress=False))[0].directory
    write_spec(directory, tiny_spec("replicates=2"), None)  # another spec under this one's name
    before = sorted(p.relative_to(directory.path) for p in directory.path.rglob("*"))
    with pytest.raises(UserError, match="holds a different spec"):
        run_experiment(spec, None, tmp_path, Runtime(progress=False))
    assert sorted(p.relative_to(directory.path) for p in directory.path.rglob("*")) == before


def test_dry_run_lists_the_plans_tasks_with_what_the_store_holds_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs"
    levels = ("imp.rewind=['20it']", "controls.kinds=['random_prune']")
    run_experiment(tiny_spec("imp.levels=1", *levels), None, store, Runtime(progress=False))
    before = sorted(store.rglob("*"))
    capsys.readouterr()
    argv = ["run", "--dry-run", "--out", str(store), "--preset", "lenet_300_100", "--progress", "log"]
    argv += [f"--set={override}" for override in (*TINY, "imp.levels=2", *levels)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == [
        "stored  r0/dense  (1/1 networks stored)",
        "stored  r0/k20/level1  (1/1 networks stored)",
        "stored  r0/k20/level1/random_prune/seed0  (1/1 networks stored)",
        "to run  r0/k20/level2  (0/1 networks stored)",
        "to run  r0/k20/level2/random_prune/seed0  (0/1 networks stored)",
    ]
    assert lines[-1].endswith(": 5 tasks, 2 to run; 2 of 5 networks to train")
    assert sorted(store.rglob("*")) == before  # nothing written: no experiment directory, no link, no lock


def test_a_network_whose_recipe_another_driver_is_writing_is_bound_not_refused(tmp_path: Path) -> None:
    """Two drivers binding one network at once (two experiments sharing a dense run, started together): the other
    one's key.json, still a temporary file, is not 'files but no recipe' (tests/test_reuse.py's race)."""
    spec = tiny_spec()
    experiment = driver.prepare([(spec, None)], tmp_path, Runtime(progress=False))[0]
    network = next(iter(views.networks(experiment.ctx)))
    target = layout.network(tmp_path, network.kind, network.digest)
    target.mkdir(parents=True)
    (target / f"{layout.temporary_prefix(layout.KEY_FILE)}x1.tmp").write_text("{")  # mid-write by the other driver
    write_spec(experiment.directory, spec, None)
    views.bind(experiment.ctx, experiment.directory)
    assert json.loads((target / layout.KEY_FILE).read_text()) == json.loads(json.dumps(network.recipe))
    (target / layout.KEY_FILE).unlink()
    (target / "final.safetensors").write_bytes(b"")  # a real file without a recipe is still refused
    with pytest.raises(UserError, match="holds files but no recipe"):
        views.bind(experiment.ctx, experiment.directory)
