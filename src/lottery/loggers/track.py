"""Training runs -> trackers: `track_evaluation` takes each evaluation the training loop emits (`on_evaluate`:
`lottery.events.Evaluation`, from `Session.evaluate`; `lottery.loggers.subscriber` subscribes it). It opens the
run's loggers on first use (one tracked run per training run, tagged with the run's provenance), logs `train/loss`,
`val/loss`, `val/accuracy`, `test/loss`, `test/accuracy` and `lr` at the iteration, and closes them when the run
ends (or diverges, or the process exits)."""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lottery.loggers import Logger, open_logger

if TYPE_CHECKING:
    from lottery.events import Evaluation

_OPEN: dict[str, list[Logger]] = {}  # run directory -> its open loggers (runs trained together log in turns)


def experiment_of(run_dir: Path, relative: str | None) -> Path:
    """The experiment directory of a run whose path relative to it is `relative` (the run itself if unknown)."""
    if not relative:
        return run_dir
    depth = len(Path(relative).parts)
    return run_dir.parents[depth - 1] if 0 < depth <= len(run_dir.parents) else run_dir


def metrics_of(rows: list[dict[str, Any]]) -> dict[str, float]:
    """`<split>/<loss|accuracy>` and `lr` of one evaluation's rows (a diverged loss is left out)."""
    metrics: dict[str, float] = {}
    for row in rows:
        for key in ("loss", "accuracy"):
            if row.get(key) is not None:
                metrics[f"{row['split']}/{key}"] = float(row[key])
        if row.get("lr") is not None:
            metrics["lr"] = float(row["lr"])
    return metrics


def track_evaluation(event: Evaluation) -> None:
    """Log one evaluation of a run to the trackers it chose (`Evaluation.log`; none: nothing happens)."""
    from lottery import collective

    rows = event.rows
    if not event.log or not rows or not collective.is_main():
        return
    key = str(event.run)
    if key not in _OPEN:
        tags = dict(event.tags)
        experiment = experiment_of(event.run, tags.get("run"))
        run = tags.get("run") or event.run.name
        _OPEN[key] = [open_logger(name, experiment, run, tags, event.log_strict) for name in event.log]
    step = rows[0]["iteration"]
    metrics = metrics_of(rows)
    for logger in _OPEN[key]:
        logger.log_metrics(metrics, step)
    if step >= event.end or any(row.get("diverged") for row in rows):
        close(key)


def close(key: str | None = None) -> None:
    """Close the loggers of one run (by directory), or of every run."""
    for k in [key] if key is not None else list(_OPEN):
        for logger in _OPEN.pop(k, []):
            logger.close()


atexit.register(close)
