"""Which stability measure predicts a ticket (results.json's `predictors`): scatter plots of each measure against
the subnetwork's accuracy gap to the dense network, and the Spearman table (an HTML section)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lottery.reports.figures import Figures, register
from lottery.reports.html import escaped, register_section
from lottery.reports.plot import kind_color, kind_label, legend_below, new_figure

PANELS = 6  # scatter panels: the measures with the largest |rho|


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
        interval = row["interval"]
        bounds = "" if interval is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]"
        ax.set_title(f"{row['measure']}\nSpearman {row['spearman']:.2f}{bounds}", fontsize=9)
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
        rho = "–" if t["spearman"] is None else f"{t['spearman']:.3f}"
        interval = "–" if t["interval"] is None else f"[{t['interval'][0]:.2f}, {t['interval'][1]:.2f}]"
        body.append(
            f'<tr><td class="l">{escaped(t["measure"])}</td><td>{escaped(t["n"])}</td><td>{rho}</td>'
            f"<td>{interval}</td></tr>"
        )
    return (
        "<h2>Which measure predicts the accuracy gap</h2>"
        f"<p>Spearman rank correlation of each stability measure with the subnetwork's accuracy gap to the dense "
        f"network, over {len(predictors['observations'])} analysed subnetworks (every replicate, rewind point, level "
        f"and kind); {int(100 * predictors['level'])}% bootstrap interval from {escaped(predictors['resamples'])} "
        f"resamples (seed {escaped(predictors['seed'])}).</p>"
        '<table><tr><th class="l">measure</th><th>n</th><th>Spearman</th><th>interval</th></tr>'
        + "".join(body)
        + "</table>"
        + (f"<p>Not defined (too few distinct values): {escaped(', '.join(undefined))}.</p>" if undefined else "")
    )
