"""Figures for `[dynamic]` runs (experiments/dynamic.py): accuracy against the weights remaining for IMP, the
dynamic methods and their rewound masks on one figure, and each method's mask movement over training (the
fraction of its active weights that each update changes: grown for RigL and SET, pruned for GMP)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from lottery.reports.figures import Figures, dense_reference, register
from lottery.reports.plot import (
    Series,
    draw_reference,
    draw_series,
    legend_below,
    new_figure,
    remaining_axis,
    stats_point,
)

METHODS = ("rigl", "set", "gmp")
COLORS = {"rigl": colormaps["tab10"](3), "set": colormaps["tab10"](2), "gmp": colormaps["tab10"](1)}
IMP_COLOR = colormaps["tab10"](0)


def _method(kind: str) -> str | None:
    base = kind[: -len("_rewound")] if kind.endswith("_rewound") else kind
    return base if base in METHODS else None


def accuracy_figure(summary: list[dict[str, Any]], metric: str = "final_test_accuracy") -> Figure | None:
    """IMP (per rewind point), every method (solid) and its rewound mask (dashed), mean with min/max over replicates
    and seeds."""
    dynamic = [r for r in summary if _method(r["kind"]) is not None and r.get("target_density") is not None]
    if not dynamic:
        return None
    series = []
    imp = [r for r in summary if r["kind"] == "imp"]
    for k in sorted({r["rewind_iteration"] for r in imp}):
        points = [stats_point(100 * r["density"], r[metric], 100.0) for r in imp if r["rewind_iteration"] == k]
        series.append(Series(f"IMP, k={k}", points, color=IMP_COLOR, linestyle="-", marker="D"))
    for kind in dict.fromkeys(r["kind"] for r in dynamic):
        rewound = kind != _method(kind)
        for k in sorted({r["rewind_iteration"] or 0 for r in dynamic if r["kind"] == kind}):
            rows = [r for r in dynamic if r["kind"] == kind and (r["rewind_iteration"] or 0) == k]
            points = [stats_point(100 * r["density"], r[metric], 100.0) for r in rows]
            label = f"{kind}, k={k}" if rewound else kind
            color = COLORS[_method(kind) or "rigl"]
            series.append(
                Series(label, points, color=color, linestyle="--" if rewound else "-", marker="s" if rewound else "o")
            )
    figure, (ax,) = new_figure(7.4, 5.0)
    reference = dense_reference(summary, metric, 100.0)
    if reference is not None:
        draw_reference(ax, reference)
    draw_series(ax, series)
    remaining_axis(ax, [100 * r["density"] for r in summary if r["kind"] != "dense"])
    ax.set_ylabel(metric.replace("_", " ") + " (%)")
    ax.set_title(
        "Dynamic sparsity vs. IMP (mean over replicates and seeds; error bars: min/max)\n"
        "circles, solid: trained sparse with the method · squares, dashed: its final mask retrained from W_k",
        fontsize=10,
    )
    legend_below(figure, [ax], ncol=4)
    return figure


def movement_figure(runs: list[dict[str, Any]]) -> Figure | None:
    """The fraction of the active weights each update changes (grown; GMP: pruned), per method and target density
    (mean over replicates and seeds)."""
    moving = [r for r in runs if r.get("movement")]
    if not moving:
        return None
    groups: dict[tuple[str, float], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in moving:
        for update in run["movement"]:
            groups[(run["kind"], run["target_density"])][update["step"]].append(update["moved"])
    densities = sorted({d for _, d in groups}, reverse=True)
    figure, (ax,) = new_figure(7.4, 4.6)
    for (kind, density), by_step in groups.items():
        steps = sorted(by_step)
        shade = 0.55 + 0.45 * densities.index(density) / max(1, len(densities) - 1)
        color = tuple(c * shade for c in COLORS.get(kind, (0.4, 0.4, 0.4, 1.0))[:3])
        means = [100 * statistics.fmean(by_step[s]) for s in steps]
        ax.plot(steps, means, color=color, marker="o", markersize=3.5, label=f"{kind}, {100 * density:.3g}%")
    ax.set_xlabel("iteration")
    ax.set_ylabel("active weights changed (%)")
    ax.set_title(
        "Mask movement per update: weights grown (RigL, SET) or pruned (GMP), of those active (mean)", fontsize=10
    )
    ax.grid(True, alpha=0.3)
    legend_below(figure, [ax], ncol=3)
    return figure


@register
def dynamic_figures(results: dict[str, Any], experiment_dir: Path) -> Figures:
    made = [
        ("dynamic_vs_remaining", accuracy_figure(results.get("summary") or [])),
        ("dynamic_mask_movement", movement_figure(results.get("dynamic") or [])),
    ]
    return [(name, figure) for name, figure in made if figure is not None]
