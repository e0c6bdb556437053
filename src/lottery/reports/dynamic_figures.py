"""Figures for `[dynamic]` runs (experiments/dynamic.py): accuracy against the weights remaining for IMP, the
dynamic methods and their rewound masks on one figure, and each method's mask movement over training (the
fraction of its active weights that each update changes: grown for RigL and SET, pruned for GMP); with
`stability.dynamic` (experiments/dynamic_stability.py), the error barrier and the Jaccard overlap of the final masks
between copies against k, beside IMP and the dense network, and a table of both with their intervals."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from lottery.reports.figures import Figures, dense_reference, register
from lottery.reports.html import escaped, register_section
from lottery.reports.plot import (
    Series,
    draw_reference,
    draw_series,
    legend_below,
    new_figure,
    remaining_axis,
    stats_point,
)
from lottery.results.conclusions import label

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


def _bounds(mean: float, interval: list[float] | None) -> tuple[float, float, float]:
    return (mean, mean, mean) if interval is None else (mean, interval[0], interval[1])


def stability_figure(stability: dict[str, Any]) -> Figure | None:
    """`stability.dynamic`: the test error barrier between copies and the Jaccard overlap of their final masks
    against k, per method and target density (mean and 95% interval over replicates), beside IMP's levels and the
    dense network (their barrier's decision: the same estimator)."""
    from lottery.reports.stability_figures import draw

    rows = [row for row in stability.get("dynamic") or [] if row["barrier_mean"] is not None]
    if not rows:
        return None
    rewinds = sorted({row["rewind_iteration"] for row in rows})
    targets = sorted({row["target_density"] for row in rows}, reverse=True)
    figure, axes = new_figure(12.0, 5.2, ncols=2)
    barriers, overlaps = [], []
    for kind in dict.fromkeys(row["kind"] for row in rows):
        for target in targets:
            members = sorted(
                (r for r in rows if r["kind"] == kind and r["target_density"] == target),
                key=lambda r: r["rewind_iteration"],
            )
            if not members:
                continue
            shade = 1.0 - 0.45 * targets.index(target) / max(1, len(targets) - 1)
            color = tuple(c * shade for c in COLORS.get(kind, (0.4, 0.4, 0.4, 1.0))[:3])
            style = {"color": color, "linestyle": "-", "marker": "o"}
            text = f"{kind}, {100 * target:.3g}%"
            barriers.append(
                (
                    text,
                    style,
                    [(r["rewind_iteration"], *_bounds(r["barrier_mean"], r["barrier_interval"])) for r in members],
                )
            )
            overlaps.append(
                (
                    text,
                    style,
                    [(r["rewind_iteration"], *_bounds(r["jaccard_mean"], r["jaccard_interval"])) for r in members],
                )
            )
    # IMP's levels and the dense network at the same points, from their decisions (the same estimator)
    references: dict[tuple[str, int], list[tuple]] = defaultdict(list)
    for d in stability.get("decisions") or []:
        if d["kind"] in ("dense", "imp") and d["rewind_iteration"] in rewinds and d["barrier_mean"] is not None:
            point = (d["rewind_iteration"], *_bounds(d["barrier_mean"], d["barrier_interval"]))
            references[(d["kind"], d["level"])].append(point)
    for (kind, level), values in sorted(references.items()):
        style = {"color": "black" if kind == "dense" else IMP_COLOR, "linestyle": "--", "marker": "D"}
        barriers.append((f"{kind}" if kind == "dense" else f"IMP level {level}", style, sorted(values)))
    draw(axes[0], barriers, rewinds)
    draw(axes[1], overlaps, rewinds)
    threshold = float((stability.get("settings") or {}).get("threshold", 2.0))
    axes[0].axhline(threshold, color="red", linestyle=":", linewidth=1.2, label=f"threshold ({threshold:g} pts)")
    axes[0].set_ylabel("test error barrier (percentage points)")
    axes[0].set_title("error barrier between copies from k", fontsize=10)
    axes[1].set_ylabel("Jaccard overlap of the copies' final masks")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("do two copies end with the same mask? (1: identical)", fontsize=10)
    figure.suptitle("Stability of dynamic sparsity vs. k (mean over replicates; error bars: 95% interval)")
    legend_below(figure, list(axes), ncol=4)
    return figure


def _interval(row: dict[str, Any], name: str, digits: int) -> str:
    mean, interval = row[f"{name}_mean"], row[f"{name}_interval"]
    if mean is None:
        return "–"
    text = f"{mean:.{digits}f}"
    return text if interval is None else f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


@register_section
def stability_section(results: dict[str, Any], experiment_dir: Path) -> str | None:
    """`stability.dynamic`: one row per (k, method, target density): the barrier, the Jaccard overlap of the final
    masks (mean [95% interval] over replicates), and the barrier's decision."""
    stability = results.get("stability") or {}
    rows = stability.get("dynamic") or []
    if not rows:
        return None
    decisions = {
        (d["rewind_iteration"], d["kind"], d.get("target_density")): d for d in stability.get("decisions") or []
    }
    body = []
    for row in rows:
        decision = decisions.get((row["rewind_iteration"], row["kind"], row["target_density"]))
        density = "–" if row["density"] is None else f"{100 * row['density']:.3g}"
        cells = [
            row["kind"],
            row["rewind_iteration"],
            f"{100 * row['target_density']:.3g}",
            density,
            f"{row['replicates'] - row['diverged']}/{row['replicates']}",
            _interval(row, "barrier", 2),
            _interval(row, "jaccard", 3),
            label(decision),
        ]
        body.append("<tr>" + "".join(f"<td>{escaped(c)}</td>" for c in cells) + "</tr>")
    head = [
        "method",
        "k",
        "target %",
        "% remaining",
        "analysed",
        "test barrier [95%]",
        "mask Jaccard [95%]",
        "decision",
    ]
    return (
        "<h2>Stability of dynamic sparsity</h2><p>Copies of each method's run continued from its state at k (weights, "
        "mask, method state) with other data orders: the test error barrier along the linear path between them "
        "(percentage points) and the Jaccard overlap |A ∩ B| / |A ∪ B| of their final masks (1: the same mask). Mean "
        "and 95% interval over replicates (one replicate: a jackknife over its copies; none with two copies).</p>"
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


@register
def dynamic_figures(results: dict[str, Any], experiment_dir: Path) -> Figures:
    made = [
        ("dynamic_vs_remaining", accuracy_figure(results.get("summary") or [])),
        ("dynamic_mask_movement", movement_figure(results.get("dynamic") or [])),
        ("dynamic_stability_vs_rewind", stability_figure(results.get("stability") or {})),
    ]
    return [(name, figure) for name, figure in made if figure is not None]
