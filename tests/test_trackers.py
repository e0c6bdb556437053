"""Experiment trackers (`--log`): TensorBoard event files, W&B offline runs and an MLflow file store hold the runs'
metrics at their iterations and the experiment's curve and figures; logging changes no artifact."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from conftest import run_tiny, tiny_spec
from lottery import loggers
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.experiments.run import run_experiment
from lottery.store.layout import walk
from lottery.training import Runtime

STABILITY = (
    "imp.levels=1",
    "imp.rewind=['20it']",
    "stability.rewind=['20it']",
    "stability.levels=[1]",
    "stability.controls=[]",
    "stability.interpolation_points=3",
    "stability.train_subset=100",
    "stability.batchnorm_batches=1",
)


def metrics_rows(run_dir: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def dense_only(root: Path, log: tuple[str, ...]) -> Path:
    spec = tiny_spec()
    experiment, _ = run_experiment(spec, "lenet_300_100", root, Runtime(progress=False, log=log), dense_only=True)
    return experiment.path


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip(
        "tensorboard", reason="the tensorboard extra is not installed: pip install 'lottery[tensorboard]'"
    )
    run, _ = run_tiny(tmp_path_factory.mktemp("tb"), *STABILITY, log=("tensorboard",))
    return run.path


def accumulator(directory: Path):  # noqa: ANN201
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("run", ["replicate_0/level_0", "replicate_0/rewind_20it/level_1"])
def test_tensorboard_events_hold_the_metrics(tensorboard_run: Path, run: str) -> None:
    events = accumulator(tensorboard_run / "tensorboard" / run)
    assert {"train/loss", "val/loss", "val/accuracy", "test/loss", "test/accuracy", "lr"} <= set(
        events.Tags()["scalars"]
    )
    for split in ("val", "test"):
        expected = metrics_rows(tensorboard_run / run, split)
        logged = events.Scalars(f"{split}/accuracy")
        steps = [0, 20, 40, 60] if run.endswith("level_0") else [20, 40, 60]
        assert [e.step for e in logged] == [r["iteration"] for r in expected] == steps
        assert [e.value for e in logged] == pytest.approx([r["accuracy"] for r in expected], abs=1e-6)


def test_tensorboard_summary_holds_curve_and_figures(tensorboard_run: Path) -> None:
    events = accumulator(tensorboard_run / "tensorboard" / "summary")
    results = json.loads((tensorboard_run / "results.json").read_text())
    imp = next(r for r in results["summary"] if r["kind"] == "imp")
    curve = events.Scalars("imp_curve/imp_k20/test_accuracy")
    assert [(e.step, e.value) for e in curve] == [(1, pytest.approx(imp["final_test_accuracy"]["mean"], abs=1e-6))]
    images = set(events.Tags()["images"])
    assert {"accuracy_vs_remaining", "error_barrier_vs_rewind", "interpolation_curves"} <= images
    assert {"imp_curve/text_summary", "stability/text_summary"} <= set(events.Tags()["tensors"])


def test_trackers_change_no_artifact(tensorboard_run: Path, tmp_path: Path) -> None:
    plain, _ = run_tiny(tmp_path, *STABILITY)
    assert plain.path.name == tensorboard_run.name  # the same spec hash
    files = sorted(p.relative_to(plain.path) for p in walk(plain.path, "*.safetensors"))
    assert files and files == sorted(p.relative_to(tensorboard_run) for p in walk(tensorboard_run, "*.safetensors"))
    for name in files:
        assert (plain.path / name).read_bytes() == (tensorboard_run / name).read_bytes(), name


def read_wandb_records(path: Path) -> list:
    """The records of a W&B `.wandb` file (a LevelDB-style log of `wandb.proto` Records)."""
    from wandb.proto import wandb_internal_pb2

    data, block, records, parts, pos = path.read_bytes(), 32768, [], [], 7  # a 7-byte file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, size, kind = struct.unpack("<IHB", data[pos : pos + 7])
        parts.append(data[pos + 7 : pos + 7 + size])
        pos += 7 + size
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
        elif kind == 0:
            parts = []
    return records


def finished_records(path: Path, wait: float = 60.0) -> list:
    """The records of a finished run's file: W&B's service may still be writing it when `finish()` returns (seen on
    a loaded machine), so wait for the run's `exit` record."""
    deadline = time.monotonic() + wait
    while True:
        records = read_wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_wandb_offline_writes_the_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed: pip install 'lottery[wandb]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    experiment = dense_only(tmp_path, ("wandb",))
    runs = {}
    for path in (experiment / "wandb").glob("offline-run-*/run-*.wandb"):
        records = finished_records(path)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        history = [
            {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in records
            if r.HasField("history")
        ]
        runs[run.display_name] = (run, history)
    assert set(runs) == {"replicate_0/level_0", "summary"}
    run, history = runs["replicate_0/level_0"]
    assert run.run_group == experiment.name and run.job_type == "dense" and "dense" in run.tags
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["kind"] == "dense" and config["run"] == "replicate_0/level_0"
    expected = metrics_rows(experiment / "replicate_0/level_0", "test")
    logged = [(h["_step"], h["test/accuracy"]) for h in history if "test/accuracy" in h]
    assert logged == [(r["iteration"], pytest.approx(r["accuracy"])) for r in expected]


def test_mlflow_file_store_holds_the_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install 'lottery[mlflow]'")
    from mlflow.tracking import MlflowClient

    from lottery.loggers.mlflow import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    experiment = dense_only(tmp_path, ("mlflow",))
    assert (experiment / "mlruns").is_dir()
    client = MlflowClient(tracking_uri(experiment))
    found = client.get_experiment_by_name(experiment.name)
    runs = {r.info.run_name: r for r in client.search_runs([found.experiment_id])}
    assert set(runs) == {"replicate_0/level_0", "summary"}
    dense = runs["replicate_0/level_0"]
    assert dense.data.tags["kind"] == "dense" and dense.data.tags["density"] == "1.0"
    history = client.get_metric_history(dense.info.run_id, "test/accuracy")
    expected = metrics_rows(experiment / "replicate_0/level_0", "test")
    assert sorted((m.step, m.value) for m in history) == [
        (r["iteration"], pytest.approx(r["accuracy"])) for r in expected
    ]
    artifacts = {a.path for a in client.list_artifacts(runs["summary"].info.run_id)}
    assert {"imp_curve.json", "test_accuracy_during_training.png"} <= artifacts


def test_bad_tracker_names_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--preset", "lenet_300_100", "--set", "dataset.name=synthetic", "--out", str(tmp_path)]
    assert main([*base, "--log", "tensorbord"]) == 2
    assert "unknown tracker 'tensorbord'; did you mean 'tensorboard'?" in capsys.readouterr().err
    monkeypatch.setenv("LOTTERY_LOG", "comet")
    assert main(base) == 2
    assert "unknown tracker 'comet'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install 'lottery\[mlflow\]'"):
        loggers.parse("mlflow")
    assert loggers.parse(" ") == ()
