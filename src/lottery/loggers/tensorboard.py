"""TensorBoard, through `torch.utils.tensorboard`: one log directory per run, `<experiment>/tensorboard/<run>`,
so `tensorboard --logdir runs/<hash>/tensorboard` shows every run of the experiment side by side. The `summary`
run also gets scalars over IMP levels (density, level, error barriers, distances; step = level) and histograms of
the weights each level keeps (`lottery.loggers.levels`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from lottery.loggers import markdown_table


class TensorBoardLogger:
    def __init__(self, directory: Path, tags: Mapping[str, str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory))
        self.writer.add_text("tags", markdown_table(("tag", "value"), sorted(tags.items())), 0)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_histogram(self, name: str, values: torch.Tensor, step: int) -> None:
        """A histogram of `values` at `step` (the summary logs the weights each IMP level keeps, step = level)."""
        self.writer.add_histogram(name, values.detach().cpu().float(), step)

    def log_figure(self, name: str, figure: Figure) -> None:
        self.writer.add_figure(name, figure, close=False)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.writer.add_text(name, markdown_table(columns, rows), 0)

    def close(self) -> None:
        self.writer.close()


def open_logger(experiment_dir: Path, run: str, tags: Mapping[str, str]) -> TensorBoardLogger:
    return TensorBoardLogger(experiment_dir / "tensorboard" / run, tags)
