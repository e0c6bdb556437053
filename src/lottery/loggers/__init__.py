"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, behind one small protocol.

A `Logger` is one tracked run: it is opened with the run's tags (experiment, run, kind, level, density, rewind
iteration, replicate, control seed, copy: `lottery.training.provenance`), takes metrics at a step (the training
iteration), figures and tables, and is closed. Each tracker is an optional extra (`pip install
'lottery[tensorboard]'`, `[wandb]`, `[mlflow]`), chosen with `--log tensorboard,wandb` (or `$LOTTERY_LOG`, or
`Runtime.log`); none is on by default. Trackers only read what the engine computes: they never change results,
artifacts or hashes. Add one with a module here that defines `open_logger(experiment_dir, run, tags) -> Logger`
and an entry in `TRACKERS`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lottery.errors import UserError, unknown_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# tracker name -> (module in this package, the package it needs, the extra that installs it)
TRACKERS = {
    "tensorboard": ("lottery.loggers.tensorboard", "tensorboard", "tensorboard"),
    "wandb": ("lottery.loggers.wandb", "wandb", "wandb"),
    "mlflow": ("lottery.loggers.mlflow", "mlflow", "mlflow"),
}


class Logger(Protocol):
    """One tracked run."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars (e.g. `test/accuracy`) at a step (the training iteration)."""

    def log_figure(self, name: str, figure: Figure) -> None:
        """A matplotlib figure."""

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A table: column names and rows of values."""

    def close(self) -> None:
        """Flush and finish the run."""


def parse(text: str | None) -> tuple[str, ...]:
    """'tensorboard,wandb' -> ('tensorboard', 'wandb'); UserError for an unknown tracker or one not installed."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    for name in names:
        check(name)
    return names


def check(name: str) -> None:
    """UserError unless `name` is a tracker whose package is installed."""
    if name not in TRACKERS:
        raise unknown_name("tracker", name, TRACKERS)
    _, package, extra = TRACKERS[name]
    if importlib.util.find_spec(package) is None:
        raise UserError(f"--log {name} needs the '{package}' package: pip install 'lottery[{extra}]'")


def open_logger(name: str, experiment_dir: Path, run: str, tags: Mapping[str, str]) -> Logger:
    """Open tracker `name`'s run `run` (a path relative to the experiment, or 'summary') with `tags`."""
    check(name)
    module = importlib.import_module(TRACKERS[name][0])
    return module.open_logger(Path(experiment_dir), run, dict(tags))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table as GitHub markdown (TensorBoard's text plugin renders it)."""
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
