"""Concurrency: one lock per experiment directory. A second process on the same experiment waits for the
first and then reuses its results (or, with --no-wait, exits with code 2 and a clear message); two
processes started together never corrupt the experiment; different experiments in one store run at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lottery.cli.main import main
from lottery.errors import UserError
from lottery.spec import resolve, spec_hash
from lottery.store import exclusive
from reliability_helpers import TINY, Started, cli_args, one_error_line, run_cli, run_subprocess, trained, tree

OTHER = ("training.init_seed=1",)  # a different experiment


def experiment_path(store: Path, *overrides: str) -> Path:
    spec, _ = resolve(preset="lenet_300_100", overrides=[*TINY, *overrides])
    return store / spec_hash(spec)


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    assert main(cli_args(store)) == 0
    return store


def test_second_process_waits_for_the_lock_then_reuses_the_results(finished: Path) -> None:
    before = tree(finished)
    with exclusive(experiment_path(finished)):  # this test process plays the first one, still running
        second = Started(cli_args(finished))
        second.wait_for("is in use by another lottery process; waiting for it")
        time.sleep(1.0)
        assert second.proc.poll() is None  # still waiting
    assert second.finish() == 0, second.stderr()
    assert not trained(second.stderr())  # everything it needed was already in the store
    assert "dense" in second.out and "100.00" in second.out  # and it printed the table
    assert tree(finished) == before  # results rewritten byte for byte; nothing else touched


def test_no_wait_exits_with_code_2_and_a_clear_message(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(finished)
    experiment = experiment_path(finished)
    with exclusive(experiment):
        result = run_subprocess(cli_args(finished, extra=("--no-wait",)))
        assert result.returncode == 2
        line = one_error_line(result.stderr)
        assert f"{experiment} is in use by another lottery process" in line and "without --no-wait" in line
        assert result.stdout == ""
        # The lock is one per experiment: in this process too, a second holder is refused.
        with pytest.raises(UserError, match="in use by another lottery process"), exclusive(experiment, wait=False):
            pass
    assert tree(finished) == before


def test_different_experiment_in_the_same_store_is_not_blocked(finished: Path) -> None:
    with exclusive(experiment_path(finished)):
        result = run_subprocess(cli_args(finished, *OTHER, extra=("--no-wait",)))
    assert result.returncode == 0, result.stderr
    assert trained(result.stderr)
    assert experiment_path(finished, *OTHER).is_dir()


def test_two_processes_started_together_on_one_experiment(tmp_path: Path) -> None:
    store = tmp_path / "store"
    argv = cli_args(store, "imp.levels=1", "training.training_steps=150it")
    first, second = Started(argv), Started(argv)
    assert first.finish() == 0 and second.finish() == 0, first.stderr() + second.stderr()
    # Exactly one of them trained; the other waited for it (or came after it) and trained nothing.
    assert sorted([trained(first.stderr()), trained(second.stderr())]) == [False, True]
    assert first.out == second.out and "imp" in first.out
    verify = run_subprocess(["verify", str(store)])
    assert verify.returncode == 0 and verify.stdout.strip().endswith(" 0 problem(s)"), verify.stdout


def test_two_experiments_in_one_store_run_at_the_same_time(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # long enough (seconds) that the two overlap even when one process starts late on a loaded machine
    steps = ("training.training_steps=4000it", "training.eval_every=1000it")
    first, second = Started(cli_args(store, *steps)), Started(cli_args(store, *steps, *OTHER))
    started = [first.wait_for(" iteration 0/4000"), second.wait_for(" iteration 0/4000")]
    assert first.finish() == 0 and second.finish() == 0, first.stderr() + second.stderr()
    ended = [first.wait_for("iteration 4000/4000"), second.wait_for("iteration 4000/4000")]
    assert max(started) < min(ended)  # both were training at the same time: neither waited for the other
    assert "waiting" not in first.stderr() + second.stderr()
    assert len([p for p in store.iterdir() if p.is_dir() and p.name != "networks"]) == 2
    verify = run_subprocess(["verify", str(store)])
    assert verify.returncode == 0 and verify.stdout.strip().endswith(" 0 problem(s)"), verify.stdout


SWEEP = """preset = "lenet_300_100"
[dataset]
name = "synthetic"
validation_size = 200
[model]
name = "lenet_40_20"
[training]
batch_size = 50
training_steps = "60it"
eval_every = "20it"
[sweep.training]
init_seed = [0, 1]
"""


def test_a_sweep_holds_its_experiments_locks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lottery sweep` locks every experiment it works on, like `lottery run`: a run of one of them with
    --no-wait is refused while the sweep trains, and a sweep with --no-wait is refused while another process
    holds one of its experiments."""
    from lottery.experiments import executors

    store, sweep = tmp_path / "store", tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    during: list[tuple[int, str, str]] = []
    real = executors.run_local

    def run_local(*args: object, **kwargs: object) -> executors.Outcome:
        during.append(run_cli(cli_args(store, extra=("--no-wait",)), capsys))  # the same experiment, meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(executors, "run_local", run_local)
    assert main(["sweep", str(sweep), "--out", str(store), "--progress", "log"]) == 0
    ((code, out, err),) = during
    assert code == 2 and out == ""
    assert f"{experiment_path(store)} is in use by another lottery process" in one_error_line(err)

    before = tree(store)
    with exclusive(experiment_path(store, *OTHER)):
        code, out, err = run_cli(["sweep", str(sweep), "--out", str(store), "--no-wait"], capsys)
    assert code == 2 and "is in use by another lottery process" in one_error_line(err)
    assert tree(store) == before
