"""`lottery compare` keeps the [masks] runs out of the IMP overlay: IMP (reset and rewound) and its controls in
accuracy_vs_remaining, each mask source and each ablation as its own series in compare_mask_sources_vs_remaining."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lottery.reports import comparison_figures, masks_figures
from lottery.reports.figures import build_comparison
from lottery.reports.load import Experiment
from lottery.spec import ExperimentSpec


def row(kind: str, density: float, accuracy: float, k: int | None = 0, level: int | None = 1, **more: Any) -> dict:
    stats = {"mean": accuracy, "min": accuracy, "max": accuracy}
    iteration = {"mean": 10.0, "min": 10.0, "max": 10.0}
    return {
        "kind": kind,
        "rewind_iteration": k,
        "level": level,
        "density": density,
        "runs": 1,
        "diverged": 0,
        "final_test_accuracy": stats,
        "early_stop_test_accuracy": stats,
        "early_stop_iteration": iteration,
        "train_seconds": None,
        **more,
    }


def experiment(label: str, shift: float) -> Experiment:
    summary = [
        row("dense", 1.0, 0.9 + shift, level=0),
        *(row("imp", d, 0.88 + shift, k=k, level=lv) for k in (0, 100) for lv, d in ((1, 0.2), (2, 0.04))),
        row("random_reinit", 0.2, 0.7 + shift),
        # [masks] runs: rewind_iteration = masks.at (0, like IMP reset; 50: a point IMP does not use), no level
        *(
            row(kind, d, 0.6 + shift, k=at, level=None, target_density=d)
            for kind, at in (("snip", 0), ("snip_shuffle", 0), ("magnitude", 50))
            for d in (0.2, 0.05)
        ),
    ]
    return Experiment(Path("."), ExperimentSpec(), None, {"runs": [], "summary": summary}, label=label)


def labels(figure: Any) -> set[str]:
    return {label for ax in figure.axes for label in ax.get_legend_handles_labels()[1]}


def test_compare_keeps_mask_sources_out_of_the_imp_overlay() -> None:
    experiments = [experiment("A", 0.0), experiment("B", 0.01)]
    figure = comparison_figures.accuracy_comparison(experiments)
    drawn = labels(figure)
    assert {"A: IMP (k=0)", "A: IMP (k=100)", "B: IMP (k=0)", "A: random reinit (k=0)"} <= drawn
    assert not any("snip" in label or "magnitude" in label for label in drawn), drawn
    assert not any("k=50" in label for label in drawn)  # masks.at adds no rewind point to the IMP lines
    # the legend's rewind markers: IMP's two rewind points only
    legend = {t.get_text() for t in figure.legends[0].get_texts()}
    assert {"rewind k=0", "rewind k=100"} <= legend and not any("50" in text for text in legend)
    assert not any("snip" in text or "magnitude" in text for text in legend)
    early = labels(comparison_figures.early_stop_comparison(experiments))
    assert not any("snip" in label or "magnitude" in label for label in early)


def test_compare_draws_each_mask_source_and_ablation_as_its_own_series() -> None:
    experiments = [experiment("A", 0.0), experiment("B", 0.01)]
    figure = masks_figures.mask_sources_comparison_figure(experiments)
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert set(panels) == {"snip and its ablations", "magnitude"}
    snip = set(panels["snip and its ablations"].get_legend_handles_labels()[1])
    assert {"A: snip", "A: snip_shuffle", "B: snip", "B: snip_shuffle"} <= snip
    assert not any("IMP" in label or "magnitude" in label for label in snip)
    for ax in panels.values():  # each series: its own points at its target densities (the dense line aside)
        for line in ax.get_lines():
            if not line.get_label().endswith("dense") and len(line.get_xdata()) > 1:
                assert sorted(round(x) for x in line.get_xdata()) == [5, 20]
    names = [name for name, _ in build_comparison(experiments)]
    assert "compare_mask_sources_vs_remaining" in names and "accuracy_vs_remaining" in names
    assert masks_figures.mask_sources_comparison_figure([experiment("A", 0.0)][:0]) is None
