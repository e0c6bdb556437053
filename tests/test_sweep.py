"""Sweeps: grid expansion, the local and Ray executors give identical stores, restarts skip finished
tasks, failing tasks are retried and reported while the others go on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cluster_helpers import LOOPBACK, descendants, listening
from lottery.errors import UserError
from lottery.experiments import executors
from lottery.experiments.sweep import expand, run_sweep, status
from lottery.experiments.sweep_status import summary
from lottery.spec import resolve
from lottery.store.layout import walk
from lottery.training import Runtime

SWEEP = """
preset = "lenet_300_100"
[dataset]
name = "synthetic"
validation_size = 200
[model]
name = "lenet_40_20"
[training]
batch_size = 50
training_steps = "40it"
eval_every = "20it"
[imp]
levels = 2
[controls]
kinds = ["random_prune"]
[sweep.training]
lr = [1e-3, 2e-3]
"""


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(walk(root, "*.safetensors"))}


def test_grid_expansion(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('preset = "lenet_300_100"\n[sweep]\nreplicates = [1, 2]\n[sweep.training]\nlr = [0.1, 0.2, 0.1]\n')
    points = expand(path)
    assert [p for _, _, p in points] == [
        {"replicates": 1, "training.lr": 0.1},
        {"replicates": 1, "training.lr": 0.2},
        {"replicates": 2, "training.lr": 0.1},
        {"replicates": 2, "training.lr": 0.2},
    ]  # (the repeated 0.1 is one experiment)
    assert points[3][0].training.optimizer == "adam" and points[3][0].replicates == 2
    path.write_text("[sweep.training]\nlr = 0.1\n")
    with pytest.raises(UserError, match="non-empty list"):
        expand(path)
    path.write_text("[sweep.training]\nlr = [0.1, -1]\n")
    with pytest.raises(UserError, match="training.lr must be > 0"):
        expand(path)
    with pytest.raises(UserError, match="lottery sweep"):
        resolve(path)


def test_local_and_ray_executors_give_identical_results(
    sweep_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    import ray

    monkeypatch.setenv(executors.LOOPBACK_VARIABLE, "0")  # also restored afterwards for the tests that follow
    local, outcome = run_sweep(sweep_file, None, [], tmp_path / "local", Runtime(progress=False))
    assert not outcome.failed and len(outcome.done) == 2 * 5  # dense, 2 levels, 2 controls, per experiment
    try:
        remote, outcome = run_sweep(sweep_file, None, [], tmp_path / "ray", Runtime(progress=False), "ray", workers=2)
        # the local instance is on loopback only: reached at 127.0.0.1, and every socket it listens on is there
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        addresses = listening(descendants(os.getpid()))
        assert addresses and addresses <= LOOPBACK, addresses
    finally:
        ray.shutdown()
    assert not outcome.failed and len(outcome.done) == 10
    assert [e.path.name for e, _ in local] == [e.path.name for e, _ in remote]
    assert snapshot(tmp_path / "local") == snapshot(tmp_path / "ray") != {}
    for (a, _), (b, _) in zip(local, remote):
        assert (a.path / "results.csv").read_text().split("train_seconds")[0] == (
            b.path / "results.csv"
        ).read_text().split("train_seconds")[0]


def test_restarted_sweep_skips_finished_tasks(
    sweep_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = executors.execute

    def interrupted(task, ctx, experiment):  # noqa: ANN001, ANN202
        calls.append(task.name)
        if len(calls) == 7:  # the second experiment's first level
            raise KeyboardInterrupt
        return original(task, ctx, experiment)

    monkeypatch.setattr(executors, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep_file, None, [], tmp_path / "runs", Runtime(progress=False))
    finished = {p: p.stat().st_mtime_ns for p in walk((tmp_path / "runs"), "final.safetensors")}
    assert len(finished) == 6  # the first experiment (5 units) and the second's dense run
    monkeypatch.setattr(executors, "execute", original)
    time.sleep(0.01)
    _, outcome = run_sweep(sweep_file, None, [], tmp_path / "runs", Runtime(progress=False))
    assert not outcome.failed and len(outcome.done) == 10
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not trained again
    assert len(list(walk((tmp_path / "runs"), "final.safetensors"))) == 10


def test_failing_task_is_retried_and_reported(
    sweep_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []
    original = executors.execute

    def flaky(task, ctx, experiment):  # noqa: ANN001, ANN202
        if task.name == "r0/k0/level1" and ctx.spec.training.lr == 1e-3:
            attempts.append(task.name)
            raise RuntimeError("node lost")
        return original(task, ctx, experiment)

    monkeypatch.setattr(executors, "execute", flaky)
    finished, outcome = run_sweep(sweep_file, None, [], tmp_path / "runs", Runtime(progress=False), retries=2)
    assert len(attempts) == 3  # first try + 2 retries
    assert list(outcome.failed.values()) == ["RuntimeError: node lost"]
    failed = next(iter(outcome.failed))
    assert failed.endswith(":r0/k0/level1")
    assert sorted(k.split(":")[1] for k in outcome.skipped) == [
        "r0/k0/level1/random_prune/seed0",
        "r0/k0/level2",
        "r0/k0/level2/random_prune/seed0",
    ]
    assert len(outcome.done) == 1 + 5  # the failing experiment's dense run, and all of the other experiment
    other = next(e for e, point in finished if point["training.lr"] == 2e-3)
    assert len(list(walk(other.path, "final.safetensors"))) == 5
    # --status: the sweep's record says the same, task by task
    states = {t.key: t for t in status(sweep_file, None, [], tmp_path / "runs")}
    assert summary(list(states.values())) == "3 pending, 0 running, 6 done, 1 failed"
    assert states[failed].state == "failed" and states[failed].detail == "RuntimeError: node lost"
    assert {states[k].state for k in outcome.skipped} == {"pending"} and {states[k].state for k in outcome.done} == {
        "done"
    }
