"""Read an experiment directory for reporting: its spec, its preset and `results.json` (regenerated from
the store when missing), plus labels that tell several experiments apart by their differing settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lottery.errors import UserError
from lottery.results import source
from lottery.spec import ExperimentSpec, spec_hash, to_dict
from lottery.store import RunDir, load_spec, locked

MAX_LABEL = 60  # longer labels of differing settings give way to field names only, then to the hash
MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError)  # a results.json of the wrong shape


@dataclass
class Experiment:
    path: Path
    spec: ExperimentSpec
    preset: str | None
    results: dict[str, Any]
    label: str = ""

    @property
    def hash(self) -> str:
        return spec_hash(self.spec)


def load_experiment(path: Path) -> Experiment:
    """The experiment at `path`; UserError (one line) when it is not an experiment directory."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory (expected an experiment directory holding spec.json)")
    spec, preset = load_spec(path)
    run = RunDir(path)
    try:
        results = run.read_json("results.json")
    except ValueError as error:  # checksummed (or unlisted) but not JSON: kept for the user to look at
        raise _malformed(path, error) from None
    if not isinstance(results, dict) or "runs" not in results or "summary" not in results:
        results = _regenerate(run, spec)
    return Experiment(path, spec, preset, results, label=spec_hash(spec))


def _malformed(path: Path, error: Exception) -> UserError:
    return UserError(
        f"{Path(path) / 'results.json'} is malformed ({type(error).__name__}: {error}); delete it and run "
        "'lottery report' again to rebuild it from the store"
    )


def _as_stored(experiment: Experiment) -> bool:
    """Whether `experiment.results` is what the store gives now (then a failure to read it is not the file's)."""
    try:
        fresh = source.compute(RunDir(experiment.path), experiment.spec)
    except Exception:  # noqa: BLE001  (a store that cannot be read either: the file is not to blame alone)
        return False
    return json.dumps(fresh, sort_keys=True) == json.dumps(experiment.results, sort_keys=True)


@contextmanager
def reading(experiments: list[Experiment]) -> Iterator[None]:
    """Turn the error of code reading `results.json` of the wrong shape (checksummed, yet edited or written by other
    code: a missing key, a string where a number belongs) into one line naming the file. An error on a file that
    holds exactly what the store gives is a bug, and is raised as it is."""
    try:
        yield
    except MALFORMED as error:
        for experiment in experiments:
            if not _as_stored(experiment):
                raise _malformed(experiment.path, error) from None
        raise


def _regenerate(run: RunDir, spec: ExperimentSpec) -> dict[str, Any]:
    """results.json rebuilt from the store: written under the experiment's lock when it is free; when another
    process holds it (an experiment still running) or the store is read-only, computed without writing."""
    with ExitStack() as stack:
        try:
            stack.enter_context(locked(run.path, wait=False))
        except UserError:
            return source.compute(run, spec)
        return source.write(run, spec)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and prefix == "":
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def differing_settings(specs: list[ExperimentSpec]) -> list[dict[str, Any]]:
    """For each spec, the settings (`group.field` -> value) whose values are not the same in all specs."""
    flat = [_flatten(to_dict(spec)) for spec in specs]
    keys = [k for k in flat[0] if any(json.dumps(f.get(k)) != json.dumps(flat[0].get(k)) for f in flat)]
    return [{k: f.get(k) for k in keys} for f in flat]


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def label_experiments(experiments: list[Experiment], labels: list[str] | None = None) -> None:
    """Set each experiment's label: the given ones, else its differing settings, else its hash."""
    if labels:
        if len(labels) != len(experiments):
            raise UserError(f"got {len(labels)} label(s) for {len(experiments)} experiments; give one per experiment")
        for experiment, label in zip(experiments, labels):
            experiment.label = label
        return
    diffs = differing_settings([e.spec for e in experiments])
    full = [", ".join(f"{k}={_value(v)}" for k, v in diff.items()) for diff in diffs]
    short = [", ".join(f"{k.rpartition('.')[2]}={_value(v)}" for k, v in diff.items()) for diff in diffs]
    chosen = full if all(len(text) <= MAX_LABEL for text in full) else short  # one style for all
    for experiment, text in zip(experiments, chosen):
        experiment.label = text if text and len(text) <= MAX_LABEL else experiment.hash
