"""Self-contained HTML reports: inline CSS, figures embedded as base64 PNG, no scripts, no external URLs.

Other modules may add sections after the results table with `@register_section`: a function
`(results: dict, experiment_dir: Path) -> str | None` returning an HTML fragment (None: nothing to show).
The page ends with numbered notes (`lottery.reports.notes`) that link to docs/measured.md.

Every value a section takes from a file (results.json, rewind_search.json, spec.json, a path) goes into the page
through `escaped` (`lottery.reports.escaping`), numbers included: a file edited by someone else may hold a string,
e.g. a script tag, where a number belongs (tests/test_adversarial_inputs.py renders every section from one).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from lottery.reports.escaping import escaped
from lottery.reports.load import Experiment, differing_settings
from lottery.reports.notes import footnotes, marker
from lottery.results.rows import matching_cell
from lottery.spec import to_dict
from lottery.store import RunDir

Section = Callable[[dict[str, Any], Path], "str | None"]
_SECTIONS: dict[str, Section] = {}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #555; } code, pre { font-family: Menlo, Consolas, monospace; font-size: 0.88em; }
pre { background: #f6f8fa; padding: 0.8em 1em; overflow-x: auto; border-radius: 4px; }
details summary { cursor: pointer; font-weight: 600; margin: 0.6em 0; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f0f3f6; } td.l, th.l { text-align: left; }
tr.dense td { font-weight: 600; background: #fafafa; } tr.imp td { background: #f3f8ff; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
ol.notes { font-size: 0.9em; color: #333; }
"""


def register_section(section: Section) -> Section:
    """Decorator: add an HTML section to every single-experiment report, after the results table."""
    _SECTIONS[f"{section.__module__}.{section.__qualname__}"] = section
    return section


def _stats(stats: dict[str, float] | None, scale: float = 100.0, digits: int = 2) -> str:
    if stats is None:
        return "–"
    mean = f"{scale * stats['mean']:.{digits}f}"
    if stats["min"] == stats["max"]:
        return mean
    return f"{mean} [{scale * stats['min']:.{digits}f}, {scale * stats['max']:.{digits}f}]"


def results_table(summary: list[dict[str, Any]], label: str | None = None) -> str:
    """The aggregated summary (mean [min, max] over replicates and control seeds) as an HTML table."""
    head = [
        "kind",
        "rewind k",
        "level",
        "% remaining",
        "final test acc %",
        "early-stop iteration",
        "early-stop test acc %",
        "runs",
        "diverged",
        "vs dense: gap [95%], decision",
    ]
    rows = []
    for r in summary:
        cells = [
            "–" if r["rewind_iteration"] is None else str(r["rewind_iteration"]),
            "–" if r["level"] is None else str(r["level"]),
            f"{100 * r['density']:.2f}",
            _stats(r["final_test_accuracy"]),
            _stats(r["early_stop_iteration"], 1.0, 0),
            _stats(r["early_stop_test_accuracy"]),
            str(r["runs"]),
            str(r["diverged"]),
            matching_cell(r.get("matching")),
        ]
        tds = f'<td class="l">{escaped(r["kind"])}</td>' + "".join(f"<td>{escaped(text)}</td>" for text in cells)
        rows.append(f'<tr class="{escaped(r["kind"])}">{tds}</tr>')
    caption = f"<caption>{escaped(label)}</caption>" if label else ""
    ths = "".join(f'<th class="l">{h}</th>' if h == "kind" else f"<th>{h}</th>" for h in head)
    return f"<table>{caption}<thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def figure_block(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    title = name.replace("_", " ")
    return (
        f'<figure id="{escaped(name)}"><img alt="{escaped(title)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{escaped(title)} — files: <a href="{escaped(name)}.png">{escaped(name)}.png</a>, '
        f'<a href="{escaped(name)}.svg">{escaped(name)}.svg</a></figcaption></figure>'
    )


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escaped(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _spec_blocks(experiment: Experiment) -> list[str]:
    changed = tomli_w.dumps(to_dict(experiment.spec, omit_defaults=True)).strip() or "(all defaults)"
    raw = RunDir(experiment.path).read("spec.json", quiet=True)
    full = raw.decode() if raw is not None else json.dumps(to_dict(experiment.spec), indent=2)
    return [
        "<h2>Spec</h2><p>Settings that differ from the defaults:</p>",
        f"<pre>{escaped(changed)}</pre>",
        f"<details><summary>Resolved spec (spec.json)</summary><pre>{escaped(full)}</pre></details>",
    ]


def trained_count(experiment: Experiment, results: dict[str, Any]) -> str:
    """'13 trained networks (7 in the results table, 6 stability copies)': every finished network the experiment
    links to (runs.json), stability copies included, not only the rows of the results table."""
    from lottery.store import layout

    store = layout.store_of(Path(experiment.path))
    targets = set(layout.links(Path(experiment.path)).values())
    networks = sum((store / target / "summary.json").is_file() for target in targets)
    rows = len(results.get("runs", []))
    networks = max(networks, rows)  # an experiment made before format 2 has no links
    rest = networks - rows
    detail = f" ({rows} in the results table, {rest} stability copies)" if rest else ""
    return f"{networks} trained network{'s' if networks != 1 else ''}{detail}"


def render_report(experiment: Experiment, pngs: dict[str, bytes]) -> str:
    """The single-experiment report: title, spec, results table, extra sections, every figure."""
    results, spec = experiment.results, experiment.spec
    preset = f" · preset <code>{escaped(experiment.preset)}</code>" if experiment.preset else ""
    body = [
        f"<h1>Lottery ticket experiment <code>{escaped(experiment.hash)}</code></h1>",
        f'<p class="meta">{escaped(str(experiment.path))}{preset} · {escaped(trained_count(experiment, results))} · '
        f"{experiment.spec.replicates} replicate(s)</p>",
        *_spec_blocks(experiment),
        "<h2>Results</h2><p>Mean [min, max] over replicates and control seeds; diverged runs are left out of the "
        f"statistics. Early stopping: the iteration of minimum validation loss{marker('early_stop', spec)}."
        + (f" Controls{marker('controls', spec)}." if spec.controls.kinds else "")
        + "</p>",
        results_table(results.get("summary", [])),
    ]
    # by module (the order `lottery report` imports them in), then as each module defines them: the page is the same
    # whichever module a process happened to import first
    for section in sorted(_SECTIONS.values(), key=lambda section: section.__module__):
        fragment = section(results, experiment.path)
        if fragment:
            body.append(fragment)
    body.append("<h2>Figures</h2>")
    body += [figure_block(name, png) for name, png in pngs.items()] or ["<p>No figures: nothing has finished yet.</p>"]
    body.append(footnotes(spec, Path(experiment.path) / "report"))
    return _page(f"Lottery experiment {experiment.hash}", body)


def render_comparison(experiments: list[Experiment], pngs: dict[str, bytes]) -> str:
    """The comparison report: which experiment is which, every overlaid figure, each results table."""
    diffs = differing_settings([e.spec for e in experiments])
    rows = "".join(
        f'<tr><td class="l">{escaped(e.label)}</td><td class="l"><code>{escaped(e.hash)}</code></td>'
        f'<td class="l">{escaped(e.preset or "–")}</td>'
        f'<td class="l">{escaped(", ".join(f"{k} = {json.dumps(v)}" for k, v in diff.items()) or "–")}</td>'
        f'<td class="l">{escaped(str(e.path))}</td></tr>'
        for e, diff in zip(experiments, diffs)
    )
    body = [
        f"<h1>Comparison of {len(experiments)} lottery ticket experiments</h1>",
        '<table><thead><tr><th class="l">label</th><th class="l">hash</th><th class="l">preset</th>'
        f'<th class="l">differing settings</th><th class="l">directory</th></tr></thead><tbody>{rows}</tbody></table>',
        "<h2>Figures</h2>",
        *([figure_block(name, png) for name, png in pngs.items()] or ["<p>No figures: nothing has finished yet.</p>"]),
        "<h2>Results</h2>",
        *(results_table(e.results.get("summary", []), e.label) for e in experiments),
    ]
    return _page(f"Comparison of {len(experiments)} experiments", body)
