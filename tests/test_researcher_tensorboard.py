"""Issue 27, item 9: TensorBoard's summary run holds scalars over IMP levels (density, level, error barrier,
distances; step = level) and histograms of the weights each level keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_tiny
from lottery.store import RunDir


def test_tensorboard_level_scalars_and_kept_weight_histograms(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, results = run_tiny(
        tmp_path / "runs",
        "imp.levels=2",
        "imp.rewind=['20it']",
        "stability.rewind=['20it']",
        "stability.controls=[]",
        "stability.interpolation_points=3",
        "stability.train_subset=100",
        "stability.batchnorm_batches=1",
        log=("tensorboard",),
    )
    events = EventAccumulator(str(run.path / "tensorboard" / "summary"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])

    def steps(tag: str) -> dict[int, float]:
        return {e.step: e.value for e in events.Scalars(tag)}

    density = steps("levels/imp_k20/percent_remaining")
    summary = {r["level"]: r for r in results["summary"] if r["kind"] in ("dense", "imp")}
    assert sorted(density) == [0, 1, 2]
    assert all(density[level] == pytest.approx(100 * summary[level]["density"]) for level in density)
    assert steps("levels/imp_k20/level") == {0: 0.0, 1: 1.0, 2: 2.0}
    points = {(p["kind"], p["level"]): p for p in results["stability"]["points"]}
    barrier = steps("stability/imp_k20/barrier_test")
    assert sorted(barrier) == [1, 2]
    assert barrier[2] == pytest.approx(points[("imp", 2)]["data_order"]["barrier_test"]["mean"], abs=1e-6)
    l2 = steps("stability/imp_k20/l2_pruning")
    assert l2[1] == pytest.approx(points[("imp", 1)]["pruning"]["l2"]["mean"], rel=1e-6)
    assert {"stability/dense_k20/l2_data_order", "stability/imp_k20/angle_data_order"} <= scalars

    histograms = events.Tags()["histograms"]
    assert "kept_weights/imp_k20" in histograms and "kept_weights/imp_k20/hidden.0.weight" in histograms
    by_level = {e.step: e.histogram_value for e in events.Histograms("kept_weights/imp_k20")}
    assert sorted(by_level) == [0, 1, 2]  # numeric steps: levels in numeric order
    level_2 = next(r for r in results["runs"] if r["kind"] == "imp" and r["level"] == 2)
    mask = RunDir(run.path / level_2["path"]).read_tensors("mask.safetensors")
    final = RunDir(run.path / level_2["path"]).read_tensors("final.safetensors")
    kept = torch.cat([final[n][mask[n]].flatten() for n in mask])
    assert by_level[2].num == kept.numel() == sum(int(m.sum()) for m in mask.values())
    assert by_level[2].min == pytest.approx(float(kept.min())) and by_level[2].max == pytest.approx(float(kept.max()))
    assert json.loads((run.path / "results.json").read_text())["summary"]  # logging changed nothing else
