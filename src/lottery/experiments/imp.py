"""Iterative magnitude pruning with rewinding (Algorithm 1 of "Stabilizing the LTH").

Level 0 trains the dense network from W_0 to T once, saving W_k at every rewind point. For each k,
level L >= 1 prunes level L-1's final weights (among surviving weights only) and trains m_L ⊙ W_k from
iteration k to T, with the schedule and data order continuing from k.
"""

from __future__ import annotations

import sys
from typing import Any

from lottery.errors import UserError
from lottery.experiments.context import Context
from lottery.pruning import Mask, prune
from lottery.store import RunDir
from lottery.training import distributed, snapshot_name, train


def dense_dir(replicate_dir: RunDir) -> RunDir:
    return replicate_dir / "level_0"


def level_dir(replicate_dir: RunDir, rewind: int, level: int) -> RunDir:
    return replicate_dir / f"rewind_{rewind}it" / f"level_{level}"


def train_dense(ctx: Context, replicate_dir: RunDir, replicate: int) -> dict[str, Any]:
    """Level 0: the dense network from W_0 to T, with W_k (and optimizer state at k) saved for every k."""
    run = dense_dir(replicate_dir)
    model = ctx.model(ctx.training(replicate).init_seed)
    job = ctx.job(
        replicate,
        snapshots=tuple(ctx.rewind_points),
        snapshot_optimizer=ctx.spec.imp.optimizer_state == "rewind",
    )
    ctx.runtime.label = f"r{replicate} level 0 (dense)"
    return train(run, model, ctx.data, job, ctx.runtime)


def rewind_state(ctx: Context, replicate_dir: RunDir, replicate: int, k: int) -> tuple[dict, dict | None]:
    """(W_k, optimizer state at k or None), read from the dense run (retrained if not intact)."""
    run = dense_dir(replicate_dir)
    weights = run.read_tensors(snapshot_name(k))
    optimizer = run.read_torch(snapshot_name(k, optimizer=True)) if ctx.spec.imp.optimizer_state == "rewind" else None
    if weights is None or (ctx.spec.imp.optimizer_state == "rewind" and optimizer is None):
        summary = train_dense(ctx, replicate_dir, replicate)
        if summary["diverged"] and summary["diverged_at"] < k:  # it never reached k: retraining cannot help
            raise UserError(
                f"{run.path} diverged at iteration {summary['diverged_at']}, before rewind point {k}; "
                "lower training.lr or choose an earlier imp.rewind"
            )
        return rewind_state(ctx, replicate_dir, replicate, k)
    return weights, optimizer


def run_level(ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int) -> Mask | None:
    """IMP level L >= 1 for rewind point k: prune level L-1's final weights (among its surviving weights)
    and train m_L ⊙ W_k from k to T. Returns the mask, or None when an earlier level diverged (its
    weights are not finite: there is nothing to prune). Earlier levels missing from the store run first."""
    spec = ctx.spec
    previous = dense_dir(replicate_dir) if level == 1 else level_dir(replicate_dir, k, level - 1)
    summary, final = previous.read_json("summary.json"), previous.read_tensors("final.safetensors")
    stored_mask = previous.read_tensors("mask.safetensors")
    if summary is None or final is None or stored_mask is None:
        if level == 1:
            train_dense(ctx, replicate_dir, replicate)
        elif run_level(ctx, replicate_dir, replicate, k, level - 1) is None:
            return None
        return run_level(ctx, replicate_dir, replicate, k, level)
    if summary["diverged"]:
        print(
            f"lottery: {previous.path} diverged at iteration {summary['diverged_at']}; "
            f"IMP level {level} and later levels (and their controls) skipped",
            file=sys.stderr,
        )
        return None
    one_shot = spec.imp.one_shot_density if level == 1 else None
    mask = prune(final, ctx.mask(stored_mask), ctx.layer_kinds, spec.pruning, target_density=one_shot)
    mask = distributed.broadcast_mask(mask)  # under torchrun: rank 0's mask, checked equal on every rank
    rewound, optimizer_state = rewind_state(ctx, replicate_dir, replicate, k)
    run = level_dir(replicate_dir, k, level)
    ctx.runtime.label = f"r{replicate} k={k} level {level} ({100 * mask.density():.1f}%)"
    job = ctx.job(replicate, start=k, mask=mask, optimizer_state=optimizer_state)
    train(run, ctx.model(0, mask.apply_to(rewound)), ctx.data, job, ctx.runtime)
    return mask
