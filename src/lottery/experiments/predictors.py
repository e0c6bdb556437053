"""Which stability measure predicts a ticket: across every (replicate, k, level, subnetwork) the stability
analysis computed, the Spearman rank correlation of each measure with the subnetwork's accuracy gap to the dense
network, with a seeded percentile bootstrap interval (resampling those observations with replacement).

An observation is one analysed subnetwork (IMP or a control) at one (replicate, k, level): its measures are the
means over its pairs of copies (`data_order.*`: copy vs copy; `pruning.*`: full network vs subnetwork, where
defined), and its gap is the dense run's final test accuracy (same replicate) minus the mean final test accuracy
of the subnetwork's copies, in percentage points. A positive correlation: the larger the measure, the further the
subnetwork falls short of the dense network. Plain numpy (no scipy).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from lottery.experiments.stability import DATA_ORDER_MEASURES, PRUNING_MEASURES

SEED = 0  # the bootstrap's seed (recorded in the output)
RESAMPLES = 1000
LEVEL = 0.95  # the interval's coverage
MIN_OBSERVATIONS = 3


def ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span (as Spearman's rho needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values), dtype=np.float64)
    ranked[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranked)
    return sums[inverse] / counts[inverse]


def spearman(x: Any, y: Any) -> float | None:
    """Spearman's rank correlation (Pearson's r of the tie-averaged ranks); None with fewer than 2 points or a
    constant variable (undefined)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return None
    rx, ry = ranks(x) - (len(x) + 1) / 2, ranks(y) - (len(y) + 1) / 2
    denominator = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    if denominator == 0:
        return None
    return float((rx * ry).sum() / denominator)


def bootstrap_interval(
    x: Any, y: Any, seed: int = SEED, resamples: int = RESAMPLES, level: float = LEVEL
) -> list[float] | None:
    """The percentile interval of Spearman's rho over `resamples` resamples of the (x, y) pairs with replacement
    (resamples where rho is undefined, e.g. all one point, are left out); None where none is defined."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(resamples):
        pick = rng.integers(0, len(x), len(x))
        rho = spearman(x[pick], y[pick])
        if rho is not None:
            rhos.append(rho)
    if not rhos:
        return None
    tail = (1 - level) / 2
    return [float(np.quantile(rhos, tail)), float(np.quantile(rhos, 1 - tail))]


def measure_names() -> list[str]:
    return [f"data_order.{m}" for m in DATA_ORDER_MEASURES] + [f"pruning.{m}" for m in PRUNING_MEASURES]


def observations(points: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per analysed subnetwork (not the dense network): keys, gap to dense (points) and measure means."""
    dense = {
        r["replicate"]: r["final_test_accuracy"]
        for r in runs
        if r["kind"] == "dense" and not r["diverged"] and r["final_test_accuracy"] is not None
    }
    rows = []
    for p in points:
        if p["kind"] == "dense" or p["diverged"] or p["replicate"] not in dense:
            continue
        accuracy = statistics.fmean(c["final_test_accuracy"] for c in p["copies"])
        values: dict[str, float | None] = {}
        for group in ("data_order", "pruning"):
            measures = DATA_ORDER_MEASURES if group == "data_order" else PRUNING_MEASURES
            for m in measures:
                stats = (p.get(group) or {}).get(m)
                values[f"{group}.{m}"] = None if stats is None else stats["mean"]
        rows.append(
            {
                "replicate": p["replicate"],
                "rewind_iteration": p["rewind_iteration"],
                "level": p["level"],
                "kind": p["kind"],
                "density": p["density"],
                "accuracy_gap": 100 * (dense[p["replicate"]] - accuracy),
                "measures": values,
            }
        )
    return rows


def correlate(rows: list[dict[str, Any]], seed: int = SEED, resamples: int = RESAMPLES) -> list[dict[str, Any]]:
    """Per measure: n, Spearman's rho with the gap, its bootstrap interval; sorted by |rho|, undefined last."""
    table = []
    for name in measure_names():
        pairs = [
            (row["measures"][name], row["accuracy_gap"])
            for row in rows
            if row["measures"].get(name) is not None and np.isfinite(row["measures"][name])
        ]
        x, y = [a for a, _ in pairs], [b for _, b in pairs]
        rho = spearman(x, y) if len(pairs) >= MIN_OBSERVATIONS else None
        interval = bootstrap_interval(x, y, seed, resamples) if rho is not None else None
        table.append({"measure": name, "n": len(pairs), "spearman": rho, "interval": interval})
    return sorted(table, key=lambda t: (t["spearman"] is None, -abs(t["spearman"] or 0.0), t["measure"]))


def predictors(points: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The `predictors` entry of results.json."""
    rows = observations(points, runs)
    return {
        "target": "accuracy_gap (dense final test accuracy - subnetwork copies' mean, percentage points)",
        "seed": SEED,
        "resamples": RESAMPLES,
        "level": LEVEL,
        "observations": rows,
        "table": correlate(rows),
    }
