"""Training runs -> trackers: `track_evaluation` is the training loop's hook, called with each evaluation's
metrics rows (`Session.evaluate`). It opens the run's loggers on first use (one tracked run per training run,
tagged with the run's provenance), logs `train/loss`, `val/loss`, `val/accuracy`, `test/loss`, `test/accuracy`
and `lr` at the iteration, and closes them when the run ends (or diverges, or the process exits)."""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lottery.loggers import Logger, open_logger

if TYPE_CHECKING:
    from lottery.training.loop import Session

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


def track_evaluation(session: Session, rows: list[dict[str, Any]]) -> None:
    """Log one evaluation of `session` to the trackers of its runtime (`Runtime.log`; none: nothing happens)."""
    from lottery import collective
    from lottery.training.provenance import run_metadata

    names = getattr(session.runtime, "log", ())
    if not names or not rows or not collective.is_main():
        return
    key = str(session.run.path)
    if key not in _OPEN:
        tags = run_metadata(session.job)
        experiment = experiment_of(session.run.path, tags.get("run"))
        run = tags.get("run") or session.run.path.name
        strict = getattr(session.runtime, "log_strict", False)
        _OPEN[key] = [open_logger(name, experiment, run, tags, strict) for name in names]
    step = rows[0]["iteration"]
    metrics = metrics_of(rows)
    for logger in _OPEN[key]:
        logger.log_metrics(metrics, step)
    if step >= session.job.schedule.end or any(row.get("diverged") for row in rows):
        close(key)


def close(key: str | None = None) -> None:
    """Close the loggers of one run (by directory), or of every run."""
    for k in [key] if key is not None else list(_OPEN):
        for logger in _OPEN.pop(k, []):
            logger.close()


atexit.register(close)
