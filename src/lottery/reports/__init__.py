"""Reports: figures (PNG and SVG) and a self-contained HTML page for one experiment, or several overlaid.

Extend with a module `lottery/reports/<topic>_figures.py` that uses `@register` (or `@register_comparison`)
from `lottery.reports.figures` and, for HTML fragments, `@register_section` from `lottery.reports.html`.
"""

from __future__ import annotations

from pathlib import Path

from lottery.errors import UserError
from lottery.reports.figures import build_comparison, build_figures, register, register_comparison
from lottery.reports.html import register_section, render_comparison, render_report
from lottery.reports.load import Experiment, label_experiments, load_experiment, reading
from lottery.reports.plot import save_figures
from lottery.store import atomic

__all__ = [
    "Experiment",
    "load_experiment",
    "register",
    "register_comparison",
    "register_section",
    "write_comparison",
    "write_report",
]


def write_report(experiment_dir: Path) -> Path:
    """Write `<experiment>/report/report.html` and every figure as PNG and SVG; returns the HTML path."""
    experiment = load_experiment(Path(experiment_dir))
    out = experiment.path / "report"
    with reading([experiment]):  # a malformed results.json: one line, before any file is written
        built = build_figures(experiment.results, experiment.path)
        render_report(experiment, {})
    path = out / "report.html"
    atomic.write_text(path, render_report(experiment, save_figures(built, out)))
    return path


def write_comparison(experiment_dirs: list[Path], out_dir: Path, labels: list[str] | None = None) -> Path:
    """Overlay the figures of several experiments in `out_dir` (report.html, PNG, SVG); returns the HTML path.
    Experiments are labelled by `labels`, else by the settings in which their specs differ."""
    if not experiment_dirs:
        raise UserError("compare needs at least one experiment directory")
    experiments = [load_experiment(Path(d)) for d in experiment_dirs]
    label_experiments(experiments, labels)
    out = Path(out_dir)
    with reading(experiments):
        built = build_comparison(experiments)
        render_comparison(experiments, {})
    path = out / "report.html"
    atomic.write_text(path, render_comparison(experiments, save_figures(built, out)))
    return path
