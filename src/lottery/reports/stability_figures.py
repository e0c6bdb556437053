"""The stability report: distances, error barriers and accuracy against the rewind iteration, and the
interpolation curves — for one experiment, or overlaid across several (say, two learning rates) — and a table
of every analysed point (an HTML section)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lottery.measures import Measure, present
from lottery.reports.figures import Figures, register, register_comparison
from lottery.reports.html import escaped, register_section
from lottery.reports.load import Experiment
from lottery.reports.notes import marker
from lottery.reports.plot import (
    KIND_LINESTYLES,
    MARKERS,
    fitted_title,
    kind_color,
    kind_label,
    legend_below,
    new_figure,
    pad_y,
)
from lottery.results import conclusions
from lottery.results.kinds import split_kind
from lottery.store import load_spec

Line = tuple[str, dict[str, Any], list[tuple[int, float, float, float]]]  # label, style, (k, mean, min, max)


def points(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in (results.get("stability") or {}).get("points", []) if not p["diverged"]]


def _stat(values: list[float]) -> tuple[float, float, float]:
    return statistics.fmean(values), min(values), max(values)


def lines(pts: list[dict[str, Any]], value: Any, style_offset: int = 0) -> list[Line]:
    """One line per (kind, level) over the rewind iterations; `value(point)` gives the samples of a point
    (pairs, copies); samples of all replicates are pooled into mean/min/max."""
    Group = tuple[str, int, float | None]  # kind, level, a [masks] subject's target density
    groups: dict[Group, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    density: dict[Group, list[float]] = defaultdict(list)
    for p in pts:
        samples = value(p)
        if samples:
            group = (p["kind"], p["level"], p.get("target_density"))
            groups[group][p["rewind_iteration"]].extend(samples)
            density[group].append(p["density"])
    levels = sorted({p["level"] for p in pts if p["kind"] != "dense"})  # shades per level, the same in every panel
    targets = sorted({p["target_density"] for p in pts if p.get("target_density") is not None}, reverse=True)
    out = []

    def order(g: Group) -> tuple:  # dense, IMP, its controls, then the [masks] subjects, densest first
        return (g[0] != "dense", g[0] != "imp", g[2] is not None, g[0], g[1], -(g[2] or 0))

    for group in sorted(groups, key=order):
        kind, level, target = group
        i = targets.index(target) if target is not None else levels.index(level) if level in levels else 0
        percent = 100 * statistics.fmean(density[group])
        color, linestyle = subject_style(kind, target, i, len(levels))
        style = {"color": color, "linestyle": linestyle, "marker": MARKERS[(i + style_offset) % len(MARKERS)]}
        label = kind_label(kind) + ("" if kind == "dense" else f", {percent:.3g}% remaining")
        out.append((label, style, [(k, *_stat(v)) for k, v in sorted(groups[group].items())]))
    return out


def subject_style(kind: str, target: float | None, i: int, count: int) -> tuple[Any, str]:
    """(colour, line style) of a subject: black for the dense network; IMP and its controls shaded per level
    (`i` of `count`); a [masks] subject (`target` density set) in its source's colour and its ablation's style."""
    if kind == "dense":
        return "black", "-"
    if target is None:
        return kind_color(kind, i, count), KIND_LINESTYLES.get(kind, "-")
    from lottery.reports.masks_figures import ABLATION_STYLES, source_colors

    source, ablation = split_kind(kind)
    return source_colors([source])[source], ABLATION_STYLES.get(ablation, ("-", "o"))[0]


def draw(ax: Axes, drawn: list[Line], rewinds: list[int], label_prefix: str = "") -> None:
    """Lines against the rewind iteration on an evenly spaced axis labelled with the iterations."""
    position = {k: i for i, k in enumerate(rewinds)}
    for n, (label, style, pts) in enumerate(drawn):
        shift = 0.04 * (n - (len(drawn) - 1) / 2)  # keep overlapping error bars visible
        x = [position[k] + shift for k, *_ in pts]
        mean = [p[1] for p in pts]
        yerr = [[max(0.0, p[1] - p[2]) for p in pts], [max(0.0, p[3] - p[1]) for p in pts]]  # (a mean rounds past)
        ax.errorbar(x, mean, yerr=yerr, label=label_prefix + label, capsize=3, markersize=4.5, linewidth=1.5, **style)
    ax.set_xticks(range(len(rewinds)), [str(k) for k in rewinds])
    ax.set_xlim(-0.5, len(rewinds) - 0.5)  # one rewind point too: its markers in the middle, not at the frame
    ax.set_xlabel("rewind iteration k")
    ax.grid(True, alpha=0.3)


def rewinds_of(pts: list[dict[str, Any]]) -> list[int]:
    return sorted({p["rewind_iteration"] for p in pts})


def measure_figure(pts: list[dict[str, Any]], measure: Measure) -> Figure | None:
    """A measure (lottery.measures) against the rewind iteration: between copies (stability to data order) and,
    for a measure of both, between the full network and the subnetwork (stability to pruning)."""
    metric, ylabel = measure.column, measure.label

    def data_order(p: dict[str, Any]) -> list[float]:
        return [pair[metric] for pair in p["data_order"]["pairs"] if pair.get(metric) is not None]

    def pruning(p: dict[str, Any]) -> list[float]:
        return [pair[metric] for pair in (p["pruning"] or {"pairs": []})["pairs"] if pair.get(metric) is not None]

    panels = [(data_order, "stability to data order"), (pruning, "stability to pruning")][: len(measure.parts())]
    figure, axes = new_figure(12.0 if len(panels) == 2 else 8.0, 5.2, ncols=len(panels))
    for ax, (value, title) in zip(axes, panels):
        draw(ax, lines(pts, value), rewinds_of(pts))
        ax.set_title(f"{title}: {ylabel} between copies" if value is data_order else f"{title}: {ylabel}, full vs sub")
        ax.set_ylabel(ylabel)
        pad_y(ax, bottom=0 if measure.group == "distance" else None)
    lower = "lower = more stable; " if measure.group == "distance" else ""
    figure.suptitle(f"{ylabel} vs. rewind iteration ({lower}error bars: min/max over pairs)")
    legend_below(figure, axes)
    return figure


def barrier_figure(pts: list[dict[str, Any]], threshold: float) -> Figure:
    figure, axes = new_figure(12.0, 5.2, ncols=2, sharey=True)
    for ax, key, title in ((axes[0], "barrier_test", "test"), (axes[1], "barrier_train", "train")):
        draw(ax, lines(pts, lambda p, key=key: [pair[key] for pair in p["data_order"]["pairs"]]), rewinds_of(pts))
        ax.axhline(
            threshold, color="red", linestyle="--", linewidth=1.2, label=f"stability threshold ({threshold:g} pts)"
        )
        ax.set_title(f"error barrier on the {title} set")
        ax.set_ylabel("error barrier (percentage points)")
        pad_y(ax)
    axes[1].tick_params(labelleft=True)
    figure.suptitle("Instability: error barrier between copies vs. rewind iteration (error bars: min/max over pairs)")
    legend_below(figure, axes)
    return figure


def accuracy_figure(pts: list[dict[str, Any]]) -> Figure:
    figure, (ax,) = new_figure(8.0, 5.6)
    drawn = lines(pts, lambda p: [100 * c["final_test_accuracy"] for c in p["copies"]])
    draw(ax, drawn, rewinds_of(pts))
    ax.set_ylabel("final test accuracy (%)")
    pad_y(ax)
    ax.set_title("Test accuracy of the copies vs. rewind iteration, at each sparsity (dense: black)", fontsize=10.5)
    legend_below(figure, [ax], ncol=2)
    return figure


def interpolation_figure(experiment_dir: Path, pts: list[dict[str, Any]], threshold: float = 2.0) -> Figure | None:
    """Test error along the path between the first pair of copies, one panel per rewind point (at most 4), on an
    honest scale: from 0 error up, at least `threshold` points above the highest error, so a barrier is seen at
    its size against the stability threshold, not blown up by an auto-zoomed axis."""
    rewinds = rewinds_of(pts)
    if len(rewinds) > 4:
        rewinds = [rewinds[round(i * (len(rewinds) - 1) / 3)] for i in range(4)]
    width = min(5.0 * len(rewinds), 18.0) + 1.0
    figure, axes = new_figure(width, 5.0, ncols=len(rewinds), sharey=True)
    highest = 0.0
    levels = sorted({p["level"] for p in pts})
    for ax, k in zip(axes, rewinds):
        for p in [p for p in pts if p["rewind_iteration"] == k and p["replicate"] == 0]:
            pair = p["data_order"]["pairs"][0]
            curve = json.loads((Path(experiment_dir) / pair["curve"]).read_text())
            i = levels.index(p["level"])
            color, linestyle = subject_style(p["kind"], p.get("target_density"), i, len(levels))
            label = kind_label(p["kind"]) + ("" if p["kind"] == "dense" else f", {100 * p['density']:.3g}%")
            ax.plot(
                curve["alpha"],
                curve["test_error"],
                color=color,
                linestyle=linestyle,
                marker=MARKERS[i % len(MARKERS)],
                markersize=3,
                label=label,
            )
            highest = max([highest, *(e for e in curve["test_error"] if e is not None)])
        ax.set_title(f"rewound to k={k}")
        ax.set_xlabel("α  (network α·W₁ + (1 − α)·W₂)")
        ax.set_ylabel("test error (%)")
        ax.grid(True, alpha=0.3)
        ax.set_xlim(-0.04, 1.04)
    top = min(100.0, highest + max(threshold, 0.1 * highest)) + 0.5
    for ax in axes:
        ax.set_ylim(-0.03 * top, top)  # from 0 (a hair below, so markers at 0 error are whole)
    axes[-1].tick_params(labelleft=True)
    figure.suptitle(
        fitted_title(
            f"Linear interpolation between two copies trained with different data orders (y from 0: a barrier "
            f"reads against the {threshold:g}-point stability threshold)",
            width,
        )
    )
    legend_below(figure, axes)
    return figure


@register
def stability_figures(results: dict[str, Any], experiment_dir: Path) -> Figures:
    pts = points(results)
    if not pts:
        return []
    threshold = results["stability"]["settings"].get("threshold", 2.0)
    made: Figures = [(f"stability_{m.column}_vs_rewind", measure_figure(pts, m)) for m in present(pts) if m.figure]
    made += [
        ("error_barrier_vs_rewind", barrier_figure(pts, threshold)),
        ("stability_accuracy_vs_rewind", accuracy_figure(pts)),
        ("interpolation_curves", interpolation_figure(experiment_dir, pts, threshold)),
    ]
    return [(name, figure) for name, figure in made if figure is not None]


@register_comparison
def stability_comparison(experiments: list[Experiment]) -> Figures:
    """Data-order distance and error barrier vs. rewind iteration, overlaid across experiments."""
    with_points = [(e, points(e.results)) for e in experiments]
    with_points = [(e, pts) for e, pts in with_points if pts]
    if not with_points:
        return []
    rewinds = sorted({k for _, pts in with_points for k in rewinds_of(pts)})
    figure, axes = new_figure(12.0, 5.4, ncols=2)
    colors = colormaps["tab10"]
    for n, (experiment, pts) in enumerate(with_points):
        for ax, value in (
            (axes[0], lambda p: [pair["l2"] for pair in p["data_order"]["pairs"]]),
            (axes[1], lambda p: [pair["barrier_test"] for pair in p["data_order"]["pairs"]]),
        ):
            drawn = [(label, {**style, "color": colors(n % 10)}, data) for label, style, data in lines(pts, value)]
            draw(ax, drawn, rewinds, label_prefix=f"{experiment.label}: ")
    axes[0].set_ylabel("L2 distance between copies (data order)")
    axes[1].set_ylabel("test error barrier (percentage points)")
    figure.suptitle("Stability across experiments vs. rewind iteration (error bars: min/max over pairs)")
    legend_below(figure, axes, ncol=2)
    return [("compare_stability_vs_rewind", figure)]


def _cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    mean, low, high = _stat(values)
    return f"{mean:.{digits}f}" if low == high else f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


@register_section
def stability_table(results: dict[str, Any], experiment_dir: Path) -> str | None:
    """One row per (rewind point, level, subject): mean [min, max] over pairs and replicates."""
    pts = points(results)
    if not pts:
        return None
    spec, _ = load_spec(Path(experiment_dir))
    groups: dict[tuple[int, int, str, float | None], list[dict[str, Any]]] = defaultdict(list)
    for p in pts:  # a [masks] subject: one row per target density
        groups[(p["rewind_iteration"], p["level"], p["kind"], p.get("target_density"))].append(p)
    order = {"dense": 0, "imp": 1}

    def row_order(g: tuple) -> tuple:
        k, level, kind, target = g[0]
        return (k, level, target is not None, order.get(kind, 2), -(target or 0))

    ordered = sorted(groups.items(), key=row_order)
    rows = []
    for (k, level, kind, _), members in ordered:
        data_order = [pair for p in members for pair in p["data_order"]["pairs"]]
        pruning = [pair for p in members if p["pruning"] for pair in p["pruning"]["pairs"]]
        cells = [
            str(k),
            str(level),
            f"{100 * statistics.fmean(p['density'] for p in members):.2f}",
            _cell([pair["l2"] for pair in data_order]),
            _cell([pair["l2"] for pair in pruning]),
            _cell([pair["barrier_test"] for pair in data_order]),
            _cell([pair["barrier_train"] for pair in data_order]),
            f"{sum(p['data_order']['stable'] for p in members)}/{len(members)}",
            f"{sum(p['data_order'].get('stable_mean_barrier', False) for p in members)}/{len(members)}",
            conclusions.label(conclusions.stability_decision(members, spec.stability.threshold)),
        ]
        tds = f'<td class="l">{escaped(kind)}</td>' + "".join(f"<td>{escaped(c)}</td>" for c in cells)
        rows.append(f'<tr class="{escaped(kind)}">{tds}</tr>')
    head = [
        "kind",
        "rewind k",
        "level",
        "% remaining",
        f"data-order L2{marker('distances', spec)}",
        f"pruning L2{marker('pruning', spec)}",
        f"test barrier{marker('barrier', spec)}",
        "train barrier",
        f"stable{marker('stable', spec)}",
        "stable (mean)",
        "decision: barrier mean [95%]",
    ]
    ths = "".join(f'<th class="l">{h}</th>' if h == "kind" else f"<th>{h}</th>" for h in head)
    return (
        "<h2>Stability</h2><p>Mean [min, max] over pairs of copies and replicates; barriers in percentage points; "
        f"'stable': points (replicates) stable / analysed. Copies' noise{marker('copies', spec)}. The decision: "
        "stable when the barrier's 95% interval over replicates (with one replicate: a jackknife over its copies) "
        "lies below the threshold, unstable when above it, else undecided.</p>"
        f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>" + measures_tables(pts, ordered)
    )


def _cell_3g(values: list[float]) -> str:
    if not values:
        return "–"
    mean, low, high = _stat(values)
    return f"{mean:.3g}" if low == high else f"{mean:.3g} [{low:.3g}, {high:.3g}]"


PART_NAMES = {"data_order": "copies", "pruning": "full vs sub"}


def measures_tables(pts: list[dict[str, Any]], ordered: list[tuple[tuple, list[dict[str, Any]]]]) -> str:
    """Every stability measure (lottery.measures, plugins' too), one table per group (distance, function space,
    error barrier, ...): per (rewind point, level, subject), the measure's mean [min, max] over pairs and replicates,
    between copies and, where measured, between the full network and the subnetwork. Collapsed by default."""
    by_group: dict[str, list[Measure]] = defaultdict(list)
    for m in present(pts):
        by_group[m.group].append(m)
    tables = []
    for group, group_measures in by_group.items():
        columns = [(m, part) for m in group_measures for part in m.parts()]
        head = "".join(
            f'<th title="{escaped(m.column)}">{escaped(m.label)} ({PART_NAMES[part]})</th>' for m, part in columns
        )
        rows = []
        for (k, level, kind, _), members in ordered:
            cells = [str(k), str(level), f"{100 * statistics.fmean(p['density'] for p in members):.2f}"]
            for m, part in columns:
                pairs = [pair for p in members for pair in (p[part] or {"pairs": []})["pairs"]]
                cells.append(_cell_3g([pair[m.column] for pair in pairs if pair.get(m.column) is not None]))
            tds = f'<td class="l">{escaped(kind)}</td>' + "".join(f"<td>{escaped(c)}</td>" for c in cells)
            rows.append(f"<tr>{tds}</tr>")  # (the class of a kind marks the summary table's rows only)
        tables.append(
            f'<h3>{escaped(group)}</h3><table><thead><tr><th class="l">kind</th><th>rewind k</th><th>level</th>'
            f"<th>% remaining</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return (
        "<details><summary>Every stability measure, by group (mean [min, max] over pairs of copies and replicates; "
        "copies: between copies trained with different data orders; full vs sub: between the full network and the "
        f"subnetwork)</summary>{''.join(tables)}</details>"
    )
