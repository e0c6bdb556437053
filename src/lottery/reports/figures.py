"""The report's figures, built from `results.json`, and the registry that lets other modules add more.

A builder is `(results: dict, experiment_dir: Path) -> list[tuple[name, Figure]]`; it returns [] when
the experiment holds nothing it can plot. Register one with the `@register` decorator in a module of
this package whose name ends in `_figures` (it is imported automatically before figures are built);
`@register_comparison` does the same for builders that overlay several experiments.
"""

from __future__ import annotations

import importlib
import pkgutil
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from lottery.reports.metrics import read_metrics
from lottery.reports.plot import (
    KIND_LINESTYLES,
    MARKERS,
    Reference,
    Series,
    draw_reference,
    draw_series,
    kind_color,
    kind_label,
    legend_below,
    new_figure,
    remaining_axis,
    stats_point,
)

if TYPE_CHECKING:
    from lottery.reports.load import Experiment

Figures = list[tuple[str, Figure]]
Builder = Callable[[dict[str, Any], Path], Figures]
ComparisonBuilder = Callable[[list["Experiment"]], Figures]

_BUILDERS: dict[str, Builder] = {}
_COMPARISON_BUILDERS: dict[str, ComparisonBuilder] = {}


def register(builder: Builder) -> Builder:
    """Decorator: add a single-experiment figure builder (figures appear in registration order)."""
    _BUILDERS[f"{builder.__module__}.{builder.__qualname__}"] = builder
    return builder


def register_comparison(builder: ComparisonBuilder) -> ComparisonBuilder:
    """Decorator: add a builder `(experiments: list[Experiment]) -> list[tuple[name, Figure]]`."""
    _COMPARISON_BUILDERS[f"{builder.__module__}.{builder.__qualname__}"] = builder
    return builder


def load_plugins() -> None:
    """Import every `lottery.reports.*_figures` module, so that its builders register themselves."""
    package = importlib.import_module("lottery.reports")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_figures"):
            importlib.import_module(f"lottery.reports.{module.name}")


def _unique(figures: Figures) -> Figures:
    names = [name for name, _ in figures]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"figure name(s) built by more than one builder: {', '.join(duplicates)}")
    return figures


def build_figures(results: dict[str, Any], experiment_dir: Path) -> Figures:
    """Every registered builder's figures for one experiment, in registration order."""
    load_plugins()
    return _unique([item for builder in list(_BUILDERS.values()) for item in builder(results, Path(experiment_dir))])


def build_comparison(experiments: list[Experiment]) -> Figures:
    """Every registered comparison builder's figures for these (labelled) experiments."""
    load_plugins()
    return _unique([item for builder in list(_COMPARISON_BUILDERS.values()) for item in builder(experiments)])


# series from the aggregated summary ------------------------------------------------------------------
Style = Callable[[str, int, int], dict[str, Any]]  # (kind, rewind index, rewind count) -> Series fields

ACCURACY_PANELS = (
    ("final_test_accuracy", "final test accuracy (%)"),
    ("early_stop_test_accuracy", "test accuracy at early stopping (%)"),
)


def rewind_text(k: int | None) -> str:
    return "" if k is None else f"k={k}"


def kind_style(kind: str, index: int, count: int) -> dict[str, Any]:
    """One experiment: colour family per kind, a shade and marker per rewind point."""
    return {
        "color": kind_color(kind, index, count),
        "linestyle": KIND_LINESTYLES.get(kind, "-"),
        "marker": MARKERS[index % len(MARKERS)],
    }


def summary_series(
    summary: list[dict[str, Any]], metric: str, scale: float, style: Style, prefix: str = ""
) -> list[Series]:
    """One series per (kind, rewind point) over the pruned levels, IMP first."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in summary:
        if row["kind"] != "dense":
            groups[(row["kind"], row["rewind_iteration"])].append(row)
    rewinds = sorted({k for _, k in groups}, key=lambda k: k or 0)
    kinds = sorted({kind for kind, _ in groups}, key=lambda kind: (kind != "imp", kind))
    series = []
    for kind in kinds:
        for i, k in enumerate(rewinds):
            rows = groups.get((kind, k))
            if not rows:
                continue
            where = f" ({rewind_text(k)})" if len(rewinds) > 1 else ""
            points = [stats_point(100 * r["density"], r[metric], scale) for r in rows]
            series.append(Series(f"{prefix}{kind_label(kind)}{where}", points, **style(kind, i, len(rewinds))))
    return series


def imp_rows(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dense run, IMP and its controls: every summary row but the [masks] runs' (those have a
    `target_density`, and their own figures: reports/masks_figures.py)."""
    return [r for r in summary if r.get("target_density") is None]


def dense_reference(summary: list[dict[str, Any]], metric: str, scale: float, **fields: Any) -> Reference | None:
    stats = next((r[metric] for r in summary if r["kind"] == "dense"), None)
    if stats is None:
        return None
    label = fields.pop("label", "dense (100%)")
    return Reference(label, scale * stats["mean"], scale * stats["min"], scale * stats["max"], **fields)


def percents(summary: list[dict[str, Any]]) -> list[float]:
    return [100 * r["density"] for r in summary]


# builders ---------------------------------------------------------------------------------------------
def draw_vs_remaining(ax: Any, summary: list[dict[str, Any]], metric: str, scale: float) -> tuple[list[str], int]:
    """Dense reference and every (kind, rewind) series on `ax`; returns the legend order and column count
    (one column per kind, one row per rewind point, the dense reference last)."""
    reference = dense_reference(summary, metric, scale)
    if reference is not None:
        draw_reference(ax, reference)
    series = summary_series(summary, metric, scale, kind_style)
    draw_series(ax, series)
    remaining_axis(ax, percents(summary))
    rewinds = len({r["rewind_iteration"] for r in summary if r["kind"] != "dense"}) or 1
    order = [s.label for s in series] + ([reference.label] if reference is not None else [])
    return order, -(-len(series) // rewinds) + (reference is not None)


def rewind_legend_title(summary: list[dict[str, Any]]) -> str | None:
    rewinds = {r["rewind_iteration"] for r in summary if r["kind"] != "dense"}
    return "k: the iteration the surviving weights are rewound to" if len(rewinds) > 1 else None


def accuracy_vs_remaining(summary: list[dict[str, Any]], title: str = "") -> Figure | None:
    """Final and early-stopping test accuracy against percent remaining, IMP vs controls, dense reference."""
    if not any(r["kind"] != "dense" for r in summary):
        return None
    figure, axes = new_figure(12.0, 5.4, ncols=2, sharey=True)
    for ax, (metric, ylabel) in zip(axes, ACCURACY_PANELS):
        order, ncol = draw_vs_remaining(ax, summary, metric, 100.0)
        ax.set_title(ylabel.replace(" (%)", ""))
        ax.set_ylabel(ylabel)
    axes[1].tick_params(labelleft=True)
    figure.suptitle(title or "Test accuracy vs. weights remaining (mean over replicates, seeds; error bars: min/max)")
    legend_below(figure, axes, order, ncol, rewind_legend_title(summary))
    return figure


def early_stop_vs_remaining(summary: list[dict[str, Any]], title: str = "") -> Figure | None:
    """The early-stopping iteration (minimum validation loss) against percent remaining."""
    if not any(r["kind"] != "dense" and r["early_stop_iteration"] for r in summary):
        return None
    figure, (ax,) = new_figure(8.0, 5.6)
    order, ncol = draw_vs_remaining(ax, summary, "early_stop_iteration", 1.0)
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.05)
    ax.set_ylabel("early-stopping iteration (min. validation loss)")
    ax.set_title(title or "Early-stopping iteration vs. weights remaining (mean; error bars: min/max)", fontsize=10.5)
    legend_below(figure, [ax], order, ncol, rewind_legend_title(summary))
    return figure


def test_curve(experiment_dir: Path, runs: list[dict[str, Any]]) -> list[tuple[int, float, float, float]]:
    """(iteration, mean, min, max) of test accuracy (%) over the given runs (replicates)."""
    by_iteration: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for row in read_metrics(experiment_dir, run["path"]):
            if row.get("split") == "test" and row.get("accuracy") is not None:
                by_iteration[row["iteration"]].append(100 * row["accuracy"])
    return [(t, statistics.fmean(v), min(v), max(v)) for t, v in sorted(by_iteration.items())]


def pick_levels(levels: list[int], count: int = 4) -> list[int]:
    """Up to `count` levels spread evenly from the first to the last."""
    if len(levels) <= count:
        return levels
    return sorted({levels[round(i * (len(levels) - 1) / (count - 1))] for i in range(count)})


def plot_curve(ax: Any, curve: list[tuple], label: str, color: Any, linestyle: str = "-") -> None:
    t = [p[0] for p in curve]
    ax.plot(t, [p[1] for p in curve], color=color, linestyle=linestyle, marker="o", markersize=3, label=label)
    if any(p[3] > p[2] for p in curve):
        ax.fill_between(t, [p[2] for p in curve], [p[3] for p in curve], color=color, alpha=0.15, linewidth=0)


def zoom_accuracy(ax: Any, curves: list[list[tuple]]) -> None:
    """Leave out the chance-level evaluation at each run's first iteration when setting the y range."""
    later = [v for curve in curves for p in curve[1:] for v in (p[2], p[3])]
    if later:
        low, high = min(later), max(later)
        pad = max(0.5, 0.08 * (high - low))
        ax.set_ylim(low - pad, high + pad)  # not capped at 100: a marker at 100% would be cut in half by the frame
        if any(curve and curve[0][1] < low - pad for curve in curves):
            ax.set_title(ax.get_title() + "\n(zoomed: first evaluations off-scale below)", fontsize=10)


def accuracy_during_training(results: dict[str, Any], experiment_dir: Path) -> Figure | None:
    """Test accuracy over training: dense and a few IMP levels, one panel per rewind point."""
    runs = [r for r in results["runs"] if not r["diverged"]]
    dense = [r for r in runs if r["kind"] == "dense"]
    imp = [r for r in runs if r["kind"] == "imp"]
    rewinds = sorted({r["rewind_iteration"] for r in imp}) or [None]
    dense_curve = test_curve(experiment_dir, dense)
    if not dense_curve and not imp:
        return None
    figure, axes = new_figure(min(6.0 * len(rewinds), 18.0) + 1.0, 5.4, ncols=len(rewinds), sharey=True)
    cmap = colormaps["viridis"]
    for ax, k in zip(axes, rewinds):
        curves = [dense_curve] if dense_curve else []
        if dense_curve:
            plot_curve(ax, dense_curve, "dense (100%)", "black")
        levels = pick_levels(sorted({r["level"] for r in imp if r["rewind_iteration"] == k}))
        for i, level in enumerate(levels):
            members = [r for r in imp if r["rewind_iteration"] == k and r["level"] == level]
            curve = test_curve(experiment_dir, members)
            density = statistics.fmean(r["density"] for r in members)
            plot_curve(ax, curve, f"IMP level {level} ({100 * density:.3g}%)", cmap(0.85 * i / max(1, len(levels) - 1)))
            curves.append(curve)
        ax.set_title(f"IMP rewound to {rewind_text(k)}" if k is not None else "dense")
        zoom_accuracy(ax, curves)
        ax.set_xlabel("training iteration")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
    axes[-1].tick_params(labelleft=True)
    figure.suptitle("Test accuracy during training (mean over replicates; band: min/max)")
    legend_below(figure, axes, ncol=3 if len(axes) == 1 else 5)
    return figure


@register
def imp_figures(results: dict[str, Any], experiment_dir: Path) -> Figures:
    """The IMP report: accuracy and early stopping vs. weights remaining, accuracy during training."""
    summary = imp_rows(results.get("summary") or [])
    made = [
        ("accuracy_vs_remaining", accuracy_vs_remaining(summary)),
        ("early_stop_iteration_vs_remaining", early_stop_vs_remaining(summary)),
        ("test_accuracy_during_training", accuracy_during_training(results, experiment_dir)),
    ]
    return [(name, figure) for name, figure in made if figure is not None]
