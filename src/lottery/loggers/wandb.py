"""Weights & Biases: one W&B run per training run, grouped by experiment, with the run's tags as its config.
Files go to `<experiment>/wandb/`; the project is `$WANDB_PROJECT` (default `lottery`), the mode W&B's own
setting (`WANDB_MODE=offline` to log without an account; `wandb sync` uploads later). Starting a run waits at
most `$WANDB_INIT_TIMEOUT`, else `lottery.loggers.TIMEOUT`, seconds for the server."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lottery import loggers


class WandbLogger:
    def __init__(self, experiment_dir: Path, run: str, tags: Mapping[str, str]) -> None:
        import wandb

        self.wandb = wandb
        experiment_dir.mkdir(parents=True, exist_ok=True)
        labels = [tags["kind"]] if "kind" in tags else []
        labels += [f"level_{tags['level']}"] if "level" in tags else []  # a wandb tag, not a path
        self.run = wandb.init(
            dir=str(experiment_dir),
            project=os.environ.get("WANDB_PROJECT", "lottery"),
            group=tags.get("experiment"),
            job_type=tags.get("kind"),
            name=run,
            config=dict(tags),
            tags=labels,
            reinit="create_new",  # several runs open at once (runs trained together)
            settings=wandb.Settings(  # the console is the whole process, not one run
                silent=True, console="off", init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", loggers.TIMEOUT))
            ),
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_figure(self, name: str, figure: Figure) -> None:
        from PIL import Image  # (matplotlib's own dependency) W&B's figure path needs pyplot; ours stays off it

        from lottery.reports.plot import figure_bytes

        self.run.log({name: self.wandb.Image(Image.open(io.BytesIO(figure_bytes(figure, "png"))))})

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.run.log({name: self.wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def close(self) -> None:
        self.run.finish()


def open_logger(experiment_dir: Path, run: str, tags: Mapping[str, str]) -> WandbLogger:
    return WandbLogger(experiment_dir, run, tags)
