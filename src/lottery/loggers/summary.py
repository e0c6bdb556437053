"""An experiment's results -> trackers, at the end of `lottery run` (and of each experiment of a sweep): one
tracked run named `summary` holding the IMP curve (test accuracy against density, per kind and rewind point)
as a table and as scalars over levels, the stability pairs as a table, and every figure of the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lottery.loggers import open_logger

CURVE_COLUMNS = (
    "kind",
    "rewind_iteration",
    "level",
    "percent_remaining",
    "final_test_accuracy",
    "early_stop_test_accuracy",
    "early_stop_iteration",
    "runs",
    "diverged",
)


def _mean(stats: dict[str, float] | None) -> float | None:
    return None if stats is None else stats["mean"]


def curve_rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per (kind, rewind point, level) of `results.json`'s summary (means over replicates and seeds)."""
    rows = []
    for r in results.get("summary", []):
        rows.append(
            [
                r["kind"],
                r["rewind_iteration"],
                r["level"],
                round(100 * r["density"], 3),
                _mean(r["final_test_accuracy"]),
                _mean(r["early_stop_test_accuracy"]),
                _mean(r["early_stop_iteration"]),
                r["runs"],
                r["diverged"],
            ]
        )
    return rows


def curve_scalars(results: dict[str, Any]) -> dict[int, dict[str, float]]:
    """level -> `imp_curve/<kind>[_k<k>]/<test_accuracy|percent_remaining>` (the dense network is level 0 of
    every kind's curve)."""
    by_level: dict[int, dict[str, float]] = {}
    for r in results.get("summary", []):
        series = r["kind"] if r["rewind_iteration"] is None else f"{r['kind']}_k{r['rewind_iteration']}"
        scalars = by_level.setdefault(r["level"], {})
        scalars[f"imp_curve/{series}/percent_remaining"] = 100 * r["density"]
        if r["final_test_accuracy"] is not None:
            scalars[f"imp_curve/{series}/test_accuracy"] = r["final_test_accuracy"]["mean"]
    return by_level


def log_experiment(names: tuple[str, ...], experiment_dir: Path, results: dict[str, Any], strict: bool = False) -> None:
    """Log the experiment's curve, stability table and report figures to each tracker in `names` (`strict`: a
    tracker's failure is a UserError, not a warning)."""
    if not names:
        return
    from lottery.loggers.levels import kept_weights, level_scalars
    from lottery.measures import pair_fields
    from lottery.reports.figures import build_figures
    from lottery.results.pairs import pair_rows

    experiment_dir = Path(experiment_dir)
    tags = {"experiment": results.get("experiment", experiment_dir.name), "run": "summary", "kind": "summary"}
    tags["spec_hash"] = tags["experiment"]
    figures = build_figures(results, experiment_dir)
    points = results["stability"]["points"] if "stability" in results else []
    columns = pair_fields(points)  # stability.csv's: every measure of lottery.measures, plugins' too
    stability = [[p.get(c) for c in columns] for p in pair_rows(points)]
    for name in names:
        logger = open_logger(name, experiment_dir, "summary", tags, strict)
        try:
            per_level = curve_scalars(results)
            for level, scalars in level_scalars(results).items():  # density, level, barriers, distances
                per_level.setdefault(level, {}).update(scalars)
            for level, scalars in sorted(per_level.items()):  # steps first: W&B wants them increasing
                logger.log_metrics(scalars, level)
            if logger.takes_histograms:  # TensorBoard: the weights each level keeps
                for tag, level, values in kept_weights(experiment_dir, results):
                    logger.log_histogram(tag, values, level)
            logger.log_table("imp_curve", CURVE_COLUMNS, curve_rows(results))
            if stability:
                logger.log_table("stability", columns, stability)
            for figure_name, figure in figures:
                logger.log_figure(figure_name, figure)
        finally:
            logger.close()
