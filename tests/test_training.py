"""The training loop: schedules, LeNet, masks that hold, checkpoint + resume to bit-identical weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_tiny, tiny_spec
from lottery.data.batches import BatchStream
from lottery.models import build
from lottery.pruning import Mask
from lottery.spec import ModelSpec
from lottery.store import RunDir
from lottery.store.layout import walk
from lottery.training import lr_at


def test_warmup_and_milestones_by_hand() -> None:
    # base 0.1, warmup 4 iterations: 0.025, 0.05, 0.075, 0.1; x0.1 from iteration 6, x0.01 from 8.
    got = [lr_at(t, 0.1, 4, [6, 8], 0.1) for t in range(10)]
    expected = [0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert got == pytest.approx(expected)
    assert lr_at(0, 0.3, 0, [], 0.1) == 0.3


def test_lenet_shapes_and_init_seed() -> None:
    model = build(ModelSpec(name="lenet_300_100"), (1, 28, 28), 10, init_seed=0)
    assert model(torch.zeros(7, 1, 28, 28)).shape == (7, 10)
    assert [tuple(p.shape) for p in model.parameters()] == [(300, 784), (300,), (100, 300), (100,), (10, 100), (10,)]
    assert sum(p.numel() for p in model.parameters()) == 266_610
    assert model.prunable_names() == ["hidden.0.weight", "hidden.1.weight", "out.weight"]
    assert model.layer_kinds()["out.weight"] == "output"
    again = build(ModelSpec(name="lenet_300_100"), (1, 28, 28), 10, init_seed=0)
    other = build(ModelSpec(name="lenet_300_100"), (1, 28, 28), 10, init_seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(model.out.weight, other.out.weight)
    wide = build(ModelSpec(name="lenet_300_100", width=600), (3, 32, 32), 100, init_seed=0)
    assert wide(torch.zeros(2, 3, 32, 32)).shape == (2, 100) and wide.hidden[1].out_features == 200


def test_run_layout_and_artifacts_load_with_plain_pytorch(store: Path) -> None:
    from safetensors.torch import load_file

    experiment, results = run_tiny(store)
    level0 = experiment.path / "replicate_0" / "level_0"
    for name in ("start", "final", "mask"):
        tensors = load_file(level0 / f"{name}.safetensors")
        model = build(ModelSpec(name="lenet_40_20"), (1, 28, 28), 10, 0)
        if name == "mask":
            assert set(tensors) == set(model.prunable_names()) and all(t.all() for t in tensors.values())
        else:
            model.load_state_dict(tensors)  # keyed exactly by state_dict names
    rows = [r for r in (level0 / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 2 + 3  # val + test at 0, 20, 40, 60 and train loss at 20, 40, 60
    assert {"spec.json", "spec.toml", "results.json", "results.csv", "manifest.json"} <= {
        p.name for p in experiment.path.iterdir()
    }
    assert results["runs"][0]["kind"] == "dense" and results["runs"][0]["final_test_accuracy"] > 0.5


def test_interrupted_run_resumes_bit_identical(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ("imp.levels=1", "training.optimizer=sgd", "training.momentum=0.9", "training.lr=0.05")
    reference, _ = run_tiny(tmp_path / "reference", *overrides)

    original = BatchStream.batch
    calls = {"n": 0}

    def crash_once(self: BatchStream, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 37:  # mid-way through the dense run, after the checkpoint at iteration 30
            raise KeyboardInterrupt
        return original(self, iteration)

    monkeypatch.setattr(BatchStream, "batch", crash_once)
    with pytest.raises(KeyboardInterrupt):
        run_tiny(store, *overrides, checkpoint_every=15)
    level0 = RunDir(store / reference.path.name / "replicate_0" / "level_0")
    assert level0.exists("checkpoint.pt") and not level0.exists("final.safetensors")
    assert level0.read_torch("checkpoint.pt")["iteration"] == 30
    monkeypatch.setattr(BatchStream, "batch", original)
    killed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = level0.path / f".final.safetensors.lottery-{killed.stdout.strip()}-abc123.tmp"  # a kill mid-write's
    stale.write_bytes(b"partial")
    resumed, _ = run_tiny(store, *overrides, checkpoint_every=15)
    assert not stale.exists()
    for path in sorted(walk(reference.path, "*.safetensors")):
        twin = resumed.path / path.relative_to(reference.path)
        assert twin.read_bytes() == path.read_bytes(), path
    assert not level0.exists("checkpoint.pt")


@pytest.mark.parametrize(
    "optimizer",
    [
        ("training.optimizer=sgd", "training.momentum=0.9", "training.weight_decay=0.01", "training.lr=0.05"),
        ("training.optimizer=sgd", "training.momentum=0.9", "training.nesterov=true", "training.lr=0.05"),
        ("training.optimizer=adam", "training.weight_decay=0.01"),
    ],
    ids=["sgd-momentum-wd", "nesterov", "adam-wd"],
)
def test_masked_training_holds_mask_and_saved_weights_are_masked(store: Path, optimizer: tuple[str, ...]) -> None:
    """Through the real loop (and its fast optimizer step): pruned weights are exactly zero when saved."""
    experiment, _ = run_tiny(store, "imp.levels=2", *optimizer)
    for level in (1, 2):
        run = RunDir(experiment.path / "replicate_0" / "rewind_0it" / f"level_{level}")
        mask = Mask(run.read_tensors("mask.safetensors"))
        for name in ("start.safetensors", "final.safetensors"):
            weights = run.read_tensors(name)
            assert all(bool((weights[k][~mask[k]] == 0).all()) for k in mask), (level, name)
        final = run.read_tensors("final.safetensors")
        start = run.read_tensors("start.safetensors")
        assert any(bool((final[k][mask[k]] != start[k][mask[k]]).any()) for k in mask)  # survivors trained


def test_same_spec_same_result(tmp_path: Path) -> None:
    a, ra = run_tiny(tmp_path / "a", "imp.levels=1", "controls.kinds=['random_reinit','random_prune']")
    b, rb = run_tiny(tmp_path / "b", "imp.levels=1", "controls.kinds=['random_reinit','random_prune']")
    for path in sorted(walk(a.path, "*.safetensors")):
        assert path.read_bytes() == (b.path / path.relative_to(a.path)).read_bytes(), path
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in ra["runs"]]
    assert strip == [{k: v for k, v in r.items() if k != "train_seconds"} for r in rb["runs"]]


def test_second_run_reuses_the_store(store: Path) -> None:
    experiment, _ = run_tiny(store)
    final = experiment.path / "replicate_0" / "level_0" / "final.safetensors"
    before = final.stat().st_mtime_ns
    run_tiny(store)
    assert final.stat().st_mtime_ns == before
    assert tiny_spec().training.training_steps == "60it"
