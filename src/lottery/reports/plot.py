"""Plotting primitives shared by the figure builders: series of (x, mean, min, max) points, axes in
percent of weights remaining (log scale, decreasing left to right), colours per kind, saving.

Figures are plain `matplotlib.figure.Figure` objects, never pyplot ones: nothing opens a display, no
global backend is switched, and saving renders with Agg (PNG) and matplotlib's SVG writer."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from lottery.extension_points import control_kinds
from lottery.store import atomic


class ByKind(Mapping[str, Any]):
    """IMP's (and the dense network's) own entries, else the attribute every registered control kind carries
    (`lottery.extension_points.ControlKind`: label, colormap, linestyle)."""

    def __init__(self, own: dict[str, Any], attribute: str) -> None:
        self.own, self.attribute = own, attribute

    def __getitem__(self, kind: str) -> Any:
        if kind in self.own:
            return self.own[kind]
        if kind in control_kinds:
            return getattr(control_kinds.get(kind), self.attribute)
        raise KeyError(kind)

    def __iter__(self) -> Iterator[str]:
        return iter([*self.own, *(kind for kind in control_kinds if kind not in self.own)])

    def __len__(self) -> int:
        return len(list(iter(self)))


KIND_LABELS = ByKind({"dense": "dense", "imp": "IMP"}, "label")
KIND_COLORMAPS = ByKind({"imp": "Blues"}, "colormap")
KIND_LINESTYLES = ByKind({"imp": "-"}, "linestyle")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DENSE_COLOR = "black"


@dataclass
class Series:
    """One line with min/max error bars: x (percent remaining) -> mean, lo, hi."""

    label: str
    points: list[tuple[float, float, float, float]]
    color: Any = None
    linestyle: str = "-"
    marker: str = "o"


@dataclass
class Reference:
    """A horizontal reference (the dense network): mean with an optional min/max band."""

    label: str
    mean: float
    lo: float
    hi: float
    color: Any = DENSE_COLOR
    linestyle: Any = "--"
    linewidth: float = 1.3
    alpha: float = 1.0


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " "))


def kind_color(kind: str, index: int = 0, count: int = 1) -> Any:
    """A colour for `kind`; several rewind points of one kind get shades of its colour map, darkest first."""
    cmap = colormaps[KIND_COLORMAPS.get(kind, "Greys")]
    if count <= 1:
        return cmap(0.8)
    return cmap(0.95 - 0.4 * index / (count - 1))


def stats_point(x: float, stats: dict[str, float] | None, scale: float = 1.0) -> tuple | None:
    if stats is None:
        return None
    return (x, scale * stats["mean"], scale * stats["min"], scale * stats["max"])


def draw_series(ax: Axes, series: Sequence[Series], dodge: float = 0.012) -> None:
    """Lines with min/max error bars; series at the same x are shifted by a small factor (`dodge`, on the
    log axis) so that overlapping error bars stay visible. The first series is drawn last, on top."""
    step = min(dodge, 0.08 / max(1, len(series) - 1))  # the whole group spans at most ~8%
    for i, s in reversed(list(enumerate(series))):
        points = sorted((p for p in s.points if p is not None), reverse=True)
        if not points:
            continue
        shift = (1 + step) ** (i - (len(series) - 1) / 2)
        x = [p[0] * shift for p in points]
        mean = [p[1] for p in points]
        yerr = [[max(0.0, p[1] - p[2]) for p in points], [max(0.0, p[3] - p[1]) for p in points]]  # rounding
        ax.errorbar(
            x,
            mean,
            yerr=yerr,
            label=s.label,
            color=s.color,
            linestyle=s.linestyle,
            marker=s.marker,
            markersize=4.5,
            linewidth=1.6,
            elinewidth=1.1,
            capsize=3,
        )


def draw_reference(ax: Axes, ref: Reference) -> None:
    ax.axhline(
        ref.mean, color=ref.color, linestyle=ref.linestyle, linewidth=ref.linewidth, alpha=ref.alpha, label=ref.label
    )
    if ref.hi > ref.lo:
        ax.axhspan(ref.lo, ref.hi, color=ref.color, alpha=0.12, linewidth=0, zorder=0)


def remaining_axis(ax: Axes, percents: Iterable[float]) -> None:
    """Log x axis of percent of weights remaining, decreasing left to right, ticked at the levels' values."""
    values = sorted({round(p, 6) for p in percents if p and p > 0}, reverse=True)
    ax.set_xscale("log")
    if values:
        step = max(1, -(-len(values) // 9))  # at most 9 tick labels
        ticks = values[::step]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_xlim(max(values) * 1.12, min(values) / 1.12)
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("percent of weights remaining (log scale)")
    ax.grid(True, which="major", alpha=0.3)


def new_figure(width: float = 7.0, height: float = 4.6, ncols: int = 1, sharey: bool = False) -> tuple[Figure, list]:
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, ncols, sharey=sharey, squeeze=False)[0]
    return figure, list(axes)


def legend_below(
    figure: Figure, axes: Sequence[Axes], order: Sequence[str] = (), ncol: int | None = None, title: str | None = None
) -> None:
    """One legend for all panels, below them: labels collected from every axis, each once, those in
    `order` first in that order; entries fill columns first (`ncol`: default up to 3)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        return
    labels = [label for label in order if label in seen] + [label for label in seen if label not in order]
    ncol = max(1, min(ncol or 3, len(labels)))
    handles = [seen[label] for label in labels]
    figure.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8.5, title=title, title_fontsize=8.5)


def pad_y(ax: Axes, bottom: float | None = None, top: float | None = None, pad: float = 0.08) -> None:
    """Y limits around everything drawn (error bars included) with `pad` of the range to spare on each side, so a
    marker at the highest or lowest value is never cut by the frame; `bottom` / `top` fix an end (e.g. 0)."""
    box = ax.dataLim
    if not (math.isfinite(box.y0) and math.isfinite(box.y1)):
        return  # nothing drawn
    lo = box.y0 if bottom is None else min(bottom, box.y0)
    hi = box.y1 if top is None else max(top, box.y1)
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    ax.set_ylim(lo - pad * span if bottom is None else lo, hi + pad * span if top is None else hi)


def fitted_title(text: str, width_inches: float, fontsize: float = 12.0) -> str:
    """`text` wrapped onto lines that fit a figure (or panel) `width_inches` wide at `fontsize` points, so a
    title is never cut off at the sides (about 0.55 em per character, with a margin)."""
    per_line = max(20, int(0.9 * width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.wrap(text, per_line)) or text


def figure_bytes(figure: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else None
    figure.savefig(buffer, format=fmt, dpi=150, metadata=metadata)
    return buffer.getvalue()


def save_figures(figures: Sequence[tuple[str, Figure]], out_dir: Path) -> dict[str, bytes]:
    """Write every figure as `<name>.png` and `<name>.svg` (atomically); returns the PNG bytes by name."""
    pngs = {}
    for name, figure in figures:
        pngs[name] = figure_bytes(figure, "png")
        atomic.write_bytes(Path(out_dir) / f"{name}.png", pngs[name])
        atomic.write_bytes(Path(out_dir) / f"{name}.svg", figure_bytes(figure, "svg"))
    return pngs
