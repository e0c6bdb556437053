"""Which stability measure predicts a ticket: across every (replicate, k, level >= 1, subnetwork: IMP and its
controls) the stability analysis computed, the Spearman rank correlation of each measure with the subnetwork's
accuracy gap to the dense network, and the partial Spearman correlation controlling for density (the gap and most
measures move with density: the partial one says what a measure adds beyond it), each with a seeded percentile
cluster-bootstrap interval. The observations of one replicate share its dense run, its IMP chain and its seeds,
so they are not independent: the bootstrap resamples replicates (clusters) with replacement and takes every
observation of each drawn replicate (`resampling_unit`: "replicate"); with one replicate there is no interval.
[masks] subjects (analysed at level 0) are left out.

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

from lottery.measures import PARTS, registered

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


def partial_spearman(x: Any, y: Any, z: Any) -> float | None:
    """Spearman's correlation of x and y controlling for z: the partial correlation of the ranks,
    (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)); None where undefined (|r_xz| or |r_yz| = 1, or a
    constant variable)."""
    rxy, rxz, ryz = spearman(x, y), spearman(x, z), spearman(y, z)
    if rxy is None or rxz is None or ryz is None:
        return None
    denominator = (1 - rxz * rxz) * (1 - ryz * ryz)
    if denominator <= 1e-12:
        return None
    return float((rxy - rxz * ryz) / np.sqrt(denominator))


def cluster_bootstrap(
    statistic: Any,
    clusters: Any,
    columns: list[Any],
    seed: int = SEED,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> list[float] | None:
    """The percentile interval of `statistic(*columns)` over `resamples` cluster resamples: draw as many clusters
    as there are (with replacement), take every row of each drawn cluster (twice if drawn twice). Resamples where
    the statistic is undefined (None) are left out; None with fewer than 2 clusters or no defined resample."""
    clusters = np.asarray(clusters)
    columns = [np.asarray(c, dtype=np.float64) for c in columns]
    names = sorted(set(clusters.tolist()))
    if len(names) < 2:
        return None
    rows = [np.flatnonzero(clusters == name) for name in names]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        value = statistic(*(c[pick] for c in columns))
        if value is not None:
            values.append(value)
    if not values:
        return None
    tail = (1 - level) / 2
    return [float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))]


def measure_names() -> list[str]:
    return [f"{part}.{m.column}" for part in PARTS for m in registered(part)]  # every measure (lottery.measures)


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
        if not p.get("level") or p.get("target_density") is not None:
            continue  # only IMP and its controls at levels >= 1 (a [masks] subject is analysed at level 0)
        accuracy = statistics.fmean(c["final_test_accuracy"] for c in p["copies"])
        values: dict[str, float | None] = {}
        for group in PARTS:
            for m in registered(group):
                stats = (p.get(group) or {}).get(m.column)
                values[f"{group}.{m.column}"] = None if stats is None else stats["mean"]
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
    """Per measure: n (observations where it is defined), clusters (replicates among them), Spearman's rho with the
    gap and its partial rho controlling for density, each with its cluster-bootstrap interval. Sorted by n (a
    measure is only ranked against measures over the same observations: `pruning.*` is undefined for random
    reinitialization), then by |partial rho|, undefined last."""
    table = []
    for name in measure_names():
        kept = [row for row in rows if row["measures"].get(name) is not None and np.isfinite(row["measures"][name])]
        x = [row["measures"][name] for row in kept]
        y = [row["accuracy_gap"] for row in kept]
        z = [row["density"] for row in kept]
        clusters = [row["replicate"] for row in kept]
        enough = len(kept) >= MIN_OBSERVATIONS
        boot = {"seed": seed, "resamples": resamples}
        rho = spearman(x, y) if enough else None
        partial = partial_spearman(x, y, z) if enough else None
        table.append(
            {
                "measure": name,
                "n": len(kept),
                "clusters": len(set(clusters)),
                "spearman": rho,
                "interval": None if rho is None else cluster_bootstrap(spearman, clusters, [x, y], **boot),
                "partial_spearman": partial,
                "partial_interval": (
                    None if partial is None else cluster_bootstrap(partial_spearman, clusters, [x, y, z], **boot)
                ),
            }
        )

    def order(t: dict[str, Any]) -> tuple:
        key = t["partial_spearman"] if t["partial_spearman"] is not None else t["spearman"]
        return (-t["n"], key is None, -abs(key or 0.0), t["measure"])

    return sorted(table, key=order)


def predictors(points: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The `predictors` entry of results.json."""
    rows = observations(points, runs)
    return {
        "target": "accuracy_gap (dense final test accuracy - subnetwork copies' mean, percentage points)",
        "subjects": "IMP and its controls at levels >= 1 (every replicate and rewind point)",
        "partial_for": "density",
        "resampling_unit": "replicate",
        "seed": SEED,
        "resamples": RESAMPLES,
        "level": LEVEL,
        "observations": rows,
        "table": correlate(rows),
    }
