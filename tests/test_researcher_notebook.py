"""Issue 27: `lottery.load_experiment(dir)` gives the results, stability and mask-source tables as DataFrames."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

import lottery
from conftest import run_tiny
from lottery.errors import UserError

pandas = pytest.importorskip("pandas")


def test_load_experiment_tables(tmp_path: Path) -> None:
    experiment, results = run_tiny(
        tmp_path / "runs",
        "imp.levels=1",
        'controls.kinds=["random_prune"]',
        'stability.rewind=["0it"]',
        "stability.copies=2",
        "stability.interpolation_points=3",
        "stability.train_subset=100",
        "stability.batchnorm_batches=1",
        'masks.sources=["magnitude"]',
        "masks.densities=[0.5]",
        "masks.ablations=[]",
    )
    tables = lottery.load_experiment(experiment.path)
    assert isinstance(tables.results, pandas.DataFrame)
    assert sorted(tables.results["kind"]) == ["dense", "imp", "random_prune"]
    imp_row = tables.results[tables.results["kind"] == "imp"].iloc[0]
    stored = next(r for r in results["runs"] if r["kind"] == "imp")
    assert imp_row["final_test_accuracy"] == stored["final_test_accuracy"] and imp_row["level"] == 1
    assert {"final_test_accuracy_mean", "final_test_accuracy_min", "final_test_accuracy_max", "runs"} <= set(
        tables.summary.columns
    )
    assert set(tables.stability["measure"]) == {"pruning", "data_order"}
    assert {"l2", "barrier_test", "stable"} <= set(tables.stability.columns)
    assert list(tables.mask_sources["kind"]) == ["magnitude"] and tables.mask_sources["target_density"][0] == 0.5
    assert tables.hash == experiment.path.name and tables.spec["imp"]["levels"] == 1


def test_load_experiment_without_pandas_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    real = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(UserError, match=r"lottery\[pandas\]"):
        lottery.load_experiment(tmp_path)
