"""Which stability measure predicts a ticket (results.json's `predictors`): scatter plots of each measure against
the subnetwork's accuracy gap to the dense network, and the Spearman table with the partial correlation
controlling for density and the cluster-bootstrap intervals (an HTML section)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lottery.reports.figures import Figures, register
from lottery.reports.html import escaped, register_section
from lottery.reports.plot import kind_color, kind_label, legend_below, new_figure

PANELS = 6  # scatter panels: the first measures of the table (most observations, then largest |partial rho|)


def _interval(interval: list[float] | None) -> str:
    return "–" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def _rho(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _defined(predictors: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [t for t in (predictors or {}).get("table", []) if t["spearman"] is not None]


@register
def predictor_scatter(results: dict[str, Any], experiment_dir: Path) -> Figures:
    predictors = results.get("predictors")
    rows = _defined(predictors)[:PANELS]
    if not rows:
        return []
    observations = predictors["observations"]
    ncols = min(3, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    figure, _ = new_figure(width=4.2 * ncols, height=3.4 * nrows)
    figure.clear()
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    kinds = sorted({o["kind"] for o in observations}, key=lambda k: (k != "imp", k))
    for ax, row in zip(axes, rows):
        for kind in kinds:
            pts = [(o["measures"][row["measure"]], o["accuracy_gap"]) for o in observations if o["kind"] == kind]
            pts = [p for p in pts if p[0] is not None]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color=kind_color(kind), label=kind_label(kind))
        partial = row.get("partial_spearman")
        ax.set_title(
            f"{row['measure']} (n = {row['n']})\nSpearman {row['spearman']:.2f} {_interval(row['interval'])}, "
            f"partial {_rho(partial)} {_interval(row.get('partial_interval'))}",
            fontsize=8,
        )
        ax.set_ylabel("accuracy gap to dense (points)", fontsize=8)
        ax.grid(True, alpha=0.3)
    for ax in axes[len(rows) :]:
        ax.set_visible(False)
    legend_below(figure, list(axes[: len(rows)]))
    return [("predictors_scatter", figure)]


@register_section
def predictor_table(results: dict[str, Any], experiment_dir: Path) -> str | None:
    predictors = results.get("predictors")
    if not predictors or not predictors.get("observations"):
        return None
    n = len(predictors["observations"])
    defined = _defined(predictors)
    if not defined:  # a table of dashes says nothing: one line instead
        return (
            "<h2>Which measure predicts the accuracy gap</h2>"
            f"<p>Not computed: a rank correlation needs several analysed subnetworks with distinct measures, and this "
            f"experiment has {n} (n = {n}). Analyse more levels, rewind points or replicates "
            "(<code>stability.levels</code>, <code>stability.rewind</code>, <code>replicates</code>).</p>"
        )
    undefined = [t["measure"] for t in predictors["table"] if t["spearman"] is None]
    body = []
    for t in defined:
        cells = [
            escaped(t["n"]),
            escaped(t.get("clusters", "–")),
            _rho(t["spearman"]),
            _interval(t["interval"]),
            _rho(t.get("partial_spearman")),
            _interval(t.get("partial_interval")),
        ]
        body.append(
            f'<tr><td class="l">{escaped(t["measure"])}</td>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    unit = predictors.get("resampling_unit", "observation")
    return (
        "<h2>Which measure predicts the accuracy gap</h2>"
        f"<p>Spearman rank correlation of each stability measure with the subnetwork's accuracy gap to the dense "
        f"network, and the partial correlation controlling for {escaped(predictors.get('partial_for', 'density'))}, "
        f"over {n} analysed subnetworks (IMP and its controls at levels ≥ 1, every "
        f"replicate and rewind point); {int(100 * predictors['level'])}% bootstrap intervals resampling "
        f"{escaped(unit)}s ({escaped(predictors['resamples'])} resamples, seed {escaped(predictors['seed'])}; none "
        "with one). Measures are ranked only against those with the same n.</p>"
        '<table><tr><th class="l">measure</th><th>n</th><th>replicates</th><th>Spearman</th><th>interval</th>'
        "<th>partial (density)</th><th>interval</th></tr>"
        + "".join(body)
        + "</table>"
        + (f"<p>Not defined (too few distinct values): {escaped(', '.join(undefined))}.</p>" if undefined else "")
    )
