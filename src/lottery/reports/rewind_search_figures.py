"""The rewind-point search (`rewind_search.json`, written by `lottery rewind-search`): the error barrier of every
probe (mean, with its 95% interval over the independent units as error bars) against k for the dense network, the
IMP subnetwork and the random-pruning control, and a table with each probe's decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lottery.reports.figures import Figures, register
from lottery.reports.html import escaped, register_section
from lottery.reports.plot import kind_color, kind_label, legend_below, new_figure
from lottery.results.probes import PROBE_COLUMNS, answer, probe_cells


def load(experiment_dir: Path) -> dict[str, Any] | None:
    path = Path(experiment_dir) / "rewind_search.json"
    found = json.loads(path.read_text()) if path.exists() else None
    if found is not None and "probes" not in found.get("dense", {}):
        return None  # written before decisions and intervals (`probe`): run the search again (it trains nothing)
    return found


Point = tuple[int, float, list[float] | None]


def _series(found: dict[str, Any]) -> list[tuple[str, list[Point]]]:
    def points(records: list[dict[str, Any]]) -> list[Point]:
        return [(p["k"], p["barrier_mean"], p["barrier_interval"]) for p in records if p["barrier_mean"] is not None]

    dense = points(found["dense"]["probes"])
    imp = points(found["imp"]["probes"])
    control = points([{**p["control"], "k": p["k"]} for p in found["imp"]["probes"] if p.get("control")])
    return [("dense", dense), ("imp", imp), ("random_prune", control)]


@register
def rewind_search_barrier(results: dict[str, Any], experiment_dir: Path) -> Figures:
    found = load(experiment_dir)
    if not found:
        return []
    figure, (ax,) = new_figure()
    for kind, pts in _series(found):
        if pts:
            pts = sorted(pts, key=lambda p: p[0])
            x = [k + 1 for k, _, _ in pts]  # k + 1 on the log axis: k = 0 is shown at 1
            y = [b for _, b, _ in pts]
            low = [max(0.0, b - (i[0] if i else b)) for _, b, i in pts]  # (an interval's ends round past the mean)
            high = [max(0.0, (i[1] if i else b) - b) for _, b, i in pts]
            color = "black" if kind == "dense" else kind_color(kind)
            ax.errorbar(x, y, yerr=[low, high], marker="o", color=color, capsize=3, label=kind_label(kind))
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
        for p in found[subject]["probes"]:
            cells = probe_cells(p, missing="–")
            rows.append(
                f'<tr><td class="l">{kind_label(subject)}</td>'
                + "".join(f"<td>{escaped(c)}</td>" for c in cells)
                + "</tr>"
            )
    cost = found["cost"]
    answers = "".join(f"<li>{escaped(answer(found, s))}</li>" for s in ("dense", "imp"))
    return (
        f"<h2>Rewind-point search (IMP level {escaped(found['level'])})</h2><ul>{answers}</ul>"
        f"<p>The probes take {escaped(cost['probed']['trainings'])} trainings "
        f"({escaped(cost['probed']['iterations'])} iterations; {escaped(cost['trainings'])} trained by the last "
        f"call, the rest read from the store); a full sweep over the grid {escaped(found['grid'])} would train "
        f"{escaped(cost['full_sweep']['trainings'])} ({escaped(cost['full_sweep']['iterations'])} iterations).</p>"
        f"<p>Each decision is taken on the interval (95%, over {escaped(_units(found))}): stable when it lies below "
        f"the threshold {escaped(found['threshold'])}, unstable when above, else undecided (then copies are added, up "
        f"to {escaped(found.get('max_copies'))}).</p>"
        '<table><tr><th class="l">subject</th>'
        + "".join(f"<th>{escaped(c)}</th>" for c in PROBE_COLUMNS)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def _units(found: dict[str, Any]) -> str:
    units = {p.get("unit") for s in ("dense", "imp") for p in found[s]["probes"] if p.get("unit")}
    return "replicates" if units == {"replicate"} else "the copies of one replicate" if units == {"copy"} else "units"
