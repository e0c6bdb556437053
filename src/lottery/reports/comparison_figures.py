"""The IMP figures overlaid across several experiments (say, two learning rates): one colour per
experiment, one line style per kind (IMP, controls), one marker per rewind point. Only the dense run, IMP and its
controls: the [masks] runs (mask sources and their ablations) are overlaid in their own figure
(`masks_figures.mask_sources_comparison`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lottery.reports.figures import (
    ACCURACY_PANELS,
    Figures,
    dense_reference,
    imp_rows,
    pick_levels,
    plot_curve,
    register_comparison,
    rewind_text,
    summary_series,
    test_curve,
    zoom_accuracy,
)
from lottery.reports.load import Experiment
from lottery.reports.plot import (
    KIND_LINESTYLES,
    MARKERS,
    draw_reference,
    draw_series,
    kind_label,
    new_figure,
    remaining_axis,
)

DENSE_LINE = {"linestyle": "-", "linewidth": 3.5, "alpha": 0.35}  # the dense reference: a broad faint line


def experiment_color(index: int) -> Any:
    return colormaps["tab10"](index % 10)


def _style(index: int) -> Any:
    def style(kind: str, rewind_index: int, rewind_count: int) -> dict[str, Any]:
        return {
            "color": experiment_color(index),
            "linestyle": KIND_LINESTYLES.get(kind, "-"),
            "marker": MARKERS[rewind_index % len(MARKERS)],
        }

    return style


def _summary(experiment: Experiment) -> list[dict[str, Any]]:
    """The experiment's summary rows of the dense run, IMP and its controls (no [masks] runs)."""
    return imp_rows(experiment.results.get("summary") or [])


def _overlay(ax: Any, experiments: list[Experiment], metric: str, scale: float) -> None:
    """Every experiment's curves on one axis, drawn as one group so that points at the same density are dodged
    apart (two experiments sharing networks have identical points, which would otherwise hide each other)."""
    all_percents, series = [], []
    for i, experiment in enumerate(experiments):
        summary = _summary(experiment)
        reference = dense_reference(
            summary,
            metric,
            scale,
            label=f"{experiment.label}: dense",
            color=experiment_color(i),
            **DENSE_LINE,
        )
        if reference is not None:
            draw_reference(ax, reference)
        series += summary_series(summary, metric, scale, _style(i), prefix=f"{experiment.label}: ")
        all_percents += [100 * r["density"] for r in summary]
    draw_series(ax, series, dodge=0.03)
    remaining_axis(ax, all_percents)


def shared_notes(experiments: list[Experiment]) -> dict[int, str]:
    """For each experiment that shares trained networks with an earlier one (the same store, networks named by what
    determines them), a legend note: 'shares 7 networks with <label>: identical points, drawn side by side'."""
    from lottery.store import layout

    linked = [set(layout.links(Path(e.path)).values()) for e in experiments]
    notes = {}
    for i in range(1, len(experiments)):
        for j in range(i):
            common = linked[i] & linked[j]
            if (
                common
                and layout.store_of(Path(experiments[i].path)).resolve()
                == layout.store_of(Path(experiments[j].path)).resolve()
            ):
                notes[i] = f"shares {len(common)} networks with {experiments[j].label}: same values, offset"
                break
    return notes


def _key(color: Any = "0.35", **line: Any) -> Line2D:
    return Line2D([], [], **{"color": color, "linewidth": 1.8, **line})


def legend(
    figure: Figure,
    experiments: list[Experiment],
    styles: list[tuple[str, dict[str, Any]]],
    notes: dict[int, str] | None = None,
) -> None:
    """A two-part legend below the panels: one colour per experiment (with an optional note), then what
    each line style means."""
    notes = notes or {}
    labels = [e.label + (f" ({notes[i]})" if i in notes else "") for i, e in enumerate(experiments)]
    handles = [_key(experiment_color(i), label=label) for i, label in enumerate(labels)]
    handles += [_key(label=label, **style) for label, style in styles]
    ncol = max(len(experiments), -(-len(handles) // 3))
    figure.legend(handles=handles, loc="outside lower center", ncol=min(ncol, 4), fontsize=8.5)


def remaining_styles(experiments: list[Experiment]) -> list[tuple[str, dict[str, Any]]]:
    """Legend keys for the lines of `_overlay`: the dense reference, each kind, each rewind point's marker."""
    rows = [r for e in experiments for r in _summary(e) if r["kind"] != "dense"]
    kinds = sorted({r["kind"] for r in rows}, key=lambda kind: (kind != "imp", kind))
    styles = [("dense (reference)", DENSE_LINE)]
    styles += [(kind_label(kind), {"linestyle": KIND_LINESTYLES.get(kind, "-")}) for kind in kinds]
    rewinds = sorted({r["rewind_iteration"] for r in rows}, key=lambda k: k or 0)
    if len(rewinds) > 1:
        styles += [
            (f"rewind {rewind_text(k)}", {"linestyle": "none", "marker": MARKERS[i % len(MARKERS)]})
            for i, k in enumerate(rewinds)
        ]
    return styles


def _has_pruned(experiments: list[Experiment]) -> bool:
    return any(r["kind"] != "dense" for e in experiments for r in _summary(e))


def accuracy_comparison(experiments: list[Experiment]) -> Figure | None:
    if not _has_pruned(experiments):
        return None
    figure, axes = new_figure(12.0, 5.8, ncols=2, sharey=True)
    for ax, (metric, ylabel) in zip(axes, ACCURACY_PANELS):
        _overlay(ax, experiments, metric, 100.0)
        ax.set_title(ylabel.replace(" (%)", ""))
        ax.set_ylabel(ylabel)
    axes[1].tick_params(labelleft=True)
    figure.suptitle("Test accuracy vs. weights remaining, compared (mean; error bars: min/max)")
    legend(figure, experiments, remaining_styles(experiments), shared_notes(experiments))
    return figure


def early_stop_comparison(experiments: list[Experiment]) -> Figure | None:
    if not _has_pruned(experiments):
        return None
    figure, (ax,) = new_figure(8.0, 6.0)
    _overlay(ax, experiments, "early_stop_iteration", 1.0)
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.05)
    ax.set_ylabel("early-stopping iteration (min. validation loss)")
    ax.set_title("Early-stopping iteration vs. weights remaining, compared (mean; error bars: min/max)", fontsize=10)
    legend(figure, experiments, remaining_styles(experiments), shared_notes(experiments))
    return figure


def training_comparison(experiments: list[Experiment]) -> Figure | None:
    """Test accuracy during training: each experiment's dense run (solid) and its sparsest IMP level at its
    first rewind point (dashed)."""
    figure, (ax,) = new_figure(8.0, 5.6)
    curves, notes = [], {}
    for i, experiment in enumerate(experiments):
        runs = [r for r in experiment.results.get("runs") or [] if not r["diverged"]]
        dense = test_curve(experiment.path, [r for r in runs if r["kind"] == "dense"])
        if dense:
            plot_curve(ax, dense, f"{experiment.label}: dense", experiment_color(i))
            curves.append(dense)
        imp = [r for r in runs if r["kind"] == "imp"]
        if imp:
            k = min(r["rewind_iteration"] for r in imp)
            level = pick_levels(sorted({r["level"] for r in imp if r["rewind_iteration"] == k}))[-1]
            members = [r for r in imp if r["rewind_iteration"] == k and r["level"] == level]
            percent = 100 * members[0]["density"]
            label = f"{experiment.label}: IMP level {level} ({percent:.3g}%, {rewind_text(k)})"
            notes[i] = f"dashed: IMP level {level}, {percent:.3g}%, {rewind_text(k)}"
            curve = test_curve(experiment.path, members)
            plot_curve(ax, curve, label, experiment_color(i), linestyle="--")
            curves.append(curve)
    if not curves:
        return None
    ax.set_title("Test accuracy during training, compared (mean over replicates; band: min/max)", fontsize=10.5)
    zoom_accuracy(ax, curves)  # after the title: it adds the note that the first evaluations are off-scale
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    legend(figure, experiments, [("dense", {}), ("sparsest IMP level, first rewind", {"linestyle": "--"})], notes)
    return figure


@register_comparison
def imp_comparison(experiments: list[Experiment]) -> Figures:
    made = [
        ("accuracy_vs_remaining", accuracy_comparison(experiments)),
        ("early_stop_iteration_vs_remaining", early_stop_comparison(experiments)),
        ("test_accuracy_during_training", training_comparison(experiments)),
    ]
    return [(name, figure) for name, figure in made if figure is not None]
