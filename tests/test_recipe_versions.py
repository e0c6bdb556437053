"""A change that alters what a kind of network computes must bump its version (experiments/recipes.py VERSIONS), or
stored networks of the old code would be reused under the same recipe.

A tiny run of every kind is summarised (per-layer kept counts, exactly; sums of the final weights, to a relative
1e-4 that float rounding on another CPU stays within and any change of behaviour leaves) and compared with golden
figures recorded for the current versions in tests/golden/recipes.json. After bumping a version on purpose, record
the new figures with `LOTTERY_UPDATE_GOLDEN=1 python -m pytest tests/test_recipe_versions.py`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import run_tiny
from lottery.experiments.recipes import VERSIONS

GOLDEN = Path(__file__).parent / "golden" / "recipes.json"
VIEWS = {
    "dense": "replicate_0/level_0",
    "imp": "replicate_0/rewind_20it/level_2",
    "control": "replicate_0/rewind_20it/controls/level_1/random_prune_seed0",
    "copy": "replicate_0/rewind_20it/stability/level_1/imp_copy1",
    "masks": "replicate_0/masks/snip_shuffle/density_0.3_seed0",
    "prefix": "../networks/prefix",  # no experiment links a prefix run: the store's only one
    "dynamic": "replicate_0/dynamic/rigl/density_0.3_seed0",
    "dynamic_copy": "replicate_0/rewind_20it/stability/level_1/dynamic/rigl/density_0.3_seed0/rigl_copy1",
}


def figures(run: Path) -> dict:
    final = load_file(run / "final.safetensors") if (run / "final.safetensors").exists() else {}
    if not final:  # a prefix: its last snapshot
        snapshots = sorted((run / "snapshots").glob("iter_*.safetensors"))
        final = load_file(snapshots[-1])
    mask = load_file(run / "mask.safetensors") if (run / "mask.safetensors").exists() else {}
    return {
        "kept": {name: int(m.sum()) for name, m in sorted(mask.items())},
        "sum": float(sum(t.double().sum() for t in final.values())),
        "abs_sum": float(sum(t.double().abs().sum() for t in final.values())),
    }


def compute(tmp_path: Path) -> dict[str, dict]:
    torch.set_num_threads(1)
    common = (
        "imp.levels=2",
        'imp.rewind=["20it"]',
        'controls.kinds=["random_prune"]',
        "controls.levels=[1]",
        'stability.rewind=["20it"]',
        "stability.levels=[1]",
        'masks.sources=["snip"]',
        "masks.densities=[0.3]",
        'masks.ablations=["shuffle"]',
        'dynamic.methods=["rigl"]',
        "dynamic.densities=[0.3]",
        "dynamic.update_every=10it",
        'stability.dynamic=["rigl"]',
    )
    run_tiny(tmp_path, *common)
    experiment, _ = run_tiny(tmp_path, *common, 'imp.rewind=["20it", "40it"]')  # W_40 from a prefix run
    found = {kind: experiment.path / view for kind, view in VIEWS.items()}
    (found["prefix"],) = found["prefix"].iterdir()
    return {kind: figures(run) for kind, run in found.items()}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4)


def test_every_kind_computes_what_its_version_recorded(tmp_path: Path) -> None:
    found = compute(tmp_path / "runs")
    if os.environ.get("LOTTERY_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"versions": VERSIONS, "figures": found}, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(VIEWS) == set(VERSIONS), "every kind of network needs a golden run in VIEWS"
    for kind, version in VERSIONS.items():
        if golden["versions"].get(kind) != version:
            raise AssertionError(f"VERSIONS[{kind!r}] was bumped: record its figures (LOTTERY_UPDATE_GOLDEN=1)")
        want, got = golden["figures"][kind], found[kind]
        same = want["kept"] == got["kept"] and close(want["sum"], got["sum"]) and close(want["abs_sum"], got["abs_sum"])
        assert same, (
            f"what a {kind!r} network computes changed ({want} -> {got}) but VERSIONS[{kind!r}] is still {version}: "
            "bump it (stored networks of the old code must not be reused), then record the figures"
        )
