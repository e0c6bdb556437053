"""Figures and a report section for `[masks]` runs: accuracy vs. weights remaining for IMP and every mask source
with its ablations, the per-layer densities each method chooses (layer collapse shows as a red cross at the
bottom), the early-bird mask distance over the dense run, and how far the IMP masks of two replicates lie apart."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from lottery.extension_points import MASK_ENGINE_SOURCES, mask_sources
from lottery.reports.comparison_figures import DENSE_LINE, experiment_color
from lottery.reports.figures import Figures, dense_reference, register, register_comparison
from lottery.reports.html import escaped, register_section
from lottery.reports.load import Experiment
from lottery.reports.plot import (
    Series,
    draw_reference,
    draw_series,
    kind_color,
    legend_below,
    remaining_axis,
    stats_point,
)
from lottery.results.kinds import split_kind
from lottery.spec.groups import DYNAMIC_METHODS

ABLATION_STYLES = {None: ("-", "o"), "shuffle": (":", "s"), "reinit": ("--", "^"), "invert": ("-.", "v")}
COLLAPSE_FLOOR = 1e-3  # percent: where a layer with nothing left is drawn


def _mask_rows(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows (or stability points) of [masks] runs: a target density, and not a dynamic method's (RigL, SET,
    GMP and their rewound masks carry one too; they are on the dynamic figures, reports/dynamic_figures.py)."""
    return [r for r in summary if r.get("target_density") is not None and not _is_dynamic(r["kind"])]


def _is_dynamic(kind: str) -> bool:
    """A dynamic method's kind (rigl, set, gmp) or its rewound mask's (`<method>_rewound`)."""
    return kind.removesuffix("_rewound") in DYNAMIC_METHODS


def source_colors(sources: list[str]) -> dict[str, Any]:
    """One colour per source, the same in every figure and report (IMP keeps its blue)."""
    cmap = colormaps["tab10"]
    slots = [3, 4, 5, 6, 7, 8, 9, 1, 2]  # not blue: IMP's
    registered = [*mask_sources, *MASK_ENGINE_SOURCES]
    known = [*registered, *sorted(set(sources) - set(registered))]
    return {source: cmap(slots[known.index(source) % len(slots)]) for source in sources}


def imp_series(summary: list[dict[str, Any]], metric: str) -> list[Series]:
    """IMP per rewind point: 'reset' at k = 0, 'rewound to k' otherwise."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in summary:
        if row["kind"] == "imp":
            groups[row["rewind_iteration"]].append(row)
    series = []
    for i, k in enumerate(sorted(groups)):
        label = "IMP, reset (k=0)" if k == 0 else f"IMP, rewound to k={k}"
        points = [stats_point(100 * r["density"], r[metric], 100.0) for r in groups[k]]
        series.append(Series(label, points, color=kind_color("imp", i, len(groups)), linestyle="-", marker="D"))
    return series


def kind_series(rows: list[dict[str, Any]], kind: str, metric: str, color: Any) -> Series:
    _, ablation = split_kind(kind)
    linestyle, marker = ABLATION_STYLES[ablation]
    points = [stats_point(100 * r["density"], r[metric], 100.0) for r in rows if r["kind"] == kind]
    return Series(kind, points, color=color, linestyle=linestyle, marker=marker)


def accuracy_by_source(summary: list[dict[str, Any]], metric: str = "final_test_accuracy") -> Figure | None:
    """Panel 1: IMP and every source; then one panel per source with its ablations."""
    rows = _mask_rows(summary)
    if not rows:
        return None
    kinds = sorted({r["kind"] for r in rows})
    sources = sorted({split_kind(kind)[0] for kind in kinds}, key=lambda s: [split_kind(k)[0] for k in kinds].index(s))
    colors = source_colors(sources)
    panels = [("IMP and every mask source", [k for k in kinds if split_kind(k)[1] is None])]
    panels += [(f"{source} and its ablations", [k for k in kinds if split_kind(k)[0] == source]) for source in sources]
    panels = [p for i, p in enumerate(panels) if i == 0 or len(p[1]) > 1] or panels[:1]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    figure = Figure(figsize=(5.2 * ncols, 4.2 * nrows + 1.2), layout="constrained")
    axes = list(figure.subplots(nrows, ncols, sharey=True, squeeze=False).reshape(-1))
    imp = imp_series(summary, metric)
    percents = {float(f"{100 * r['density']:.2g}") for r in summary if r["kind"] != "dense"}  # 25.09 and 25: one tick
    reference = dense_reference(summary, metric, 100.0)
    for ax, (_, members) in zip(axes, panels):
        if reference is not None:
            draw_reference(ax, reference)
        draw_series(ax, [*imp, *(kind_series(rows, k, metric, colors[split_kind(k)[0]]) for k in members)])
    heading = "Masks without retraining vs. IMP (mean over replicates and seeds; error bars: min/max)"
    _finish_panels(figure, axes, [title for title, _ in panels], percents, metric, heading, ncol=6)
    return figure


def _finish_panels(
    figure: Figure, axes: list[Any], titles: list[str], percents: set[float], metric: str, heading: str, ncol: int
) -> None:
    """Axes, titles, the unused panels hidden, the heading with the line styles' key, one legend below."""
    for ax, title in zip(axes, titles):
        remaining_axis(ax, percents)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(metric.replace("_", " ") + " (%)")
        ax.tick_params(labelleft=True)
    for ax in axes[len(titles) :]:
        ax.set_visible(False)
    figure.suptitle(
        heading + "\n"
        "solid: the source · dotted: shuffled within each layer · dashed: reinitialised · dash-dot: inverted scores",
        fontsize=10.5,
    )
    legend_below(figure, axes[: len(titles)], ncol=ncol)


def _layer_densities(
    runs: list[dict[str, Any]], kind: str, target: float | None, level: int | None
) -> dict[str, float]:
    members = [
        r
        for r in runs
        if r["kind"] == kind and not r["diverged"] and r.get("target_density") == target and r["level"] == level
    ]
    if not members:
        return {}
    names = list(members[0]["layer_densities"])
    return {n: statistics.fmean(r["layer_densities"][n] for r in members) for n in names}


def layer_densities(results: dict[str, Any]) -> Figure | None:
    """Per-layer density each source chooses at each target density (and IMP at the nearest level)."""
    runs = results.get("runs") or []
    targets = sorted({r["target_density"] for r in _mask_rows(runs)}, reverse=True)
    if not targets:
        return None
    sources = list(dict.fromkeys(r["kind"] for r in _mask_rows(runs)))
    sources = [k for k in sources if split_kind(k)[1] in (None, "invert")]
    colors = source_colors(list(dict.fromkeys(split_kind(k)[0] for k in sources)))
    imp_runs = [r for r in runs if r["kind"] == "imp" and not r["diverged"]]
    figure = Figure(figsize=(min(4.6 * len(targets), 18.0) + 0.6, 5.2), layout="constrained")
    axes = list(figure.subplots(1, len(targets), sharey=True, squeeze=False)[0])
    for ax, target in zip(axes, targets):
        lines = []
        for kind in sources:
            source, ablation = split_kind(kind)
            lines.append((kind, _layer_densities(runs, kind, target, None), colors[source], ABLATION_STYLES[ablation]))
        if imp_runs:
            level = min({r["level"] for r in imp_runs}, key=lambda lv: abs(_mean_density(imp_runs, lv) - target))
            k0 = min(r["rewind_iteration"] for r in imp_runs)
            chosen = [r for r in imp_runs if r["rewind_iteration"] == k0]
            label = f"IMP level {level} ({100 * _mean_density(imp_runs, level):.3g}%)"
            lines.insert(0, (label, _layer_densities(chosen, "imp", None, level), kind_color("imp"), ("-", "D")))
        names: list[str] = []
        for label, densities, color, (linestyle, marker) in lines:
            if not densities:
                continue
            names = names or list(densities)
            values = [100 * densities[n] for n in names]
            ax.plot(
                range(len(names)),
                [max(v, COLLAPSE_FLOOR) for v in values],
                color=color,
                linestyle=linestyle,
                marker=marker,
                markersize=4,
                label=label,
            )
            collapsed = [i for i, v in enumerate(values) if v == 0]
            if collapsed:
                ax.plot(collapsed, [COLLAPSE_FLOOR] * len(collapsed), "x", color="red", markersize=10, mew=2)
        ax.axhline(100 * target, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), [n.removesuffix(".weight") for n in names], rotation=60, fontsize=7)
        ax.set_title(f"target {100 * target:.3g}% remaining", fontsize=10)
        ax.set_ylabel("percent of the layer's weights kept (log)")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelleft=True)
    axes[0].plot([], [], "x", color="red", label="layer collapse (nothing kept)")
    figure.suptitle("Per-layer densities each method chooses (grey: the target; mean over replicates, seeds)")
    legend_below(figure, axes, ncol=5)
    return figure


def _mean_density(runs: list[dict[str, Any]], level: int) -> float:
    return statistics.fmean(r["density"] for r in runs if r["level"] == level)


def early_bird_distance(results: dict[str, Any]) -> Figure | None:
    """Normalised Hamming distance between successive masks over the dense run, per target density."""
    traces = (results.get("masks") or {}).get("early_bird") or []
    if not traces:
        return None
    figure = Figure(figsize=(8.0, 5.2), layout="constrained")
    ax = figure.subplots()
    cmap = colormaps["viridis"]
    count = len(traces[0]["densities"])
    for r, trace in enumerate(traces):
        for i, entry in enumerate(trace["densities"]):
            points = [(t, d) for t, d in zip(trace["iterations"], entry["distances"]) if d is not None]
            color = cmap(0.85 * i / max(1, count - 1))
            label = f"{100 * entry['density']:.3g}% remaining" if r == 0 else None
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                color=color,
                marker="o",
                markersize=3,
                linestyle=("-", "--", ":", "-.")[r % 4],
                label=label,
            )
            if entry["settled_at"] is not None:
                ax.axvline(entry["settled_at"], color=color, linewidth=0.8, alpha=0.6)
    ax.axhline(traces[0]["threshold"], color="red", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("training iteration of the dense run")
    ax.set_ylabel("mask distance to the previous trace point\n(changed / kept weights)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_title(
        f"Early-bird: how much the {traces[0]['source']} mask still changes (vertical: where it settles; "
        "one line style per replicate)",
        fontsize=9.5,
    )
    legend_below(figure, [ax], ncol=4)
    return figure


STABILITY_PANELS = (("l2", "data-order L2 distance between copies"), ("barrier_test", "test error barrier (points)"))


def _pair_series(points: list[dict[str, Any]], metric: str, label: str, style: dict[str, Any]) -> Series:
    """One point per density: `metric` over every data-order pair of these analysed points (mean, min, max)."""
    by_density: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        by_density[p.get("target_density") or p["density"]].append(p)
    drawn = []
    for members in by_density.values():
        values = [pair[metric] for p in members for pair in p["data_order"]["pairs"]]
        stats = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
        drawn.append(stats_point(100 * statistics.fmean(p["density"] for p in members), stats))
    return Series(label, drawn, **style)


def mask_stability(results: dict[str, Any]) -> Figure | None:
    """`stability.masks`: data-order distance and test error barrier of every [masks] subject against weights
    remaining (at masks.at), next to IMP's levels at that rewind point and the dense network's copies."""
    points = [p for p in (results.get("stability") or {}).get("points", []) if not p["diverged"]]
    subjects = _mask_rows(points)
    if not subjects:
        return None
    k = subjects[0]["rewind_iteration"]
    kinds = list(dict.fromkeys(p["kind"] for p in subjects))
    colors = source_colors(list(dict.fromkeys(split_kind(kind)[0] for kind in kinds)))
    imp = [p for p in points if p["kind"] == "imp" and p["rewind_iteration"] == k]
    dense = [p for p in points if p["kind"] == "dense" and p["rewind_iteration"] == k]
    figure = Figure(figsize=(12.0, 5.6), layout="constrained")
    axes = list(figure.subplots(1, 2))
    for ax, (metric, ylabel) in zip(axes, STABILITY_PANELS):
        series = [_pair_series(imp, metric, f"IMP (k={k})", {"color": kind_color("imp"), "marker": "D"})] if imp else []
        for kind in kinds:
            linestyle, marker = ABLATION_STYLES[split_kind(kind)[1]]
            style = {"color": colors[split_kind(kind)[0]], "linestyle": linestyle, "marker": marker}
            series.append(_pair_series([p for p in subjects if p["kind"] == kind], metric, kind, style))
        draw_series(ax, series)
        if dense:
            values = [pair[metric] for p in dense for pair in p["data_order"]["pairs"]]
            ax.axhline(statistics.fmean(values), color="black", linestyle="--", linewidth=1.2, label="dense network")
        remaining_axis(ax, [pt[0] for one in series for pt in one.points if pt is not None])
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{ylabel.split(' (')[0]}, rewound to k={k}", fontsize=10)
    figure.suptitle(
        "Masks without retraining: stability to data order (mean over pairs of copies; error bars: min/max)\n"
        "solid: the source · dotted: shuffled within each layer · dashed: reinitialised · dash-dot: inverted scores",
        fontsize=10.5,
    )
    legend_below(figure, axes, ncol=5)
    return figure


@register
def mask_figures(results: dict[str, Any], experiment_dir: Path) -> Figures:
    made = [
        ("mask_sources_vs_remaining", accuracy_by_source(results.get("summary") or [])),
        ("mask_layer_densities", layer_densities(results)),
        ("early_bird_mask_distance", early_bird_distance(results)),
        ("mask_sources_stability_vs_remaining", mask_stability(results)),
    ]
    return [(name, figure) for name, figure in made if figure is not None]


def source_panels(kinds: list[str]) -> list[tuple[str, list[str]]]:
    """One panel per source, holding it and its ablations, in the order the kinds first appear."""
    sources = list(dict.fromkeys(split_kind(kind)[0] for kind in kinds))
    return [(source, [k for k in kinds if split_kind(k)[0] == source]) for source in sources]


def mask_sources_comparison_figure(experiments: list[Experiment], metric: str = "final_test_accuracy") -> Figure | None:
    """Each mask source and each of its ablations as its own series per experiment (colour: the experiment; line
    style and marker: the ablation), one panel per source; IMP is overlaid in `accuracy_vs_remaining`."""
    rows = {i: _mask_rows(e.results.get("summary") or []) for i, e in enumerate(experiments)}
    kinds = list(dict.fromkeys(r["kind"] for i in rows for r in rows[i]))
    if not kinds:
        return None
    panels = source_panels(kinds)
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    figure = Figure(figsize=(5.2 * ncols, 4.2 * nrows + 1.4), layout="constrained")
    axes = list(figure.subplots(nrows, ncols, sharey=True, squeeze=False).reshape(-1))
    percents = {float(f"{100 * r['density']:.2g}") for i in rows for r in rows[i]}
    for ax, (_, members) in zip(axes, panels):
        for i, experiment in enumerate(experiments):
            summary = experiment.results.get("summary") or []
            label, color = f"{experiment.label}: dense", experiment_color(i)
            reference = dense_reference(summary, metric, 100.0, label=label, color=color, **DENSE_LINE)
            if reference is not None:
                draw_reference(ax, reference)
            series = [kind_series(rows[i], kind, metric, experiment_color(i)) for kind in members]
            for one in series:
                one.label = f"{experiment.label}: {one.label}"
            draw_series(ax, [one for one in series if any(p is not None for p in one.points)])
    titles = [f"{source} and its ablations" if len(members) > 1 else source for source, members in panels]
    heading = "Masks without retraining, compared (mean; error bars: min/max; IMP: accuracy_vs_remaining)"
    _finish_panels(figure, axes, titles, percents, metric, heading, ncol=4)
    return figure


@register_comparison
def mask_sources_comparison(experiments: list[Experiment]) -> Figures:
    figure = mask_sources_comparison_figure(experiments)
    return [("compare_mask_sources_vs_remaining", figure)] if figure is not None else []


@register_section
def mask_section(results: dict[str, Any], experiment_dir: Path) -> str | None:
    """Where each replicate's early-bird mask settles, and the distance between replicates' IMP masks."""
    masks = results.get("masks") or {}
    parts = []
    if masks.get("early_bird"):
        rows = "".join(
            f"<tr><td>{escaped(t['replicate'])}</td><td>{100 * e['density']:.3g}</td>"
            f"<td>{escaped('not settled' if e['settled_at'] is None else e['settled_at'])}</td></tr>"
            for t in masks["early_bird"]
            for e in t["densities"]
        )
        source, threshold = masks["early_bird"][0]["source"], masks["early_bird"][0]["threshold"]
        parts.append(
            f"<h2>Early-bird masks</h2><p>The iteration from which the {escaped(source)} mask's Hamming distance to "
            f"the previous trace point, normalised by the weights kept, stays below {threshold:g} (You et al., ICLR "
            "2020; the paper normalises by the weights considered).</p>"
            "<table><thead><tr><th>replicate</th><th>% remaining</th><th>settled at iteration</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    if masks.get("imp_replicate_distance"):
        rows = "".join(
            f"<tr><td>{escaped(d['rewind_iteration'])}</td><td>{escaped(d['level'])}</td>"
            f"<td>{escaped(d['a'])}–{escaped(d['b'])}</td><td>{100 * d['density']:.3g}</td>"
            f"<td>{d['distance']:.4f}</td><td>{d['random_expectation']:.4f}</td></tr>"
            for d in masks["imp_replicate_distance"]
        )
        parts.append(
            "<h2>Is the ticket itself stable?</h2><p>Hamming distance, normalised by the weights kept, between the "
            "IMP masks of two replicates (different initialisation and data order), next to the distance two "
            "random masks of those densities would have on average.</p><table><thead><tr><th>rewind k</th>"
            "<th>level</th><th>replicates</th><th>% remaining</th><th>distance</th><th>random masks</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return "".join(parts) or None
