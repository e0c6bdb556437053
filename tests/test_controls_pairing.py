"""controls.pairing: one control seed for every level and rewind point ('paired', the default, which the docs and
the report say), or a seed per (k, level) ('independent')."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from conftest import run_tiny, tiny_spec
from lottery.experiments.context import Context
from lottery.experiments.controls import control_seed, control_start
from lottery.spec import TrainingSpec, spec_hash
from lottery.store import layout
from lottery.training import Runtime


def test_pairing_decides_whether_the_seed_depends_on_the_level_and_k() -> None:
    t = TrainingSpec()
    paired = {control_seed("random_reinit", 0, t, "paired", k, level) for k in (0, 100) for level in (1, 2, 3)}
    independent = {control_seed("random_reinit", 0, t, "independent", k, level) for k in (0, 100) for level in (1, 2)}
    assert len(paired) == 1 and paired == {control_seed("random_reinit", 0, t)}
    assert len(independent) == 4 and not independent & paired
    other = dataclasses.replace(t, init_seed=1)  # another chain (the seed values, never a replicate's number)
    assert control_seed("random_reinit", 0, other) not in paired


def test_the_default_pairing_is_left_out_of_the_hash() -> None:
    assert spec_hash(tiny_spec("controls.pairing=paired")) == spec_hash(tiny_spec())
    assert spec_hash(tiny_spec("stability.distance_params=prunable")) == spec_hash(tiny_spec())
    assert spec_hash(tiny_spec("controls.pairing=independent")) != spec_hash(tiny_spec())
    assert spec_hash(tiny_spec("stability.distance_params=all")) != spec_hash(tiny_spec())


def test_paired_controls_share_their_draws_across_levels_and_independent_ones_do_not(store: Path) -> None:
    short = "training.training_steps=20it"
    experiment, _ = run_tiny(store, "imp.levels=2", short)
    rdir = layout.replicate(experiment, 0)
    masks = {level: layout.level(rdir, 0, level).read_tensors("mask.safetensors") for level in (1, 2)}
    for pairing in ("paired", "independent"):
        ctx = Context(tiny_spec("imp.levels=2", short, f"controls.pairing={pairing}"), Runtime(progress=False))
        reinit = {
            level: control_start(ctx, rdir, 0, 0, level, ctx.mask(masks[level]), "random_reinit", 0) for level in (1, 2)
        }
        prune = {
            level: control_start(ctx, rdir, 0, 0, level, ctx.mask(masks[level]), "random_prune", 0)[0]
            for level in (1, 2)
        }
        both = reinit[2][0]["hidden.0.weight"]  # level 2's mask keeps a subset of level 1's coordinates
        same_weights = torch.equal(reinit[1][1]["hidden.0.weight"][both], reinit[2][1]["hidden.0.weight"][both])
        nested = prune[2].is_subset_of(prune[1])
        assert same_weights == nested == (pairing == "paired"), pairing
