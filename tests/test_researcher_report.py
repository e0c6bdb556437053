"""Issue 27, item 7: a report that reads right. No figure's title or marker is clipped (checked in matplotlib: each
figure's tight bounding box inside its canvas, every marker inside its axes), the interpolation figure on an honest
scale, no table of dashes for the predictors, the header counts every trained network, `compare` of experiments
that share networks offsets them, and the report renders in a headless browser (a screenshot)."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from conftest import run_tiny
from lottery.reports import load_experiment, write_comparison, write_report
from lottery.reports.figures import build_comparison, build_figures
from lottery.reports.load import label_experiments
from lottery.store import layout
from test_report_browser import HEADLESS, browser

STABILITY = (
    "imp.rewind=['10it']",
    "controls.kinds=['random_prune']",
    "stability.rewind=['10it']",  # one rewind point: single-point markers
    "stability.copies=2",
    "stability.interpolation_points=5",
    "stability.train_subset=100",
    "stability.batchnorm_batches=1",
)


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    store = tmp_path_factory.mktemp("runs")
    two, _ = run_tiny(store, "imp.levels=2", *STABILITY)
    one, _ = run_tiny(store, "imp.levels=1", *STABILITY)  # shares all its networks with `two`
    return two.path, one.path


@pytest.fixture(scope="module")
def report(experiments: tuple[Path, Path]) -> Path:
    return write_report(experiments[0])


def clipped(figure: Figure) -> list[str]:
    """What of `figure` lies outside its canvas, or which markers outside their axes (where they are cut)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    problems = []
    box, page = figure.get_tightbbox(renderer), figure.bbox_inches
    tolerance = 0.02  # inches
    if box.x0 < -tolerance or box.y0 < -tolerance or box.x1 > page.x1 + tolerance or box.y1 > page.y1 + tolerance:
        problems.append(f"content {box.bounds} outside the canvas {page.bounds}")
    for ax in figure.axes:
        if not ax.get_visible():
            continue
        frame = ax.bbox
        for line in ax.lines:
            marker = line.get_marker()
            if marker in (None, "", "None", " ") or not line.get_visible():
                continue
            radius = line.get_markersize() / 2 * figure.dpi / 72
            flat = marker in ("_", "|")  # error bar caps: a line, half its length across
            off_scale = "off-scale" in ax.get_title()  # a zoom that says so leaves some points out on purpose
            for x, y in ax.transData.transform(line.get_xydata()):
                if not (math.isfinite(x) and math.isfinite(y)):
                    continue
                rx, ry = (radius, 0.5) if marker == "_" else (0.5, radius) if flat else (radius, radius)
                outside = x + rx < frame.x0 or x - rx > frame.x1 or y + ry < frame.y0 or y - ry > frame.y1
                if outside and off_scale:
                    continue
                if x - rx < frame.x0 - 1 or x + rx > frame.x1 + 1 or y - ry < frame.y0 - 1 or y + ry > frame.y1 + 1:
                    problems.append(f"{ax.get_title()!r}: a marker of {line.get_label()!r} at ({x:.0f}, {y:.0f})")
                    break
    return problems


def test_no_figure_title_or_marker_is_clipped(experiments: tuple[Path, Path]) -> None:
    two, one = experiments
    experiment = load_experiment(two)
    figures = build_figures(experiment.results, two)
    names = [name for name, _ in figures]
    assert {"interpolation_curves", "stability_l2_vs_rewind", "error_barrier_vs_rewind"} <= set(names)
    pair = [load_experiment(two), load_experiment(one)]
    label_experiments(pair)
    figures += [(f"compare/{name}", figure) for name, figure in build_comparison(pair)]
    problems = {name: found for name, figure in figures if (found := clipped(figure))}
    assert problems == {}, "\n".join(f"{k}: {v}" for k, v in problems.items())


def test_interpolation_on_an_honest_scale(experiments: tuple[Path, Path]) -> None:
    experiment = load_experiment(experiments[0])
    figure = dict(build_figures(experiment.results, experiments[0]))["interpolation_curves"]
    ax = figure.axes[0]
    errors = [y for line in ax.lines for y in line.get_ydata()]
    low, high = ax.get_ylim()
    assert low <= 0 < high and high >= max(errors) + 2.0  # from 0, and the 2-point threshold fits above the curves
    title = figure._suptitle.get_text()
    assert "\n" in title  # wrapped to the one-panel figure's width


def test_header_counts_every_trained_network_and_no_table_of_dashes(
    experiments: tuple[Path, Path], report: Path
) -> None:
    two = experiments[0]
    html = report.read_text()
    store = layout.store_of(two)
    networks = {t for t in layout.links(two).values() if (store / t / "summary.json").exists()}
    results = load_experiment(two).results
    assert len(networks) > len(results["runs"])  # stability copies are trained networks too
    assert f"{len(networks)} trained networks ({len(results['runs'])} in the results table" in html
    predictors = html[html.index("Which measure predicts") :]
    predictors = predictors[: predictors.index("<h2", 10)] if "<h2" in predictors[10:] else predictors
    assert "Not computed" in predictors and "<td>–</td>" not in predictors and "<table" not in predictors


def test_compare_offsets_experiments_that_share_networks(experiments: tuple[Path, Path], tmp_path: Path) -> None:
    pair = [load_experiment(p) for p in experiments]
    label_experiments(pair, ["two levels", "one level"])
    figure = dict(build_comparison(pair))["accuracy_vs_remaining"]
    ax = figure.axes[0]
    level_1 = {}
    for container in ax.containers:  # errorbar containers hold the series' labels and data lines
        label = container.get_label()
        if label.endswith(": IMP"):
            level_1[label] = min(container.lines[0].get_xdata(), key=lambda x: abs(x - 80))  # the level-1 point
    assert set(level_1) == {"two levels: IMP", "one level: IMP"}
    a, b = level_1.values()
    assert a != b and abs(math.log(a / b)) < 0.1  # the same density, drawn side by side
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert any(text.startswith("one level (shares") and "two levels" in text for text in legend)
    assert (write_comparison(list(experiments), tmp_path / "cmp")).exists()


@pytest.mark.skipif(browser() is None, reason="no headless browser installed (apt-get install chromium)")
def test_report_screenshot(report: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    result = subprocess.run(
        [
            browser(),
            *HEADLESS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,4000",
            "--virtual-time-budget=10000",
            f"--screenshot={shot}",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        colors = image.convert("L").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 50  # a rendered page (text, figures), not a blank one


def test_weight_panels_in_the_models_order_not_string_order(tmp_path: Path) -> None:
    """A Sequential whose weights are 0, 4, 10, 13: the magnitude panels follow the model (string order would put
    10 and 13 before 4)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import lottery

    torch.manual_seed(0)
    layers = [nn.Linear(4, 6)] + [nn.ReLU()] * 3 + [nn.Linear(6, 6)] + [nn.ReLU()] * 5 + [nn.Linear(6, 6)]
    model = nn.Sequential(*layers, nn.ReLU(), nn.ReLU(), nn.Linear(6, 2))
    x, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 2

    def train_fn(m: nn.Module, mask: lottery.Mask, start: int, end: int) -> dict[str, float]:
        optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(start, end):
            optimizer.zero_grad()
            F.cross_entropy(m(x), y).backward()
            optimizer.step()
        return {"accuracy": 0.5}

    levels = list(lottery.imp(model, train_fn, levels=1, iterations=4, rewind=1, directory=tmp_path))
    experiment = load_experiment(levels[0].experiment)
    figures = dict(build_figures(experiment.results, experiment.path))
    figure = figures["weight_magnitudes_k1_level1"]
    titles = [ax.get_title().split(":")[0] for ax in figure.axes[::2]]
    assert titles == ["0.weight", "4.weight", "10.weight", "13.weight"]
