"""The summary run's curves over IMP levels for trackers (step = the level): density and level scalars per series,
the stability measures (error barriers, distances) per analysed point, and histograms of the weights each level
keeps (trackers that take histograms: TensorBoard).

Tags: `levels/<kind>[_k<k>]/percent_remaining`, `levels/<kind>[_k<k>]/level`; `stability/<kind>_k<k>/<measure>`
for every stability measure (lottery.measures; means over pairs and replicates), named by its tag: `barrier_test`,
`barrier_train`, ... for measures of copies only (data order), `<tag>_data_order` and `<tag>_pruning` (`l2_pruning`,
`angle_data_order`, ...) for measures of both; `kept_weights/<kind>_k<k>` (all prunable layers) and
`kept_weights/<kind>_k<k>/<layer>` (up to `MAX_LAYERS` layers) of replicate 0's final weights where its mask keeps
them. Steps are integers, so levels sort as numbers (0, 4, 10, 13), never as strings.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lottery.measures import present

MAX_LAYERS = 8


def measure_tags(points: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(tag, part, column) of every stability measure of these points (lottery.measures.present)."""
    return [(tag, part, m.column) for m in present(points) for tag, part in zip(m.tags(), m.parts(), strict=True)]


def _series(kind: str, k: int | None) -> str:
    return kind if k is None else f"{kind}_k{k}"


def level_scalars(results: dict[str, Any]) -> dict[int, dict[str, float]]:
    """level -> {tag: value}: percent remaining and the level of every (kind, rewind) series of the summary (the
    dense network is level 0 of each), and the stability measures of each analysed (kind, k, level)."""
    by_level: dict[int, dict[str, float]] = defaultdict(dict)
    rows = [r for r in results.get("summary", []) if r.get("level") is not None]
    series = {(r["kind"], r["rewind_iteration"]) for r in rows if r["kind"] != "dense"}
    for r in rows:
        targets = [_series(*s) for s in series] if r["kind"] == "dense" else [_series(r["kind"], r["rewind_iteration"])]
        for name in targets or ["dense"]:
            by_level[r["level"]][f"levels/{name}/percent_remaining"] = 100 * r["density"]
            by_level[r["level"]][f"levels/{name}/level"] = float(r["level"])
    samples: dict[tuple[int, str], list[float]] = defaultdict(list)
    points = (results.get("stability") or {}).get("points", [])
    tags = measure_tags(points)
    for p in points:
        if p.get("diverged") or p.get("target_density") is not None:
            continue
        for tag, part, measure in tags:
            summary = (p.get(part) or {}).get(measure)
            if isinstance(summary, dict) and summary.get("mean") is not None:
                samples[(p["level"], f"stability/{p['kind']}_k{p['rewind_iteration']}/{tag}")].append(summary["mean"])
    for (level, tag), values in samples.items():
        by_level[level][tag] = statistics.fmean(values)
    return dict(sorted(by_level.items()))


def _natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def kept_weights(experiment_dir: Path, results: dict[str, Any]) -> Iterator[tuple[str, int, torch.Tensor]]:
    """(tag, level, values) of the final weights each IMP level (and the dense network, level 0) keeps, replicate 0,
    over all masked layers and per layer; runs whose files are missing or fail verification are skipped."""
    from lottery.store import RunDir

    runs = [r for r in results.get("runs", []) if r["replicate"] == 0 and r["kind"] in ("dense", "imp")]
    runs = [r for r in runs if not r.get("diverged")]
    rewinds = sorted({r["rewind_iteration"] for r in runs if r["kind"] == "imp"}) or [None]
    for run in sorted(runs, key=lambda r: (r["level"], r["rewind_iteration"] or 0)):
        directory = RunDir(Path(experiment_dir) / run["path"])
        final, mask = directory.read_tensors("final.safetensors"), directory.read_tensors("mask.safetensors")
        if final is None or mask is None:
            continue
        order = [name for name in run.get("layer_densities") or {} if name in mask] or sorted(mask, key=_natural)
        kept = {name: final[name][mask[name].bool()].float() for name in order if name in final}
        if not kept:
            continue
        for k in rewinds if run["kind"] == "dense" else [run["rewind_iteration"]]:
            name = _series("imp", k)
            yield f"kept_weights/{name}", run["level"], torch.cat([v.flatten() for v in kept.values()])
            for layer in list(kept)[:MAX_LAYERS]:
                yield f"kept_weights/{name}/{layer}", run["level"], kept[layer]
