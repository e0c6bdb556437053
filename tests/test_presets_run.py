"""Every preset trains for 2 iterations on synthetic data of its dataset's shape, through the CLI path."""

from __future__ import annotations

from pathlib import Path

import pytest

from lottery.experiments.run import run_experiment
from lottery.presets import presets
from lottery.spec import resolve
from lottery.training import Runtime

SYNTHETIC = {"fashion_mnist": "synthetic", "mnist": "synthetic", "cifar10": "synthetic_cifar10",
             "cifar100": "synthetic_cifar100"}  # fmt: skip


@pytest.mark.parametrize("name", presets.names())
def test_preset_runs_two_iterations(name: str, tmp_path: Path) -> None:
    preset = presets.get(name)
    dataset = preset.settings.get("dataset", {}).get("name", "fashion_mnist")
    spec, _ = resolve(
        preset=name,
        overrides=[
            f"dataset.name={SYNTHETIC[dataset]}",
            "dataset.validation_size=0",
            "training.training_steps=2it",
            "training.warmup_steps=0it",
            "training.milestone_steps=[]",
            "imp.rewind=1it",
            "stability.rewind=[]",
            "stability.levels=[0]",
            "controls.kinds=[]",
            f"imp.levels={min(1, preset.settings.get('imp', {}).get('levels', 1))}",
        ],
    )
    experiment, results = run_experiment(spec, name, tmp_path, Runtime(progress=False))
    dense = results["runs"][0]
    assert dense["kind"] == "dense" and not dense["diverged"]
    assert (experiment.path / "replicate_0" / "level_0" / "final.safetensors").exists()
