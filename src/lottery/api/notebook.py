"""`lottery.load_experiment(dir)`: an experiment's tables as pandas DataFrames, for notebooks.

pandas is the optional extra `pandas` (`pip install '.[pandas]'`), imported only when this is called.

    exp = lottery.load_experiment("runs/3f2a...")
    exp.results                       # one row per trained network: kind, level, density, accuracies, ...
    exp.summary                       # mean / min / max over replicates and control seeds, per (kind, rewind, level)
    exp.stability                     # one row per compared pair (stability.csv): distances, barriers, stable
    exp.mask_sources                  # the [masks] runs: kind, target_density, density, accuracies, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lottery.errors import UserError

SUMMARY_STATS = ("mean", "min", "max")


@dataclass
class ExperimentTables:
    """An experiment's tables (pandas DataFrames), its settings (`spec`: the resolved spec as a dict), its preset,
    hash and directory."""

    path: Path
    hash: str
    preset: str | None
    spec: dict[str, Any]
    results: Any
    summary: Any
    stability: Any
    mask_sources: Any


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise UserError(
            "load_experiment needs pandas, the optional extra 'pandas': pip install 'lottery[pandas]' "
            "(or pip install pandas)"
        ) from None
    return pandas


def _flat_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row with each metric's {mean, min, max} spread into `<metric>_mean`, `_min`, `_max` columns."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dict) and set(value) == set(SUMMARY_STATS):
            out.update({f"{key}_{stat}": value[stat] for stat in SUMMARY_STATS})
        elif value is None and key in ("final_test_accuracy", "early_stop_test_accuracy", "early_stop_iteration"):
            out.update({f"{key}_{stat}": None for stat in SUMMARY_STATS})
        else:
            out[key] = value
    return out


def load_experiment(path: str | Path) -> ExperimentTables:
    """The experiment at `path` (made by `lottery run` or by `lottery.imp(..., directory=)`) as DataFrames:
    `results` (a row per trained network: dense, IMP levels, controls; `layer_densities` left out), `summary`
    (aggregated; each metric as `<metric>_mean`, `_min`, `_max`, with `runs`, the number of replicates and seeds it
    is over), `stability` (a row per compared pair; empty without a stability analysis) and `mask_sources` (the
    [masks] runs; empty without them). Reads `results.json`, regenerating it from the store when missing, like
    `lottery report`."""
    pandas = _pandas()
    from lottery.measures import pair_fields
    from lottery.reports.load import load_experiment as load
    from lottery.results.pairs import pair_rows
    from lottery.spec import to_dict

    experiment = load(Path(path))
    results = experiment.results
    runs = [{k: v for k, v in row.items() if k != "layer_densities"} for row in results["runs"]]
    imp_runs = [row for row in runs if row.get("target_density") is None]
    mask_runs = [row for row in runs if row.get("target_density") is not None]
    points = (results.get("stability") or {}).get("points", [])
    return ExperimentTables(
        path=Path(path),
        hash=experiment.hash,
        preset=experiment.preset,
        spec=to_dict(experiment.spec),
        results=pandas.DataFrame(imp_runs),
        summary=pandas.DataFrame([_flat_summary(row) for row in results["summary"]]),
        stability=pandas.DataFrame(pair_rows(points), columns=None if points else pair_fields(points)),
        mask_sources=pandas.DataFrame(mask_runs),
    )
