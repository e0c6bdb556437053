"""Shared fixtures: tiny experiments on synthetic data, run through the public Python API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lottery.experiments.run import run_experiment
from lottery.spec import ExperimentSpec, resolve
from lottery.store import RunDir
from lottery.training import Runtime

TINY = [
    "dataset.name=synthetic",
    "dataset.validation_size=200",
    "model.name=lenet_40_20",
    "training.batch_size=50",
    "training.training_steps=60it",
    "training.eval_every=20it",
]

torch.set_num_threads(1)  # deterministic and fair on the 2-core CI machine


def tiny_spec(*overrides: str, preset: str | None = "lenet_300_100") -> ExperimentSpec:
    spec, _ = resolve(preset=preset, overrides=[*TINY, *overrides])
    return spec


def run_tiny(root: Path, *overrides: str, **runtime: object) -> tuple[RunDir, dict]:
    spec = tiny_spec(*overrides)
    return run_experiment(spec, "lenet_300_100", root, Runtime(progress=False, **runtime))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "runs"
