"""The engine's events (lottery.events): the dispatcher, the trackers and the results source connected by `import
lottery` (lottery.wiring), and a tiny experiment's events end to end: one `on_evaluate` per evaluation with the rows
metrics.jsonl holds, one `on_level` per IMP level in the store, one `on_results` with results.json's content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_tiny
from lottery import events
from lottery.events import Evaluation, LevelTrained, ResultsWritten, subscribe, subscribed, unsubscribe
from lottery.experiments.run import results_of, write_results
from lottery.loggers.subscriber import TRACKERS
from lottery.results import source
from lottery.store import RunDir


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def on_evaluate(self, event: Evaluation) -> None:
        self.seen.append(("evaluate", event))

    def on_level(self, event: LevelTrained) -> None:
        self.seen.append(("level", event))

    def on_results(self, event: ResultsWritten) -> None:
        self.seen.append(("results", event))

    def of(self, kind: str) -> list:
        return [event for k, event in self.seen if k == kind]


def test_the_dispatcher_sends_each_event_to_the_method_of_its_name_in_subscription_order():
    calls: list[tuple[str, str]] = []

    class Levels:  # only one of the three methods: the others are not called
        def __init__(self, name: str) -> None:
            self.name = name

        def on_level(self, event: LevelTrained) -> None:
            calls.append((self.name, f"level {event.level}"))

    a, b = Levels("a"), Levels("b")
    subscribe(a)
    subscribe(a)  # once, however often
    try:
        with subscribed(b):
            events.emit(LevelTrained(Path("run"), 0, 0, 1))
            events.emit(Evaluation(Path("run"), {}, [], 10))
            events.emit(ResultsWritten(Path("experiment"), {}))
        events.emit(LevelTrained(Path("run"), 0, 0, 2))
    finally:
        unsubscribe(a)
    events.emit(LevelTrained(Path("run"), 0, 0, 3))
    assert calls == [("a", "level 1"), ("b", "level 1"), ("a", "level 2")]
    unsubscribe(a)  # not subscribed: nothing happens


def test_import_lottery_subscribes_the_trackers_and_connects_the_results_source(tmp_path: Path):
    assert any(s is TRACKERS for s in events._subscribers)
    assert source._provided == {"compute": results_of, "write": write_results}


def test_a_tiny_experiment_emits_its_evaluations_levels_and_results(store: Path):
    recorder = Recorder()
    with subscribed(recorder):
        experiment, results = run_tiny(store, "imp.levels=2", "imp.rewind=['0it']")
    levels = recorder.of("level")
    assert [(e.replicate, e.rewind_iteration, e.level) for e in levels] == [(0, 0, 1), (0, 0, 2)]
    imp_runs = {r["level"]: r["path"] for r in results["runs"] if r["kind"] == "imp"}
    assert [e.run for e in levels] == [(experiment.path / imp_runs[level]) for level in (1, 2)]
    evaluations = recorder.of("evaluate")
    assert len(evaluations) == 3 * 4  # dense, levels 1 and 2: iterations 0, 20, 40, 60
    for run in {e.run for e in evaluations}:
        emitted = [row for e in evaluations if e.run == run for row in e.rows]
        stored = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert emitted == stored
        assert {e.end for e in evaluations if e.run == run} == {60}
    dense = next(e for e in evaluations if e.tags.get("kind") == "dense")
    assert dense.tags["level"] == "0" and dense.log == () and dense.log_strict is False
    [written] = recorder.of("results")
    assert written.experiment == experiment.path
    assert written.results == results == RunDir(experiment.path).read_json("results.json")


def test_an_experiment_run_again_from_the_store_emits_its_levels_and_results_but_no_evaluation(store: Path):
    run_tiny(store, "imp.levels=1")
    recorder = Recorder()
    with subscribed(recorder):
        run_tiny(store, "imp.levels=1")
    assert recorder.of("evaluate") == []
    assert [e.level for e in recorder.of("level")] == [1]
    assert len(recorder.of("results")) == 1


def test_a_subscriber_that_fails_reaches_the_emitter():
    class Broken:
        def on_results(self, event: ResultsWritten) -> None:
            raise RuntimeError("broken subscriber")

    with subscribed(Broken()), pytest.raises(RuntimeError, match="broken subscriber"):
        events.emit(ResultsWritten(Path("experiment"), {}))
