"""What determines each trained network of an experiment: its key, whose hash names its directory in the store
(`<store>/networks/<kind>/<hash>`, store/layout.py), so that every experiment needing the same network shares one.

A key holds exactly what determines the network's weights (docs/run-format.md):
- the dense run: the model (with a plugin's code hash), the dataset, the training settings with the replicate's
  seeds (replicate r of a spec with seed s is the network of replicate 0 with seed s + r);
- IMP level L: level L-1's key (the chain down to the dense run), the pruning settings, the one-shot density
  (level 1), the rewind point k and the optimizer-state option;
- a control: its level's key, its kind, its seed and the pairing rule;
- a stability copy: its subject's key (the dense run at k, an IMP level, a control, or a [masks] run), its index;
- a [masks] run: the dense run's key, k, its kind, density and seed, and the settings its source reads;
- a prefix (the dense run's first iterations, where W_k was never saved): the dense run's key and the points.

Analysis-only settings (stability threshold, interpolation points, BatchNorm re-estimation, which levels are
analysed, how many levels or controls there are) never enter a key, nor do the run's snapshot points or how it is
computed (stacked with others or not, the thread count, the device: that changes rounding only; each run's
summary records its arithmetic, and a run keeps it when resumed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from lottery.experiments import mask_recipe
from lottery.experiments.context import Context
from lottery.experiments.mask_points import at_iteration
from lottery.pruning.early_bird import TRACE_NORMALISATION
from lottery.spec import to_dict
from lottery.store import layout
from lottery.store.atomic import write_json


def digest(key: dict[str, Any]) -> str:
    """The hash of a key: its directory name."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _settings(ctx: Context, group: str, replicate: int | None = None) -> dict[str, Any]:
    """One group of the spec as the spec hash sees it (defaults left out); training with replicate r's seeds."""
    spec = ctx.spec
    if replicate is not None:
        spec = dataclasses.replace(spec, training=ctx.training(replicate))
    return to_dict(spec, omit_defaults=True).get(group, {})


def dense(ctx: Context, r: int) -> dict[str, Any]:
    return {
        "format": layout.FORMAT,
        "kind": "dense",
        "model": _settings(ctx, "model"),
        "dataset": _settings(ctx, "dataset"),
        "training": _settings(ctx, "training", r),
    }


def level(ctx: Context, r: int, k: int, level_: int) -> dict[str, Any]:
    """IMP level `level_` rewound to k (level 0: the dense run)."""
    if level_ == 0:
        return dense(ctx, r)
    imp = ctx.spec.imp
    return {
        "kind": "imp",
        "parent": level(ctx, r, k, level_ - 1),
        "pruning": _settings(ctx, "pruning"),
        "one_shot_density": imp.one_shot_density if level_ == 1 else None,
        "rewind_iteration": k,
        "optimizer_state": imp.optimizer_state,
    }


def control(ctx: Context, r: int, k: int, level_: int, kind: str, seed: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "level": level(ctx, r, k, level_),
        "seed": seed,
        "pairing": ctx.spec.controls.pairing,
    }


def copy(ctx: Context, r: int, k: int, level_: int, kind: str, i: int, control_seed: int) -> dict[str, Any]:
    """Copy i of the stability subject `kind` at (k, level) (the dense network's copies: at k, any level); a
    control subject is the control of seed `control_seed`."""
    if kind == "dense":
        subject = {"dense": dense(ctx, r), "rewind_iteration": k, "optimizer_state": ctx.spec.imp.optimizer_state}
    elif kind == "imp":
        subject = level(ctx, r, k, level_)
    else:
        subject = control(ctx, r, k, level_, kind, control_seed)
    return {"kind": "copy", "subject": subject, "copy": i}


def mask_run(ctx: Context, r: int, kind: str, source: str, density: float, seed: int) -> dict[str, Any]:
    """A [masks] run: `kind` is `source` or `<source>_<ablation>`."""
    spec = ctx.spec.masks
    reads: dict[str, Any] = {"scope": spec.scope, "layers_to_ignore": list(ctx.spec.pruning.layers_to_ignore)}
    if source in spec.rounds or source == "synflow":
        reads.update(rounds=spec.rounds.get(source), schedule=spec.schedule)
    if source in ("snip", "grasp"):
        reads["snip_batches"] = spec.snip_batches
    if source == "grasp":
        reads["grasp_temperature"] = spec.grasp_temperature
    if source == "early_bird":
        reads.update(
            source=spec.early_bird_source, threshold=spec.early_bird_threshold, every=spec.early_bird_every,
            rounds=spec.rounds.get(spec.early_bird_source), schedule=spec.schedule,
            normalised_by=TRACE_NORMALISATION,  # what the threshold is compared with (pruning/early_bird.py)
        )  # fmt: skip
    reads.update(mask_recipe.extra_reads(spec, source))  # scoring mode, early-bird rule (experiments/mask_recipe.py)
    return {
        "kind": kind,
        "dense": dense(ctx, r),
        "rewind_iteration": at_iteration(ctx),
        "density": density,
        "seed": seed,
        "reads": reads,
        "optimizer_state": ctx.spec.imp.optimizer_state,
    }


def mask_copy(ctx: Context, r: int, kind: str, source: str, density: float, seed: int, i: int) -> dict[str, Any]:
    """Copy i of the [masks] run (kind, density, seed) as a stability subject (`stability.masks`): its mask and
    start are the run's."""
    return {"kind": "copy", "subject": mask_run(ctx, r, kind, source, density, seed), "copy": i}


def prefix(ctx: Context, r: int, points: tuple[int, ...]) -> dict[str, Any]:
    """The dense run's first iterations, retrained to save W_k at `points`."""
    optimizer = ctx.spec.imp.optimizer_state
    return {"kind": "prefix", "dense": dense(ctx, r), "snapshots": list(points), "optimizer_state": optimizer}


def bind_one(view: Path, key: dict[str, Any]) -> Path:
    """Link the run directory `view` (a path inside an experiment, e.g. `layout.dense(...)`) to the network of `key`;
    the network's directory."""
    view = Path(getattr(view, "path", view))
    target = layout.network(layout.store_of_run(view), str(key["kind"]), digest(key))
    if layout.bind(view, target) and not (target / layout.KEY_FILE).exists():
        write_json(
            target / layout.KEY_FILE, key
        )  # not an artifact of the run: written once, never trusted for anything
    return target
