"""An experiment's results as the engine computes them from the store, for readers that find `results.json`
missing or stale (`lottery report`, `show`, `load_experiment`). The engine provides the two functions
(`experiments/run.py`'s `results_of` and `write_results`, connected in `lottery.wiring`, which `import lottery`
runs), so that a reader asks for results without importing the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lottery.spec import ExperimentSpec
    from lottery.store import RunDir

Source = Callable[["RunDir", "ExperimentSpec"], dict[str, Any]]
_provided: dict[str, Source] = {}


def provide(compute: Source, write: Source) -> None:
    """Set how results are computed (`compute`: nothing is written) and written (`write`: results.json and its
    tables; the caller holds the experiment's lock)."""
    _provided.update(compute=compute, write=write)


def _get(name: str) -> Source:
    if name not in _provided:
        raise RuntimeError("no engine provides results (lottery.wiring connects it when lottery is imported)")
    return _provided[name]


def compute(experiment: RunDir, spec: ExperimentSpec) -> dict[str, Any]:
    """results.json's content, from what the store holds (nothing is written)."""
    return _get("compute")(experiment, spec)


def write(experiment: RunDir, spec: ExperimentSpec) -> dict[str, Any]:
    """Write results.json, results.csv (and stability.csv) from the store and return the results; the caller holds
    the experiment's lock (`lottery.store.locked`)."""
    return _get("write")(experiment, spec)
