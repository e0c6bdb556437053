"""Collect every trained unit of an experiment into `results.json`, `results.csv` and a table."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from typing import Any

from lottery.results import conclusions
from lottery.store import RunDir

METRICS = ("final_test_accuracy", "early_stop_test_accuracy", "early_stop_iteration", "train_seconds")
CSV_FIELDS = (
    "kind",
    "replicate",
    "rewind_iteration",
    "level",
    "seed",
    "density",
    *METRICS,
    "diverged",
    "path",
    "target_density",
)


def run_row(experiment: RunDir, run: RunDir, **keys: Any) -> dict[str, Any] | None:
    summary = run.read_json("summary.json")
    sparsity = run.read_json("sparsity.json")
    if summary is None or sparsity is None:
        return None
    layers = {name: layer["density"] for name, layer in sparsity["layers"].items()}
    return {
        **keys,
        "path": str(run.path.relative_to(experiment.path)),
        "density": sparsity["density"],
        "layer_densities": layers,
        **{m: summary.get(m) for m in METRICS},
        "diverged": summary["diverged"],
        "diverged_at": summary.get("diverged_at"),
    }


def stats(values: list[float]) -> dict[str, float] | None:
    """Mean, min and max of the values that are not None (None when there are none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def matching(members: list[dict[str, Any]], dense: dict[int, float], tolerance: float) -> dict[str, Any]:
    """Whether these runs (one group of `aggregate`) are matching: `conclusions.matching_decision` of each
    replicate's final test accuracies (its control seeds' too) minus that replicate's dense accuracy, in points;
    the unit is the replicate (with one replicate: the runs, i.e. the control seeds; an IMP level has one)."""
    gaps: dict[int, list[float]] = defaultdict(list)
    for row in members:
        if not row["diverged"] and row["final_test_accuracy"] is not None and row["replicate"] in dense:
            gaps[row["replicate"]].append(100 * (row["final_test_accuracy"] - dense[row["replicate"]]))
    return conclusions.matching_decision([gaps[r] for r in sorted(gaps)], tolerance)


def aggregate(rows: list[dict[str, Any]], tolerance: float = conclusions.TOLERANCE) -> list[dict[str, Any]]:
    """Mean, min and max over replicates and control seeds, per (kind, rewind, level), and per target density
    for mask sources (whose level is None); for every group but the dense run, `matching` (within `tolerance`
    points of dense, decided on an interval over replicates: `matching`)."""
    dense = {
        row["replicate"]: row["final_test_accuracy"]
        for row in rows
        if row["kind"] == "dense" and not row["diverged"] and row["final_test_accuracy"] is not None
    }
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["kind"], row["rewind_iteration"], row["level"], row.get("target_density"))].append(row)
    out = []
    for (kind, rewind, level, target), members in groups.items():
        out.append(
            {
                "kind": kind,
                "rewind_iteration": rewind,
                "level": level,
                **({"target_density": target} if target is not None else {}),
                "density": statistics.fmean(r["density"] for r in members),
                "runs": len(members),
                "diverged": sum(r["diverged"] for r in members),
                **{m: stats([r[m] for r in members if not r["diverged"]]) for m in METRICS},
                **({} if kind == "dense" else {"matching": matching(members, dense, tolerance)}),
            }
        )
    order = {"dense": 0, "imp": 1}

    def key(r: dict[str, Any]) -> tuple:
        if r["level"] is None:  # mask sources after IMP and its controls, densest first
            return (1, 0, 0, -r["target_density"], 2, r["kind"])
        return (0, r["rewind_iteration"] or 0, r["level"], 0.0, order.get(r["kind"], 2), r["kind"])

    return sorted(out, key=key)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _pct(stats: dict[str, float] | None, scale: float = 100.0) -> str:
    if stats is None:
        return "-"
    if stats["min"] == stats["max"]:
        return f"{scale * stats['mean']:.2f}"
    return f"{scale * stats['mean']:.2f} [{scale * stats['min']:.2f}, {scale * stats['max']:.2f}]"


def table(summary: list[dict[str, Any]]) -> str:
    """The aggregated results as an aligned text table."""
    header = (
        "kind",
        "rewind",
        "level",
        "% remaining",
        "test acc %",
        "early-stop it",
        "early-stop test acc %",
        "runs",
        "vs dense: gap [95%], decision",
    )
    lines = [header]
    for row in summary:
        iteration = row["early_stop_iteration"]
        lines.append(
            (
                row["kind"],
                "-" if row["rewind_iteration"] is None else str(row["rewind_iteration"]),
                "-" if row["level"] is None else str(row["level"]),
                f"{100 * row['density']:.2f}",
                "diverged" if row["diverged"] == row["runs"] else _pct(row["final_test_accuracy"]),
                "-" if iteration is None else f"{iteration['mean']:.0f}",
                _pct(row["early_stop_test_accuracy"]),
                str(row["runs"]),
                matching_cell(row.get("matching")),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def matching_cell(decision: dict[str, Any] | None) -> str:
    """'-0.12 [-0.50, 0.26] undecided': the gap to dense (points) with its interval and the decision."""
    if decision is None or decision["gap_mean"] is None:
        return "-"
    interval = decision["gap_interval"]
    bounds = "" if interval is None else f" [{interval[0]:+.2f}, {interval[1]:+.2f}]"
    return f"{decision['gap_mean']:+.2f}{bounds} {decision['decision']}"
