"""Runtime options that change how, not what, the loop computes: torch.compile and channels_last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_tiny
from lottery.store.layout import walk


def finals(experiment_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {str(p.relative_to(experiment_dir)): load_file(p) for p in sorted(walk(experiment_dir, "final.safetensors"))}


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys() and a
    for run in a:
        for name in a[run]:
            assert torch.allclose(a[run][name].float(), b[run][name].float(), atol=atol), (run, name)


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    overrides = ("imp.levels=1", "training.training_steps=20it", "training.eval_every=10it")
    eager, _ = run_tiny(tmp_path / "eager", *overrides)
    compiled, results = run_tiny(tmp_path / "compiled", *overrides, compile=True)
    assert_close(finals(eager.path), finals(compiled.path), atol=1e-5)
    assert all(not r["diverged"] for r in results["runs"])


@pytest.mark.parametrize("enabled", [True, False])
def test_channels_last_convnet_matches_default(tmp_path: Path, enabled: bool) -> None:
    overrides = (
        "model.name=conv2",
        "model.width=8",
        "imp.levels=1",
        "training.training_steps=20it",
        "training.optimizer=sgd",
        "training.lr=0.05",
        "training.momentum=0.9",
    )  # (Adam would amplify rounding differences)
    default, _ = run_tiny(tmp_path / "default", *overrides)
    other, _ = run_tiny(tmp_path / "other", *overrides, channels_last=enabled)
    dense = "replicate_0/level_0/final.safetensors"  # (a last-bit difference may move level 1's pruning boundary)
    assert_close({dense: finals(default.path)[dense]}, {dense: finals(other.path)[dense]}, atol=1e-5)
    recipe = json.loads((other.path / "replicate_0/level_0").resolve().joinpath("key.json").read_text())
    assert recipe["arithmetic"].get("channels_last", False) is enabled  # another arithmetic: another network
    weights = finals(other.path)["replicate_0/rewind_0it/level_1/final.safetensors"]
    mask = (other / "replicate_0" / "rewind_0it" / "level_1").read_tensors("mask.safetensors")
    assert all(bool((weights[k][~mask[k]] == 0).all()) for k in mask)  # masks hold in either layout
