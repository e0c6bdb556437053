"""The rewind search's probes for people: one probe as table cells, each subject's answer in words, and the whole
search as a text table (`rewind_search.json`, written by `experiments/rewind_search.py`)."""

from __future__ import annotations

from typing import Any

CONTROL = "random_prune"  # the rewind search's stability control (its probes' last barrier column)


PROBE_COLUMNS = (
    "k",
    "copies",
    "barrier [95% interval]",
    "decision",
    "test acc %",
    "gap to dense [95%]",
    "matching",
    f"{CONTROL} barrier",
    "trainings",
)


def _with_interval(mean: float | None, interval: list[float] | None, missing: str) -> str:
    if mean is None:
        return missing
    return f"{mean:.2f}" + ("" if interval is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]")


def probe_cells(p: dict[str, Any], missing: str = "-") -> list[str]:
    """One probe as the cells of PROBE_COLUMNS (the text table and the report's table)."""
    control = p.get("control") or {}
    return [
        str(p["k"]),
        str(p.get("copies", missing)),
        _with_interval(p["barrier_mean"], p["barrier_interval"], missing),
        p["decision"],
        missing if p["accuracy"] is None else f"{100 * p['accuracy']:.2f}",
        _with_interval(p.get("gap_mean"), p.get("gap_interval"), missing),
        p["matching"] or missing,
        _with_interval(control.get("barrier_mean"), control.get("barrier_interval"), missing) if control else missing,
        str(p["trainings"]),
    ]


def answer(found: dict[str, Any], subject: str) -> str:
    """One subject's answer in words (the text table's and the report's)."""
    s = found[subject]
    where = f"level {found['level']} " if subject == "imp" else ""
    text = f"{subject} {where}stable from k = {s['k']} (bracket {s['bracket']}, interval for k {s['interval']})"
    if s["monotone"] is False:
        text += f"; NOT monotone: unstable again at k = {s['offending']}"
    elif s["monotone"] is None and s["k"] is not None:
        text += "; stability after k not confirmed"
    text += f"; matching at k: {s['matching']}"
    return text + ("" if s["complete"] else " (budget spent: the bracket so far)")


def table(found: dict[str, Any]) -> str:
    """Every probe as an aligned text table, then the answer for each subject and the cost."""
    lines = [("subject", *PROBE_COLUMNS)]
    for subject in ("dense", "imp"):
        lines.extend((subject, *probe_cells(p)) for p in found[subject]["probes"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text += [answer(found, subject) for subject in ("dense", "imp")]
    cost = found["cost"]
    text.append(
        f"trained {cost['trainings']} networks now ({cost['iterations']} iterations); the probes take "
        f"{cost['probed']['trainings']} ({cost['probed']['iterations']} iterations), a full sweep of the grid "
        f"{cost['full_sweep']['trainings']} ({cost['full_sweep']['iterations']} iterations)"
    )
    return "\n".join(text)
