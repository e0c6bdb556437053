"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, behind one small protocol.

A `Logger` is one tracked run: it is opened with the run's tags (experiment, run, kind, level, density, rewind
iteration, replicate, control seed, copy: `lottery.training.provenance`), takes metrics at a step (the training
iteration), figures and tables, and is closed. Each tracker is an optional extra (`pip install
'lottery[tensorboard]'`, `[wandb]`, `[mlflow]`), chosen with `--log tensorboard,wandb` (or `$LOTTERY_LOG`, or
`Runtime.log`); none is on by default. Trackers only read what the engine computes: they never change results,
artifacts or hashes. Add one with a module here that defines `open_logger(experiment_dir, run, tags) -> Logger`
and an entry in `TRACKERS`.

A tracker never kills a run: one that fails to start or to log (a broken install, no W&B API key, an unreachable
server) is turned off for the rest of the process with one warning line on stderr, and training goes on;
`--log-strict` (`Runtime.log_strict`) stops instead, with one error line (exit 2). Waits on a tracker's server are
bounded by `TIMEOUT` seconds (W&B's `init_timeout`; MLflow's request timeout, with `RETRIES` retries), unless
`$WANDB_INIT_TIMEOUT` or `$MLFLOW_HTTP_REQUEST_TIMEOUT` / `$MLFLOW_HTTP_REQUEST_MAX_RETRIES` say otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
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


TIMEOUT = 20.0  # seconds a tracker waits for its server (W&B: to start a run; MLflow: each request)
RETRIES = 2  # MLflow's retries of a failed request (its own default, 7 with backoff, waits about 4 minutes)
_disabled: dict[str, str] = {}  # tracker -> why it is off in this process (it failed once: said once)


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


def open_logger(name: str, experiment_dir: Path, run: str, tags: Mapping[str, str], strict: bool = False) -> Logger:
    """Open tracker `name`'s run `run` (a path relative to the experiment, or 'summary') with `tags`, guarded: a
    failure turns the tracker off with a warning (`strict`: raises a UserError)."""
    check(name)
    logger = Guarded(name, strict)

    def start() -> Logger:
        return importlib.import_module(TRACKERS[name][0]).open_logger(Path(experiment_dir), run, dict(tags))

    logger.inner = logger.call("start", start)
    return logger


class Guarded:
    """A tracker's logger whose failures never reach the run: the first turns the tracker off for this process
    with one warning line (later calls do nothing); with `strict` it is a UserError (one line, exit 2)."""

    def __init__(self, name: str, strict: bool) -> None:
        self.name, self.strict = name, strict
        self.inner: Logger | None = None

    def call(self, what: str, action: Callable[[], Any]) -> Any:
        if self.name in _disabled:
            return None
        try:
            return action()
        except Exception as error:  # noqa: BLE001  (whatever a tracker raises: its package, its server, its files)
            why = (str(error).strip().splitlines() or [""])[0]
            message = f"--log {self.name}: {what} failed ({type(error).__name__}: {why})"
            if self.strict:
                raise UserError(f"{message}; without --log-strict the run goes on without {self.name}") from None
            _disabled[self.name] = message
            print(f"lottery: warning: {message}; {self.name} is off for the rest of this process", file=sys.stderr)
            return None

    def _forward(self, what: str, method: str, *args: Any) -> None:
        if self.inner is not None:
            self.call(what, lambda: getattr(self.inner, method)(*args))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._forward("logging metrics", "log_metrics", metrics, step)

    def log_figure(self, name: str, figure: Figure) -> None:
        self._forward(f"logging figure {name}", "log_figure", name, figure)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._forward(f"logging table {name}", "log_table", name, columns, rows)

    @property
    def takes_histograms(self) -> bool:
        """Whether the tracker logs histograms (TensorBoard)."""
        return hasattr(self.inner, "log_histogram")

    def log_histogram(self, name: str, values: Any, step: int) -> None:
        if self.takes_histograms:
            self._forward(f"logging histogram {name}", "log_histogram", name, values, step)

    def close(self) -> None:
        self._forward("finishing the run", "close")
        self.inner = None


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table as GitHub markdown (TensorBoard's text plugin renders it)."""
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
