"""What the engine and the training loop tell whoever listens, as they go: three events, one dispatcher.

- `on_evaluate(Evaluation)`: the training loop evaluated a run (`training/loop.py`, `Session.evaluate`): its metrics
  rows at one iteration, with the run's provenance tags.
- `on_level(LevelTrained)`: an IMP level of one replicate and rewind point is in the store (trained now, or found
  there) (`experiments/imp.py`, `run_level`).
- `on_results(ResultsWritten)`: an experiment's `results.json` was written by `lottery run`, a sweep or a rewind
  search (`experiments/driver.py`, `announce_results`).

The engine and the loop only `emit`; they never import what listens. The experiment trackers (`--log`:
`lottery.loggers.subscriber`) subscribe in `lottery.wiring`, which `import lottery` runs in every process (workers
included). Your own code subscribes an object with any of the three methods (`Subscriber`), e.g.

    class Progress(Subscriber):
        def on_level(self, event: LevelTrained) -> None:
            print(event.run, event.level)

    with subscribed(Progress()):
        run_experiment(...)

A subscriber only reads: whatever it does never changes results, artifacts or hashes. An exception it raises
reaches the emitter (trackers guard their own failures: `lottery.loggers.Guarded`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a training run."""

    run: Path  # the run's directory
    tags: Mapping[str, str]  # the run's provenance (`lottery.training.provenance.run_metadata`)
    rows: list[dict[str, Any]]  # the metrics rows of this evaluation (metrics.jsonl's new lines)
    end: int  # the iteration the run ends at
    log: tuple[str, ...] = ()  # the trackers chosen for this run (`Runtime.log`)
    log_strict: bool = False  # a tracker's failure stops the run (`Runtime.log_strict`)


@dataclass(frozen=True)
class LevelTrained:
    """An IMP level of one replicate at one rewind point, finished in the store."""

    run: Path  # the level's run directory
    replicate: int
    rewind_iteration: int
    level: int


@dataclass(frozen=True)
class ResultsWritten:
    """An experiment's results, just written (`results.json`)."""

    experiment: Path  # the experiment's directory
    results: dict[str, Any]  # results.json's content
    log: tuple[str, ...] = ()  # the trackers chosen for the run (`Runtime.log`)
    log_strict: bool = False


EVENTS = {Evaluation: "on_evaluate", LevelTrained: "on_level", ResultsWritten: "on_results"}  # event -> method


class Subscriber(Protocol):
    """Whatever listens to the events; each method is optional (these do nothing)."""

    def on_evaluate(self, event: Evaluation) -> None:
        return None

    def on_level(self, event: LevelTrained) -> None:
        return None

    def on_results(self, event: ResultsWritten) -> None:
        return None


_subscribers: list[Any] = []
S = TypeVar("S")


def subscribe(subscriber: S) -> S:
    """Send every later event to `subscriber` (once, however often it is subscribed); returns it."""
    if not any(s is subscriber for s in _subscribers):
        _subscribers.append(subscriber)
    return subscriber


def unsubscribe(subscriber: Any) -> None:
    """Stop sending events to `subscriber` (nothing happens if it is not subscribed)."""
    _subscribers[:] = [s for s in _subscribers if s is not subscriber]


@contextmanager
def subscribed(subscriber: S) -> Iterator[S]:
    """`with subscribed(s):` the events emitted inside the block reach `s`."""
    subscribe(subscriber)
    try:
        yield subscriber
    finally:
        unsubscribe(subscriber)


def emit(event: Evaluation | LevelTrained | ResultsWritten) -> None:
    """Hand `event` to the method of its name (`EVENTS`) of every subscriber that has one, in the order they
    subscribed: each its own copy, so that a subscriber that edits what it is given (an evaluation's rows, the
    results) changes neither the engine's metrics and results nor what the next subscriber reads."""
    name = EVENTS[type(event)]
    for subscriber in tuple(_subscribers):
        method = getattr(subscriber, name, None)
        if method is not None:
            method(copy.deepcopy(event))
