"""[masks] end to end on tiny synthetic data: every source and ablation trained from W_k like a control, the
early-bird trace, results.json / results.csv / report, and the spec contract."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch

from conftest import run_tiny, tiny_spec
from lottery.errors import UserError
from lottery.experiments import masks, recipes
from lottery.experiments.context import Context
from lottery.pruning import Mask
from lottery.pruning.early_bird import mask_distance, online_drawn_at, settled_at
from lottery.reports import write_report
from lottery.spec import ExperimentSpec, resolve, spec_hash
from lottery.store import RunDir, layout
from lottery.training import Runtime

MASKS = [
    'masks.sources=["magnitude", "snip", "early_bird"]',
    "masks.densities=[0.1]",
    'masks.ablations=["shuffle", "reinit", "invert"]',
    "masks.early_bird_every=10it",
    "masks.early_bird_threshold=0.01",
]


def stored_mask(experiment: RunDir, kind: str) -> Mask:
    return Mask(layout.mask_run(layout.replicate(experiment, 0), kind, 0.1, 0).read_tensors("mask.safetensors"))


def test_masks_end_to_end(store: Path) -> None:
    experiment, results = run_tiny(store, *MASKS)
    kinds = {"magnitude", "snip", "early_bird"}
    expected = kinds | {f"{k}_{a}" for k in kinds for a in ("shuffle", "reinit", "invert")}
    rows = [r for r in results["runs"] if r.get("target_density") is not None]
    assert {r["kind"] for r in rows} == expected and len(rows) == len(expected)
    source = stored_mask(experiment, "magnitude")
    total = source.total()
    assert all(r["density"] == round(0.1 * total) / total and r["level"] is None for r in rows)  # exact counts
    assert all(r["rewind_iteration"] == 0 for r in rows)
    # shuffle: the source's per-layer counts, other positions; invert: the complement ranking (disjoint here)
    shuffled = stored_mask(experiment, "magnitude_shuffle")
    assert {n: int(m.sum()) for n, m in shuffled.items()} == {n: int(m.sum()) for n, m in source.items()}
    assert not all(torch.equal(shuffled[n], source[n]) for n in source)
    inverted = stored_mask(experiment, "magnitude_invert")
    assert all(not bool((inverted[n] & source[n]).any()) for n in source)
    # reinit: the source's mask on fresh weights
    assert all(
        torch.equal(stored_mask(experiment, "snip_reinit")[n], stored_mask(experiment, "snip")[n]) for n in source
    )
    rdir = layout.replicate(experiment, 0)
    start = layout.mask_run(rdir, "snip", 0.1, 0).read_tensors("start.safetensors")
    fresh = layout.mask_run(rdir, "snip_reinit", 0.1, 0).read_tensors("start.safetensors")
    assert not torch.equal(start["hidden.0.weight"], fresh["hidden.0.weight"])
    # recorded seeds reproduce the masks
    ctx = Context(tiny_spec(*MASKS), Runtime(progress=False))
    for kind in ("snip", "magnitude"):
        again, info = masks.source_mask(ctx, rdir, 0, kind, 0.1, 0, invert=False)
        record = layout.mask_run(rdir, kind, 0.1, 0).read_json("source.json")
        assert record["derived_seed"] == info["derived_seed"] == masks.derived_seed(kind, 0, ctx.training(0))
        assert all(torch.equal(again[n], stored_mask(experiment, kind)[n]) for n in again)
    # early bird: a distance per trace point, the mask computed where it settled
    (trace,) = results["masks"]["early_bird"]
    assert trace["iterations"] == [0, 10, 20, 30, 40, 50, 60]
    (entry,) = trace["densities"]
    assert entry["distances"][0] is None and all(0 <= d <= 1 for d in entry["distances"][1:])
    assert trace["normalised_by"] == "kept"  # |a xor b| / (|a| + |b|): the threshold means the same at any density
    m10, m20 = (
        masks.compute_mask(ctx, masks.dense_weights(ctx, rdir, 0, t), "magnitude", 0.1, 0, invert=False)
        for t in (10, 20)
    )
    assert entry["distances"][2] == pytest.approx(mask_distance(m10, m20))  # magnitude masks use no seed
    assert mask_distance(m10, m20) == pytest.approx(mask_distance(m10, m20, "considered") / (2 * m10.density))
    eb = layout.mask_run(rdir, "early_bird", 0.1, 0).read_json("source.json")
    assert eb["computed_at"] == (entry["settled_at"] if entry["settled_at"] is not None else 60)
    # You et al.'s online rule by default: the newest mask against each of the previous four
    assert trace["rule"] == "online" and trace["window"] == 5
    recent = entry["window_distances"]
    assert recent[:4] == [None] * 4
    assert all(r[0] == pytest.approx(d) for r, d in zip(recent[4:], entry["distances"][4:]))
    assert entry["settled_at"] == online_drawn_at(trace["iterations"], recent, trace["threshold"])
    # Another rule: the stored trace is stale (computed again, the rule recorded) and the ticket is another network
    hindsight = Context(tiny_spec(*MASKS, 'masks.early_bird_rule="hindsight"'), Runtime(progress=False))
    again = masks.trace(hindsight, rdir, 0)
    assert again["rule"] == "hindsight"
    assert again["densities"][0]["settled_at"] == settled_at(trace["iterations"], entry["distances"], 0.01)
    assert recipes.mask_run(hindsight, 0, "early_bird", 0.1, 0) != recipes.mask_run(ctx, 0, "early_bird", 0.1, 0)
    train_mode = Context(tiny_spec(*MASKS, "masks.score_mode.snip=train"), Runtime(progress=False))
    eval_mode = Context(tiny_spec(*MASKS, "masks.score_mode.snip=eval"), Runtime(progress=False))
    snip = recipes.mask_run(ctx, 0, "snip", 0.1, 0)
    assert snip == recipes.mask_run(train_mode, 0, "snip", 0.1, 0)  # the default mode spelled out: the same network
    assert snip != recipes.mask_run(eval_mode, 0, "snip", 0.1, 0)
    masks.trace(ctx, rdir, 0)  # back to the online trace for the report below
    # results.csv and the report
    table = list(csv.DictReader(io.StringIO(experiment.read("results.csv").decode())))
    assert {r["target_density"] for r in table if r["kind"] == "snip_shuffle"} == {"0.1"}
    summary = [r for r in results["summary"] if r["kind"] == "snip_invert"]
    assert len(summary) == 1 and summary[0]["target_density"] == 0.1
    report = write_report(experiment.path)
    for name in ("mask_sources_vs_remaining", "mask_layer_densities", "early_bird_mask_distance"):
        assert (report.parent / f"{name}.png").stat().st_size > 0
    assert "Early-bird masks" in report.read_text()
    assert "normalised by the weights kept" in report.read_text()  # the early-bird footnote


def test_masks_spec_contract() -> None:
    assert spec_hash(resolve(overrides=["masks.scope=global", "masks.at=0it"])[0]) == spec_hash(ExperimentSpec())
    with pytest.raises(UserError, match="masks.sources"):
        resolve(overrides=['masks.sources=["snipp"]', "masks.densities=[0.1]"])
    with pytest.raises(UserError, match="masks.densities"):
        resolve(overrides=['masks.sources=["snip"]'])
    with pytest.raises(UserError, match="masks.early_bird_rule"):
        resolve(overrides=['masks.early_bird_rule="sometime"'])
    with pytest.raises(UserError, match="masks.score_mode"):
        resolve(overrides=["masks.score_mode.snip=test"])
    with pytest.raises(UserError, match="masks.score_mode"):
        resolve(overrides=["masks.score_mode.early_bird=eval"])
    with pytest.raises(UserError, match="masks.ablations"):
        resolve(overrides=['masks.ablations=["flip"]'])
    with pytest.raises(UserError, match="masks.at"):
        Context(tiny_spec('masks.sources=["snip"]', "masks.densities=[0.1]", "masks.at=100it"), Runtime()).validate()
    plain = Context(tiny_spec(), Runtime())
    assert plain.dense_snapshots == plain.rewind_points  # nothing saved unless [masks] asks for it
    traced = Context(tiny_spec('masks.sources=["early_bird"]', "masks.densities=[0.1]", "masks.at=20it"), Runtime())
    assert traced.dense_snapshots == [0, 20, 40]


@pytest.mark.slow
def test_every_source_with_replicates_and_imp(store: Path) -> None:
    sources = '["magnitude", "snip", "grasp", "synflow", "random", "early_bird"]'
    _, results = run_tiny(
        store,
        f"masks.sources={sources}",
        "masks.densities=[0.2, 0.02]",
        'masks.ablations=["shuffle"]',
        "masks.rounds={synflow = 10}",
        "imp.levels=2",
        "replicates=2",
    )
    rows = [r for r in results["runs"] if r.get("target_density") is not None]
    assert len(rows) == 6 * 2 * 2 * 2  # sources x (source, shuffle) x densities x replicates
    distances = results["masks"]["imp_replicate_distance"]
    assert [(d["level"], d["a"], d["b"]) for d in distances] == [(1, 0, 1), (2, 0, 1)]
    assert all(0 < d["distance"] < 1 for d in distances)
    assert len(results["masks"]["early_bird"]) == 2
