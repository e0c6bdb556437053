"""The rewind-point search (`rewind_search.json`, written by `lottery rewind-search`): the error barrier of every
probe against k for the dense network, the IMP subnetwork and the random-pruning control, and a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lottery.experiments.rewind_search import probe_cells
from lottery.reports.figures import Figures, register
from lottery.reports.html import escaped, register_section
from lottery.reports.plot import kind_color, kind_label, legend_below, new_figure


def load(experiment_dir: Path) -> dict[str, Any] | None:
    path = Path(experiment_dir) / "rewind_search.json"
    return json.loads(path.read_text()) if path.exists() else None


def _series(found: dict[str, Any]) -> list[tuple[str, list[tuple[int, float]]]]:
    dense = [(p["k"], p["barrier"]) for p in found["dense"]["probe"] if p["barrier"] is not None]
    imp = [(p["k"], p["barrier"]) for p in found["imp"]["probe"] if p["barrier"] is not None]
    control = [
        (p["k"], p["control"]["barrier"])
        for p in found["imp"]["probe"]
        if p.get("control") and p["control"]["barrier"] is not None
    ]
    return [("dense", dense), ("imp", imp), ("random_prune", control)]


@register
def rewind_search_barrier(results: dict[str, Any], experiment_dir: Path) -> Figures:
    found = load(experiment_dir)
    if not found:
        return []
    figure, (ax,) = new_figure()
    for kind, pts in _series(found):
        if pts:
            pts = sorted(pts)
            x = [k + 1 for k, _ in pts]  # k + 1 on the log axis: k = 0 is shown at 1
            color = "black" if kind == "dense" else kind_color(kind)
            ax.plot(x, [b for _, b in pts], marker="o", color=color, label=kind_label(kind))
    ax.axhline(found["threshold"], color="0.5", linestyle=":", label=f"threshold {found['threshold']}")
    for subject, style in (("dense", "--"), ("imp", "-.")):
        if found[subject]["k"] is not None:
            color = "black" if subject == "dense" else kind_color("imp")
            ax.axvline(found[subject]["k"] + 1, color=color, linestyle=style, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlim(0.8, (max(found["grid"]) + 1) * 1.25)  # the whole candidate grid, probed or not
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.set_xlabel("rewind iteration k + 1 (log scale)")
    ax.set_ylabel("test error barrier (points)")
    ax.set_title(f"Rewind-point search, IMP level {found['level']}")
    ax.grid(True, alpha=0.3)
    legend_below(figure, [ax])
    return [("rewind_search_barrier", figure)]


@register_section
def rewind_search_table(results: dict[str, Any], experiment_dir: Path) -> str | None:
    found = load(experiment_dir)
    if not found:
        return None
    rows = []
    for subject in ("dense", "imp"):
        for p in found[subject]["probe"]:
            cells = probe_cells(p, missing="–")
            rows.append(
                f'<tr><td class="l">{kind_label(subject)}</td>'
                + "".join(f"<td>{escaped(c)}</td>" for c in cells)
                + "</tr>"
            )
    cost = found["cost"]
    answers = "".join(
        "<li>"
        + escaped(
            f"{kind_label(s)}: stable from k = {found[s]['k']} (bracket {found[s]['bracket']}), matching "
            f"{found[s]['matching']}{'' if found[s]['complete'] else ' (budget spent: the bracket so far)'}"
        )
        + "</li>"
        for s in ("dense", "imp")
    )
    return (
        f"<h2>Rewind-point search (IMP level {escaped(found['level'])})</h2><ul>{answers}</ul>"
        f"<p>The probes take {escaped(cost['probed']['trainings'])} trainings "
        f"({escaped(cost['probed']['iterations'])} iterations; {escaped(cost['trainings'])} trained by the last "
        f"call, the rest read from the store); a full sweep over the grid {escaped(found['grid'])} would train "
        f"{escaped(cost['full_sweep']['trainings'])} ({escaped(cost['full_sweep']['iterations'])} iterations).</p>"
        '<table><tr><th class="l">subject</th><th>k</th><th>barrier</th><th>stable</th><th>test acc %</th>'
        "<th>matching</th><th>random pruning barrier</th><th>trainings</th></tr>" + "".join(rows) + "</table>"
    )
