"""Stability pairs: one row per compared pair of the stability
points in `results.json` (`stability.csv`, the trackers' and the report's tables, `load_experiment`'s table)."""

from __future__ import annotations

from typing import Any


def pair_rows(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per compared pair (for stability.csv): measure 'pruning' (full vs subnetwork) or 'data_order'."""
    rows = []
    for p in points:
        if p["diverged"]:
            continue
        keys = {k: p[k] for k in ("replicate", "rewind_iteration", "level", "kind", "density")}
        keys["target_density"] = p.get("target_density")  # a [masks] subject's; None (an empty cell) for the others
        for pair in (p["pruning"] or {"pairs": []})["pairs"]:
            rows.append({**keys, "measure": "pruning", "a": pair["full"], "b": pair["subnetwork"], **pair})
        for pair in p["data_order"]["pairs"]:
            rows.append({**keys, "measure": "data_order", **pair})
    return rows
