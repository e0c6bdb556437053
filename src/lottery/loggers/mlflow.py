"""MLflow: one MLflow experiment per lottery experiment (named by its hash), one MLflow run per training run,
tagged with the run's tags. The tracking URI is `$MLFLOW_TRACKING_URI`, else a local file store in
`<experiment>/mlruns` (`mlflow ui --backend-store-uri runs/<hash>/mlruns`). A request to a tracking server waits at
most `lottery.loggers.TIMEOUT` seconds and is retried `RETRIES` times (unless `$MLFLOW_HTTP_REQUEST_TIMEOUT`,
`$MLFLOW_HTTP_REQUEST_MAX_RETRIES` say otherwise): MLflow's own defaults wait about 4 minutes for a dead server."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lottery import loggers


def tracking_uri(experiment_dir: Path) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks file stores to opt in
    return (experiment_dir / "mlruns").resolve().as_uri()


class MlflowLogger:
    def __init__(self, experiment_dir: Path, run: str, tags: Mapping[str, str]) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(loggers.TIMEOUT)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(loggers.RETRIES))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri(experiment_dir))
        name = tags.get("experiment", experiment_dir.name)
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(name)
            except Exception:  # noqa: BLE001  (created meanwhile by another process)
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = found.experiment_id
        self.run_id = self.client.create_run(experiment_id, tags=dict(tags), run_name=run).info.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_figure(self, name: str, figure: Figure) -> None:
        self.client.log_figure(self.run_id, figure, f"{name}.png")

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.client.log_dict(self.run_id, {"columns": list(columns), "data": [list(r) for r in rows]}, f"{name}.json")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def open_logger(experiment_dir: Path, run: str, tags: Mapping[str, str]) -> MlflowLogger:
    return MlflowLogger(experiment_dir, run, tags)
