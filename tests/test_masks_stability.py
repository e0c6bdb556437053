"""`stability.masks`: the [masks] runs' subnetworks go through the stability / LMC analysis like IMP and its
controls: copies with the copies' derived seeds, data-order distances and barriers (and pruning distances where
the subnetwork starts from W_k), in analysis.json, results.json, stability.csv and the report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from conftest import run_tiny, tiny_spec
from lottery.errors import UserError
from lottery.experiments.context import Context
from lottery.experiments.plan import index, plan
from lottery.experiments.stability import copy_training
from lottery.reports import write_report
from lottery.store import layout
from lottery.training import Runtime

SPEC = [
    'masks.sources=["snip", "random"]',
    "masks.densities=[0.2, 0.05]",
    'masks.ablations=["reinit"]',
    'stability.rewind=["0it"]',
    'stability.masks=["snip", "snip_reinit", "random"]',
]
STUDIED = [(kind, d) for kind in ("snip", "snip_reinit", "random") for d in (0.2, 0.05)]


def test_mask_sources_go_through_the_stability_analysis(store: Path) -> None:
    experiment, results = run_tiny(store, *SPEC)
    rdir = layout.replicate(experiment, 0)
    point = layout.stability(rdir, 0, 0)
    analysis = point.read_json("analysis.json")
    records = {(p["kind"], p.get("target_density")): p for p in analysis["points"]}
    assert set(records) == {("dense", None), *STUDIED}
    dense_copies = [layout.copy(point, "dense", i) for i in range(2)]
    for kind, density in STUDIED:
        record = records[(kind, density)]
        run = layout.mask_run(rdir, kind, density, 0)
        assert not record["diverged"] and record["seed"] == 0
        assert record["density"] == pytest.approx(run.read_json("sparsity.json")["density"])
        (pair,) = record["data_order"]["pairs"]  # 2 copies: one pair, its distances and barriers
        assert pair["l2"] > 0 and "barrier_test" in pair and "barrier_train" in pair
        assert (experiment.path / pair["curve"]).exists()
        # pruning stability: defined where the subnetwork starts from W_k, not for the reinit ablation
        assert (record["pruning"] is None) == (kind == "snip_reinit")
        # the copies: under the point's directory, in the [masks] layout; the run's mask and start; the same
        # derived seeds as the dense network's copy i (the pruning pair's "same data order")
        where = layout.mask_run(point, kind, density, 0)
        for i, copy in enumerate(record["copies"]):
            assert copy["path"] == str(layout.copy(where, kind, i).path.relative_to(experiment.path))
            trained = layout.copy(where, kind, i)
            assert trained.path.is_symlink()  # a network of the store, named by its key: the [masks] run and i
            key = json.loads((trained.path / layout.KEY_FILE).read_text())
            assert (key["kind"], key["copy"], key["subject"]["kind"], key["subject"]["density"]) == (
                "copy",
                i,
                kind,
                density,
            )
            assert all(
                torch.equal(a, b)
                for a, b in zip(
                    trained.read_tensors("mask.safetensors").values(), run.read_tensors("mask.safetensors").values()
                )
            )
            start, stored = trained.read_tensors("start.safetensors"), run.read_tensors("start.safetensors")
            assert all(torch.equal(start[n], stored[n]) for n in stored)
            assert (
                copy["data_order_seed"]
                == copy_training(Context(tiny_spec(*SPEC), Runtime()).training(0), i).data_order_seed
            )
        if record["pruning"] is not None:
            assert [p["full"] for p in record["pruning"]["pairs"]] == [
                str(c.path.relative_to(experiment.path)) for c in dense_copies
            ]
    # results.json, stability.csv and the report carry them like the other kinds
    flattened = [p for p in results["stability"]["points"] if p.get("target_density") is not None]
    assert {(p["kind"], p["target_density"]) for p in flattened} == set(STUDIED)
    assert all(p["rewind_iteration"] == 0 and p["level"] == 0 for p in flattened)
    table = list(csv.DictReader(io.StringIO(experiment.read("stability.csv").decode())))
    snip = [r for r in table if r["kind"] == "snip"]
    assert {(r["measure"], r["target_density"]) for r in snip} == {
        (m, d) for m in ("data_order", "pruning") for d in ("0.2", "0.05")
    }
    assert {r["target_density"] for r in table if r["kind"] == "dense"} == {""}
    path = write_report(experiment.path)
    assert (path.parent / "mask_sources_stability_vs_remaining.png").stat().st_size > 0
    report = path.read_text()  # the stability table: a row per kind and target density
    # analysis settings never enter a key: another experiment analysing the same subjects trains no copy again
    networks = sorted((store / "networks" / "copy").iterdir())
    assert len(networks) == 2 * (1 + len(STUDIED))
    run_tiny(store, *SPEC, "stability.interpolation_points=5")
    assert sorted((store / "networks" / "copy").iterdir()) == networks
    assert "Mask sources in the stability analysis" in report  # its footnote, linking to docs/measured.md
    section = report.split("<h2>Stability</h2>")[1].split("<h2>")[0]
    assert section.count('<tr class="snip_reinit">') == 2 and section.count('<tr class="dense">') == 1


def test_stability_masks_contract() -> None:
    with pytest.raises(UserError, match="stability.masks names 'grasp', a kind \\[masks\\] does not run"):
        tiny_spec(*SPEC[:-1], 'stability.masks=["grasp"]')
    with pytest.raises(UserError, match="it runs: none"):
        tiny_spec('stability.masks=["snip"]')
    with pytest.raises(UserError, match="masks.at = 20it .* add it to stability.rewind"):
        Context(tiny_spec(*SPEC, "masks.at=20it"), Runtime()).validate()
    with pytest.raises(UserError, match="add 0 to stability.levels"):
        Context(tiny_spec(*SPEC, "imp.levels=1", "stability.levels=[1]"), Runtime()).validate()
    # the point (masks.at, level 0) depends on the runs it studies, which come before it in the plan
    tasks = plan(Context(tiny_spec(*SPEC, "imp.levels=1"), Runtime()))
    order = [t.name for t in tasks]
    point = next(t for t in tasks if t.name == "r0/k0/stability/level0")
    by_name = index(tasks)  # a stacked group's task stands for its members' tasks
    studied = {by_name[f"r0/masks/{k}/density{d:g}/seed0"].name for k, d in STUDIED}
    assert set(point.deps) == {"r0/dense", *studied}
    assert all(order.index(dep) < order.index(point.name) for dep in point.deps)
    level1 = next(t for t in tasks if t.name == "r0/k0/stability/level1")
    assert level1.deps == ("r0/k0/level1", "r0/k0/stability/level0")  # level 0's task trains the dense copies
    assert Context(tiny_spec(*SPEC[:-1]), Runtime()).spec.stability.masks == ()
