"""One short run on the real default dataset (Fashion-MNIST, installed by scripts/setup.sh)."""

from __future__ import annotations

from pathlib import Path

from lottery.experiments.run import run_experiment
from lottery.pruning import Mask
from lottery.spec import resolve
from lottery.training import Runtime


def test_lenet_learns_fashion_mnist_and_imp_prunes_it(tmp_path: Path) -> None:
    spec, preset = resolve(
        preset="lenet_300_100",
        overrides=["training.training_steps=300it", "training.eval_every=150it", "imp.levels=1", "imp.rewind=50it"],
    )
    experiment, results = run_experiment(spec, preset, tmp_path, Runtime(progress=False))
    dense, level1 = results["runs"]
    assert dense["kind"] == "dense" and dense["final_test_accuracy"] > 0.78
    assert level1["kind"] == "imp" and level1["final_test_accuracy"] > 0.78
    mask = Mask((experiment / level1["path"]).read_tensors("mask.safetensors"))
    assert mask.report()["layers"]["out.weight"]["kept"] == 900  # output layer pruned at 10% of 1000
    assert level1["early_stop_iteration"] in (50, 150, 300)  # evaluated at its start (k = 50), 150 and 300
    metrics = (experiment.path / level1["path"] / "metrics.jsonl").read_text()
    assert metrics.startswith('{"iteration": 50, "split": "val"')
