"""Whole-run progress: "network i of N", the elapsed time and the ETA of the experiment, shown on each network's
progress bar and in each log line (`--progress bar|log`).

The CLI opens `tracking(experiment)` around a run; N is counted when the first network starts (the experiment's
view is bound by then): the networks the experiment links to that are not finished yet (no `summary.json`), so a
resumed run counts only what is left. The training loop (`training/loop.py`) reports each network (or stacked
group of networks) as it starts, advances and finishes; outside `tracking` nothing is shown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Run:
    experiment: Path
    began: float
    total: int | None = None
    started: int = 0  # networks started so far
    finished: int = 0
    current: int = 0  # networks training now (a stacked group trains several)
    fraction: float = 0.0  # of the current networks' iterations done


_run: _Run | None = None


def unfinished(experiment: Path) -> int:
    """The networks the experiment links to that have no summary.json yet (each network counted once)."""
    from lottery.store import layout

    store = layout.store_of(Path(experiment))
    targets = set(layout.links(Path(experiment)).values())
    return sum(not (store / target / "summary.json").is_file() for target in targets)


@contextmanager
def tracking(experiment: Path) -> Iterator[None]:
    """Show whole-run progress for the networks trained inside the block."""
    global _run
    previous, _run = _run, _Run(Path(experiment), time.perf_counter())
    try:
        yield
    finally:
        _run = previous


def started(count: int = 1) -> None:
    if _run is None:
        return
    if _run.total is None and os.path.isdir(_run.experiment):
        _run.total = unfinished(_run.experiment)
    _run.started += count
    _run.current, _run.fraction = count, 0.0
    if _run.total is not None and _run.started > _run.total:  # a network the view did not list (e.g. a prefix run)
        _run.total = _run.started


def advance(fraction: float) -> None:
    if _run is not None:
        _run.fraction = min(1.0, max(0.0, fraction))


def finished(count: int = 1) -> None:
    if _run is not None:
        _run.finished += count
        _run.current, _run.fraction = 0, 0.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def prefix() -> str:
    """'network 3 of 13, elapsed 0:42, ETA 2:10' (the first network of a stacked group names the group: 'networks
    3-5 of 13'); '' outside `tracking`."""
    if _run is None or _run.total is None or _run.started == 0:
        return ""
    first = _run.finished + 1 if _run.current else _run.started
    last = _run.finished + _run.current if _run.current else _run.started
    which = f"network {first} of {_run.total}" if first == last else f"networks {first}-{last} of {_run.total}"
    elapsed = time.perf_counter() - _run.began
    done = _run.finished + _run.current * _run.fraction
    if done > 0:
        eta = f"ETA {_clock(elapsed * max(0.0, _run.total - done) / done)}"
    else:
        eta = "ETA ?"
    return f"{which}, elapsed {_clock(elapsed)}, {eta}"
