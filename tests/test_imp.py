"""IMP with rewinding end to end on synthetic data: rewinds are exact, masks nest, densities are exact,
controls are seeded and keep densities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import run_tiny
from lottery.experiments import imp
from lottery.pruning import Mask
from lottery.pruning.ranking import rounded_count
from lottery.store import RunDir, layout
from lottery.store.layout import walk


def level(experiment: RunDir, k: int, n: int) -> RunDir:
    return experiment / "replicate_0" / f"rewind_{k}it" / f"level_{n}"


def test_imp_rewinds_exactly_and_masks_nest(store: Path) -> None:
    experiment, results = run_tiny(store, "imp.levels=3", "imp.rewind=['0it', '20it']")
    dense = experiment / "replicate_0" / "level_0"
    # One dense run serves both rewind points.
    assert sorted(p.name for p in (dense.path / "snapshots").iterdir()) == ["iter_0.safetensors", "iter_20.safetensors"]
    assert torch.equal(
        dense.read_tensors(layout.snapshot(0))["out.weight"], dense.read_tensors("start.safetensors")["out.weight"]
    )
    for k in (0, 20):
        w_k = dense.read_tensors(layout.snapshot(k))
        previous = None
        for n in (1, 2, 3):
            run = level(experiment, k, n)
            mask = Mask(run.read_tensors("mask.safetensors"))
            start = run.read_tensors("start.safetensors")
            for name, tensor in w_k.items():  # m ⊙ W_k bit for bit; unmasked tensors (biases) = W_k
                expected = tensor * mask[name] if name in mask else tensor
                assert torch.equal(start[name], expected), (k, n, name)
            if previous is not None:
                assert mask.is_subset_of(previous)
            previous = mask
            metrics = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
            assert metrics[0]["iteration"] == k and metrics[-1]["iteration"] == 60  # trains k -> T
    assert len([r for r in results["runs"] if r["kind"] == "imp"]) == 6


def test_exact_layerwise_densities_per_level(store: Path) -> None:
    experiment, _ = run_tiny(store, "imp.levels=4")  # lenet_300_100 preset: layerwise 20%, output 10%
    kept = {"hidden.0.weight": 784 * 40, "hidden.1.weight": 40 * 20, "out.weight": 20 * 10}
    for n in range(1, 5):
        mask = Mask(level(experiment, 0, n).read_tensors("mask.safetensors"))
        for name in kept:
            rate = 0.1 if name == "out.weight" else 0.2
            kept[name] -= rounded_count(rate, kept[name])
            assert int(mask[name].sum()) == kept[name], (n, name)
        report = level(experiment, 0, n).read_json("sparsity.json")
        assert report["kept"] == sum(kept.values()) and report["layers"]["out.weight"]["kept"] == kept["out.weight"]


def test_global_strategy_and_one_shot(store: Path) -> None:
    experiment, _ = run_tiny(
        store, "pruning.strategy=global_magnitude", "pruning.rates={}", "imp.levels=1", "imp.one_shot_density=0.1"
    )
    mask = Mask(level(experiment, 0, 1).read_tensors("mask.safetensors"))
    assert abs(mask.kept() - round(0.1 * mask.total())) <= 1


def test_optimizer_state_rewind_option(store: Path) -> None:
    overrides = ("imp.levels=1", "imp.rewind=20it", "training.optimizer=sgd", "training.momentum=0.9")
    fresh, _ = run_tiny(store / "fresh", *overrides)
    rewound, _ = run_tiny(store / "rewind", *overrides, "imp.optimizer_state=rewind")
    state = (rewound / "replicate_0" / "level_0").read_torch(layout.snapshot(20, optimizer=True))
    assert state is not None and len(state["state"]) > 0  # momentum buffers at k were saved
    a = level(fresh, 20, 1).read_tensors("final.safetensors")
    b = level(rewound, 20, 1).read_tensors("final.safetensors")
    assert not torch.equal(a["out.weight"], b["out.weight"])  # the option changes training


def test_controls_keep_densities_and_are_seeded(store: Path) -> None:
    kinds = "controls.kinds=['random_reinit', 'random_prune', 'random_prune_global']"
    experiment, results = run_tiny(store, "imp.levels=2", kinds, "controls.seeds=[0, 1]")
    for n in (1, 2):
        imp_mask = Mask(level(experiment, 0, n).read_tensors("mask.safetensors"))
        controls = layout.controls(layout.replicate(experiment, 0), 0, n)
        reinit = Mask((controls / "random_reinit_seed0").read_tensors("mask.safetensors"))
        assert all(torch.equal(reinit[k], imp_mask[k]) for k in imp_mask)
        reinit_start = (controls / "random_reinit_seed0").read_tensors("start.safetensors")
        rewound = level(experiment, 0, n).read_tensors("start.safetensors")
        assert not torch.equal(reinit_start["out.weight"], rewound["out.weight"])  # fresh weights
        for seed in (0, 1):
            random = Mask((controls / f"random_prune_seed{seed}").read_tensors("mask.safetensors"))
            assert {k: int(v.sum()) for k, v in random.items()} == {k: int(v.sum()) for k, v in imp_mask.items()}
            glob = Mask((controls / f"random_prune_global_seed{seed}").read_tensors("mask.safetensors"))
            assert glob.kept() == imp_mask.kept()
        a = Mask((controls / "random_prune_seed0").read_tensors("mask.safetensors"))
        b = Mask((controls / "random_prune_seed1").read_tensors("mask.safetensors"))
        assert not all(torch.equal(a[k], b[k]) for k in a)
    # Same seeds, another store: identical control masks.
    again, _ = run_tiny(store / "again", "imp.levels=2", kinds, "controls.seeds=[0, 1]")
    for path in sorted(experiment.path.glob("replicate_*/rewind_*it/controls/level_*/*/mask.safetensors")):
        assert path.read_bytes() == (again.path / path.relative_to(experiment.path)).read_bytes()
    summary = {(r["kind"], r["level"]): r for r in results["summary"]}
    assert summary[("random_prune", 2)]["runs"] == 2 and summary[("imp", 2)]["runs"] == 1


def test_replicates_aggregate(store: Path) -> None:
    experiment, results = run_tiny(store, "imp.levels=1", "replicates=2")
    dense = [r for r in results["runs"] if r["kind"] == "dense"]
    assert len(dense) == 2 and dense[0]["path"] != dense[1]["path"]
    row = next(r for r in results["summary"] if r["kind"] == "dense")
    accuracies = [r["final_test_accuracy"] for r in dense]
    assert row["runs"] == 2
    assert row["final_test_accuracy"] == {"mean": sum(accuracies) / 2, "min": min(accuracies), "max": max(accuracies)}
    a = (experiment / "replicate_0" / "level_0").read_tensors("start.safetensors")
    b = (experiment / "replicate_1" / "level_0").read_tensors("start.safetensors")
    assert not torch.equal(a["out.weight"], b["out.weight"])


def test_controls_trained_together_match_controls_trained_alone(tmp_path: Path) -> None:
    overrides = ("imp.levels=2", "controls.kinds=['random_reinit', 'random_prune']", "controls.seeds=[0, 1]")
    together, results = run_tiny(tmp_path / "together", *overrides, batch_copies=True)
    alone, reference = run_tiny(tmp_path / "alone", *overrides, batch_copies=False)
    finals = sorted(
        p.relative_to(together.path)
        for p in together.path.glob("replicate_*/rewind_*it/controls/level_*/*/final.safetensors")
    )
    assert len(finals) == 2 * 4
    assert finals == sorted(
        p.relative_to(alone.path)
        for p in alone.path.glob("replicate_*/rewind_*it/controls/level_*/*/final.safetensors")
    )
    for path in finals:
        run, ref = RunDir((together.path / path).parent), RunDir((alone.path / path).parent)
        for name in ("start.safetensors", "mask.safetensors"):  # the same tensors (files name their own network)
            ours, theirs = run.read_tensors(name), ref.read_tensors(name)
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[n], theirs[n]) for n in ours)
        got, want = run.read_tensors("final.safetensors"), ref.read_tensors("final.safetensors")
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-4)
    rows = [(r["kind"], r["level"], r["seed"]) for r in results["runs"]]
    assert rows == [(r["kind"], r["level"], r["seed"]) for r in reference["runs"]]


def test_replicates_trained_together_match_replicates_trained_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stacked: list[list[str]] = []
    original = imp.train_together

    def spy(runs: list[RunDir], *args: Any, **kwargs: Any) -> list[dict]:
        stacked.append([str(r.path.relative_to(tmp_path)) for r in runs])
        return original(runs, *args, **kwargs)

    monkeypatch.setattr(imp, "train_together", spy)
    overrides = ("replicates=2", "imp.levels=2", "controls.kinds=['random_prune']")
    together, results = run_tiny(tmp_path / "together", *overrides, batch_copies=True)
    pairs = {tuple(sorted("/".join(p.split("/")[2:]) for p in g)) for g in stacked if len(g) == 2}
    assert pairs == {
        ("replicate_0/level_0", "replicate_1/level_0"),
        ("replicate_0/rewind_0it/level_1", "replicate_1/rewind_0it/level_1"),
        ("replicate_0/rewind_0it/level_2", "replicate_1/rewind_0it/level_2"),
    }  # the second replicate's tasks find these runs finished
    alone, reference = run_tiny(tmp_path / "alone", *overrides, batch_copies=False)
    assert [(r["kind"], r["replicate"], r["level"]) for r in results["runs"]] == [
        (r["kind"], r["replicate"], r["level"]) for r in reference["runs"]
    ]
    for path in sorted(walk(together.path, "final.safetensors")):
        run, ref = RunDir(path.parent), RunDir(alone.path / path.parent.relative_to(together.path))
        assert run.read("start.safetensors") is not None and ref.read("final.safetensors") is not None
        mask, ref_mask = run.read_tensors("mask.safetensors"), ref.read_tensors("mask.safetensors")
        for name in mask:  # exact per-layer counts; pruning slightly different weights may pick other ties
            assert int(mask[name].sum()) == int(ref_mask[name].sum()), (path, name)
            assert float((mask[name] == ref_mask[name]).float().mean()) > 0.98, (path, name)
