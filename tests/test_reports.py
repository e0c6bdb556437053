"""Reports: figures, the self-contained HTML page, comparisons and the CLI, on tiny synthetic experiments."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from lottery.cli.main import main
from lottery.errors import UserError
from lottery.experiments.run import run_experiment
from lottery.reports import figures, write_comparison, write_report
from lottery.reports.load import load_experiment
from lottery.spec import resolve
from lottery.training import Runtime

FIGURES = ("accuracy_vs_remaining", "early_stop_iteration_vs_remaining", "test_accuracy_during_training")
OVERRIDES = [
    "dataset.name=synthetic",
    "dataset.validation_size=200",
    "model.name=lenet_30_10",
    "training.training_steps=60it",
    "training.eval_every=20it",
    "imp.levels=2",
    'controls.kinds=["random_reinit","random_prune"]',
]


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    out = []
    for lr in ("0.0012", "0.005"):
        spec, preset = resolve(preset="lenet_300_100", overrides=[*OVERRIDES, f"training.lr={lr}"])
        experiment, _ = run_experiment(spec, preset, root, Runtime(progress=False))
        out.append(experiment.path)
    return out


def check_files(directory: Path) -> None:
    for name in FIGURES:
        png = (directory / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        svg = directory / f"{name}.svg"
        assert svg.stat().st_size > 0
        assert ElementTree.parse(svg).getroot().tag.endswith("svg")


def check_self_contained(html: str, figures: int = len(FIGURES)) -> None:
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert html.count('src="data:image/png;base64,') == figures


def test_report_writes_html_and_figures(experiments: list[Path]) -> None:
    path = write_report(experiments[0])
    assert path == experiments[0] / "report" / "report.html"
    check_files(path.parent)
    html = path.read_text()
    check_self_contained(html, len(list(path.parent.glob("*.png"))))  # the IMP figures and the per-layer ones
    assert (path.parent / "layer_density_vs_level.png").exists()
    experiment = load_experiment(experiments[0])
    assert experiment.hash in html and "lenet_300_100" in html
    assert "<details>" in html and "random_reinit" in html and "early-stop iteration" in html


def test_report_regenerates_missing_results(experiments: list[Path]) -> None:
    (experiments[1] / "results.json").unlink()
    write_report(experiments[1])
    assert (experiments[1] / "results.json").exists()


def test_results_are_regenerated_under_the_experiment_lock(experiments: list[Path]) -> None:
    """load_experiment writes a missing results.json only holding the experiment's lock; while another process
    holds it (an experiment still running), it computes the results without writing them."""
    from lottery.store import exclusive

    results = experiments[1] / "results.json"
    expected = load_experiment(experiments[1]).results
    results.unlink()
    with exclusive(experiments[1]):  # as run_experiment holds it
        assert load_experiment(experiments[1]).results == expected
        assert not results.exists()
    assert load_experiment(experiments[1]).results == expected
    assert results.exists()


def test_accuracy_figure_axes(experiments: list[Path]) -> None:
    summary = load_experiment(experiments[0]).results["summary"]
    dense = next(r for r in summary if r["kind"] == "dense")
    figure = figures.accuracy_vs_remaining(summary)
    metrics = ("final_test_accuracy", "early_stop_test_accuracy")
    for ax, metric in zip(figure.axes[:2], metrics):
        assert ax.get_xscale() == "log"
        assert ax.xaxis_inverted()
        left, right = ax.get_xlim()
        assert left > right and left >= 100
        lines = [line for line in ax.get_lines() if line.get_label().startswith("dense")]
        assert lines, "no dense reference line"
        assert list(lines[0].get_ydata()) == pytest.approx([100 * dense[metric]["mean"]] * 2)
    legend_labels = {t.get_text() for t in figure.legends[0].get_texts()}
    assert {"IMP", "random reinit", "dense (100%)"} <= legend_labels


def test_builders_without_data_return_nothing(tmp_path: Path) -> None:
    assert figures.imp_figures({"runs": [], "summary": []}, tmp_path) == []


def test_registered_builder_is_included(experiments: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def extra(results: dict, experiment_dir: Path) -> figures.Figures:
        figure = Figure()
        figure.subplots().plot([0, 1], [len(results["runs"]), 0])
        return [("extra_figure", figure)]

    monkeypatch.setattr(figures, "_BUILDERS", dict(figures._BUILDERS))
    figures.register(extra)
    path = write_report(experiments[0])
    assert (path.parent / "extra_figure.png").exists()
    assert 'id="extra_figure"' in path.read_text()


def test_compare_overlays_experiments(experiments: list[Path], tmp_path: Path) -> None:
    path = write_comparison(experiments, tmp_path / "cmp", None)
    assert path == tmp_path / "cmp" / "report.html"
    check_files(path.parent)
    html = path.read_text()
    check_self_contained(html)
    assert "training.lr=0.0012" in html and "training.lr=0.005" in html
    with pytest.raises(UserError, match="label"):
        write_comparison(experiments, tmp_path / "cmp2", ["only one"])


def test_cli_report_and_compare(experiments: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(experiments[0])]) == 0
    assert capsys.readouterr().out.strip() == str(experiments[0] / "report")
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, experiments), "--out", str(out), "--label", "low", "--label", "high"]) == 0
    assert "low" in (out / "report.html").read_text()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_cli_rejects_non_experiment(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for target in (tmp_path, tmp_path / "missing"):
        assert main([command, str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lottery: error:") and err.count("\n") == 1
