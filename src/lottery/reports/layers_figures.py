"""Where IMP prunes, layer by layer: each layer's density across levels (figure and table), and each layer's
weight-magnitude distribution at W_k and at W_T for the weights a level keeps and those it prunes. Also the
report's per-run tables, in which every number links to the run directory it came from."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lottery.measures import present
from lottery.reports.figures import Figures, register
from lottery.reports.html import escaped, register_section
from lottery.reports.plot import MARKERS, legend_below, new_figure
from lottery.store import RunDir, layout

MAX_LAYERS = 16  # magnitude panels: the first layers of a deep network (every layer is in the density table)
BINS = 40


def imp_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The dense runs (level 0) and the IMP levels, diverged ones left out."""
    return [r for r in results.get("runs", []) if r["kind"] in ("dense", "imp") and not r["diverged"]]


def layer_density_table(results: dict[str, Any]) -> dict[int | None, dict[int, dict[str, list[tuple[float, str]]]]]:
    """rewind point -> level -> layer -> [(density, run path)] over replicates (level 0: the dense runs)."""
    runs = imp_runs(results)
    dense = [r for r in runs if r["kind"] == "dense"]
    table: dict[Any, dict[int, dict[str, list]]] = {}
    for k in sorted({r["rewind_iteration"] for r in runs if r["kind"] == "imp"}):
        levels: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for r in dense + [r for r in runs if r["kind"] == "imp" and r["rewind_iteration"] == k]:
            for layer, density in r["layer_densities"].items():
                levels[r["level"]][layer].append((density, r["path"]))
        table[k] = dict(sorted(levels.items()))
    return table


def layer_density_figure(results: dict[str, Any]) -> Figure | None:
    table = layer_density_table(results)
    if not table:
        return None
    figure, axes = new_figure(min(6.0 * len(table), 18.0) + 1.0, 5.0, ncols=len(table), sharey=True)
    for ax, (k, levels) in zip(axes, table.items()):
        layers = list(next(iter(levels.values())))
        cmap = colormaps["viridis"]
        for i, layer in enumerate(layers):
            xs = list(levels)
            ys = [100 * statistics.fmean(d for d, _ in levels[level][layer]) for level in xs]
            style = {"marker": MARKERS[i % len(MARKERS)], "linestyle": ("-", "--", ":", "-.")[i % 4]}
            ax.plot(xs, ys, markersize=4, color=cmap(0.9 * i / max(1, len(layers) - 1)), label=layer, **style)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("IMP level")
        ax.set_ylabel("weights remaining in the layer (%)")
        ax.set_title(f"rewound to k={k}")
        ax.grid(True, alpha=0.3, which="both")
    figure.suptitle("Density per layer across IMP levels (mean over replicates)")
    legend_below(figure, axes, ncol=4)
    return figure


def natural(name: str) -> tuple:
    """A sort key that orders the numbers in a name as numbers: '4.weight' before '10.weight'."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def model_order(mask: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """The mask's layers in the model's parameter order (the run's `layer_densities`, from sparsity.json, keep it;
    a safetensors file does not), else in natural order — never string order (0, 10, 13, 4)."""
    recorded = [name for name in run.get("layer_densities") or {} if name in mask]
    if len(recorded) == len(mask):
        return recorded
    return sorted(mask, key=natural)


def magnitude_figure(experiment_dir: Path, results: dict[str, Any], k: int) -> tuple[str, Figure] | None:
    """|W| at the rewind point k and at the end of training of the level pruned from (W_T), per layer, for the
    weights the deepest finished level (replicate 0) keeps and those it prunes."""
    levels = [r for r in imp_runs(results) if r["kind"] == "imp" and r["rewind_iteration"] == k and r["replicate"] == 0]
    if not levels:
        return None
    deepest = max(levels, key=lambda r: r["level"])
    level = deepest["level"]
    previous = next((r["path"] for r in levels if r["level"] == level - 1), None) if level > 1 else None
    if previous is None:
        previous = next((r["path"] for r in imp_runs(results) if r["kind"] == "dense" and r["replicate"] == 0), None)
    if previous is None:
        return None
    dense = layout.dense(layout.replicate(Path(experiment_dir), 0))
    w_k = RunDir(dense).read_tensors(layout.snapshot(k))
    w_t = RunDir(Path(experiment_dir) / previous).read_tensors("final.safetensors")
    mask = RunDir(Path(experiment_dir) / deepest["path"]).read_tensors("mask.safetensors")
    if w_k is None or w_t is None or mask is None:
        return None
    layers = model_order(mask, deepest)[:MAX_LAYERS]
    figure = Figure(figsize=(11.0, 1.9 * len(layers) + 1.2), layout="constrained")
    grid = figure.subplots(len(layers), 2, squeeze=False)
    for row, layer in zip(grid, layers):
        kept = mask[layer]
        for ax, (label, weights) in zip(row, ((f"W_k (k={k})", w_k), (f"W_T ({previous})", w_t))):
            magnitude = weights[layer].abs().float()
            top = float(magnitude.max()) or 1.0
            edges = torch.linspace(0, top, BINS + 1).tolist()
            for selected, name, color in ((kept, "kept", "tab:blue"), (~kept, "pruned", "tab:red")):
                values = magnitude[selected]
                if values.numel():
                    counts = torch.histc(values, bins=BINS, min=0, max=top).tolist()
                    ax.stairs(counts, edges, fill=True, alpha=0.55, color=color, label=f"{name} ({values.numel()})")
            ax.set_title(f"{layer}: |{label}|", fontsize=8.5)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
    figure.suptitle(
        f"Weight magnitudes of the weights IMP level {level} (k={k}, {100 * deepest['density']:.3g}% remaining) keeps "
        "and prunes,\nat the rewind point (W_k) and at the end of the training it was pruned from "
        "(W_T; weights pruned at earlier levels are 0 there); replicate 0",
        fontsize=10,
    )
    return f"weight_magnitudes_k{k}_level{level}", figure


@register
def layer_figures(results: dict[str, Any], experiment_dir: Path) -> Figures:
    made: Figures = []
    density = layer_density_figure(results)
    if density is not None:
        made.append(("layer_density_vs_level", density))
    for k in layer_density_table(results):
        figure = magnitude_figure(experiment_dir, results, k)
        if figure is not None:
            made.append(figure)
    return made


# HTML: every number linked to the run directory it came from -------------------------------------------
def link(text: str, path: str, file: str = "") -> str:
    """`text` linking to a run directory (or a file in it), relative to `<experiment>/report/`."""
    target = f"../{path}/{file}" if file else f"../{path}/"
    return f'<a href="{escaped(target)}" title="{escaped(path)}">{escaped(text)}</a>'


def linked_values(values: list[tuple[float, str]], file: str) -> str:
    """The mean of (value, run) pairs, linked to its run; with several runs, each run's value follows, linked."""
    mean = statistics.fmean(v for v, _ in values)
    if len(values) == 1:
        return link(f"{100 * mean:.2f}", values[0][1], file)
    each = " ".join(link(f"{100 * v:.2f}", p, file) for v, p in values)
    return f"{100 * mean:.2f} <small>({each})</small>"


@register_section
def layer_density_section(results: dict[str, Any], experiment_dir: Path) -> str | None:
    table = layer_density_table(results)
    if not table:
        return None
    parts = [
        "<h2>Density per layer</h2><p>Percent of each layer's weights remaining at each IMP level (level 0: the "
        "dense network). Each number links to the <code>sparsity.json</code> of the run it came from; with several "
        "replicates the mean is followed by each replicate's value.</p>"
    ]
    for k, levels in table.items():
        layers = list(next(iter(levels.values())))
        head = "".join(f"<th>level {escaped(level)}</th>" for level in levels)
        rows = "".join(
            f'<tr><td class="l"><code>{escaped(layer)}</code></td>'
            + "".join(f"<td>{linked_values(levels[level][layer], 'sparsity.json')}</td>" for level in levels)
            + "</tr>"
            for layer in layers
        )
        parts.append(
            f'<table id="layer-density-k{escaped(k)}"><caption>rewound to k={escaped(k)}</caption>'
            f'<thead><tr><th class="l">layer</th>'
            f"{head}</tr></thead><tbody>{rows}</tbody></table>"
        )
    return "\n".join(parts)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


@register_section
def runs_section(results: dict[str, Any], experiment_dir: Path) -> str | None:
    runs = results.get("runs") or []
    if not runs:
        return None
    head = (
        "kind",
        "replicate",
        "rewind k",
        "level",
        "seed",
        "% remaining",
        "final test acc %",
        "early-stop test acc %",
        "early-stop iteration",
        "directory",
    )
    rows = []
    for r in runs:
        path = r["path"]
        cells = [
            link("–" if r["rewind_iteration"] is None else str(r["rewind_iteration"]), path),
            link(str(r["level"]), path),
            link("–" if r["seed"] is None else str(r["seed"]), path),
            link(_percent(r["density"]), path, "sparsity.json"),
            link(_percent(r["final_test_accuracy"]), path, "summary.json"),
            link(_percent(r["early_stop_test_accuracy"]), path, "summary.json"),
            link("–" if r["early_stop_iteration"] is None else str(r["early_stop_iteration"]), path, "metrics.jsonl"),
        ]
        kind = f'<td class="l">{link(r["kind"], path)}</td><td>{link(str(r["replicate"]), path)}</td>'
        row = "".join(f"<td>{c}</td>" for c in cells) + f'<td class="l">{link(path, path)}</td>'
        rows.append(f'<tr class="{escaped(r["kind"])}">{kind}{row}</tr>')
    ths = "".join(f'<th class="l">{h}</th>' if h in ("kind", "directory") else f"<th>{h}</th>" for h in head)
    return (
        "<details><summary>Every trained run (each number links to the file it came from)</summary>"
        f'<table id="runs"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table></details>'
    )


def _file_link(text: str, relative: str) -> str:
    return f'<a href="../{escaped(relative)}" title="{escaped(relative)}">{escaped(text)}</a>'


@register_section
def stability_pairs_section(results: dict[str, Any], experiment_dir: Path) -> str | None:
    """Every compared pair of the stability analysis; distances link to the subnetwork's copy, barriers to the
    interpolation curve they come from."""
    if "stability" not in results:
        return None
    from lottery.results.pairs import pair_rows

    pairs = pair_rows(results["stability"]["points"])
    if not pairs:
        return None
    along_curve = ("error barrier", "loss barrier")  # measured along the interpolation curve: linked to it
    shown = present(results["stability"]["points"])  # every measure (lottery.measures), plugins' too
    head = ("measure", "kind", "replicate", "rewind k", "level", "a", "b", *(m.label for m in shown))
    rows = []
    for p in pairs:
        b = p["b"]
        cells = [
            escaped(p["measure"]),
            escaped(p["kind"]),
            escaped(p["replicate"]),
            escaped(p["rewind_iteration"]),
            escaped(p["level"]),
            link(p["a"], p["a"]),
            link(b, b),
        ]
        for m in shown:
            value = p.get(m.column)
            if value is None:
                cells.append("–")
            elif m.group in along_curve and p.get("curve"):
                cells.append(_file_link(f"{value:.3g}", p["curve"]))
            else:
                cells.append(link(f"{value:.4g}", b, "final.safetensors"))
        rows.append("<tr>" + "".join(f'<td class="l">{c}</td>' for c in cells) + "</tr>")
    ths = "".join(f'<th class="l">{escaped(h)}</th>' for h in head)
    return (
        "<details><summary>Every stability pair (distances link to the compared copy, barriers to their "
        f'interpolation curve)</summary><table id="stability-pairs"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )
