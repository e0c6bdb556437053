"""Iterative magnitude pruning with rewinding (Algorithm 1 of "Stabilizing the LTH"): the engine's driver of the step
`lottery.imp` shares (experiments/imp_step.py: prune, rewind, a control's start).

Level 0 trains the dense network from W_0 to T once, saving W_k at every rewind point. For each k,
level L >= 1 prunes level L-1's final weights (among surviving weights only) and trains m_L ⊙ W_k from
iteration k to T, with the schedule and data order continuing from k.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from lottery import events
from lottery.errors import UserError
from lottery.experiments import imp_step, recipes, tasks
from lottery.experiments.context import Context
from lottery.experiments.tasks import MissingDependency
from lottery.pruning import Mask
from lottery.store import RunDir, layout, locked
from lottery.store.networks import claim
from lottery.store.provenance import read_metadata
from lottery.training import distributed, is_finished, train, train_together


def stacked_replicates(ctx: Context, replicate: int) -> list[int]:
    """The other replicates whose runs `replicate`'s task trains with its own, as one stacked model: all of them
    where runs are stacked, else none. Their own tasks then find them finished."""
    return [r for r in range(ctx.spec.replicates) if r != replicate] if recipes.replicates_stacked(ctx) else []


def train_dense(ctx: Context, replicate_dir: RunDir, replicate: int, alone: bool = False) -> dict[str, Any]:
    """Level 0: the dense network from W_0 to T, with W_k (and optimizer state at k) saved for every k; with the
    other replicates' dense networks where runs are stacked, unless `alone`."""
    replicates = [replicate, *([] if alone else stacked_replicates(ctx, replicate))]
    runs = [layout.dense(layout.sibling(replicate_dir, r)) for r in replicates]
    # replicate r at position r
    group = [layout.dense(layout.sibling(replicate_dir, r)) for r in range(ctx.spec.replicates)]
    snapshot_optimizer = ctx.spec.imp.optimizer_state == "rewind"
    points = tuple(ctx.dense_snapshots)
    jobs = [
        ctx.job(r, snapshots=points, snapshot_optimizer=snapshot_optimizer, tags=ctx.tags(run, r, "dense", 0))
        for r, run in zip(replicates, runs)
    ]
    unfinished = [(r, run) for r, run, job in zip(replicates, runs, jobs) if not is_finished(run, job)]
    if not unfinished:  # (each file is verified once, here)
        return runs[0].read_json("summary.json")
    for r, run in unfinished:
        if run.read_json("summary.json") is not None and run.exists("final.safetensors"):
            # shared with experiments needing other points
            fill_snapshots(ctx, layout.sibling(replicate_dir, r), r, points)
    models = [ctx.model(ctx.training(r).init_seed) for r in replicates]
    ctx.runtime.label = f"r{replicate} level 0 (dense)" if len(runs) == 1 else "level 0 (dense)"
    if not recipes.replicates_stacked(ctx):
        return train(runs[0], models[0], ctx.data, jobs[0], ctx.runtime)
    return train_together(runs, models, ctx.data, jobs, ctx.runtime, stacked=True, group=group)[0]


def snapshot_names(ctx: Context, k: int) -> list[str]:
    """The files of W_k in the dense run: the weights, and the optimizer state where IMP rewinds it."""
    rewind = ctx.spec.imp.optimizer_state == "rewind"
    return [layout.snapshot(k)] + ([layout.snapshot(k, optimizer=True)] if rewind else [])


def prefix_end(ctx: Context, k: int) -> int:
    """Where a prefix run for W_k stops: at k under the step schedule (its learning rate does not depend on the end of
    training); under the cosine schedule, whose does, the whole schedule (it still snapshots W_k)."""
    return k if ctx.spec.training.schedule == "step" else ctx.schedule.end


def train_prefix(ctx: Context, run: RunDir, r: int, points: tuple[int, ...], dense: RunDir | None = None) -> dict:
    """Retrain replicate r's dense run from W_0 up to `prefix_end` of the last of `points` with its seeds, saving W_k
    at each, with the arithmetic `dense` (the finished dense run) records: a member of a stacked group trains at its
    position in a stack of its group's size (the other positions stand-ins), so its weights are the dense run's bit
    for bit."""
    schedule = dataclasses.replace(ctx.schedule, end=prefix_end(ctx, max(points)))
    tags = ctx.tags(run, r, "dense_prefix", 0, rewind=max(points))
    # the optimizer state at k is saved whatever imp.optimizer_state says: a prefix's recipe leaves the option out
    job = dataclasses.replace(ctx.job(r, snapshots=points, snapshot_optimizer=True, tags=tags), schedule=schedule)
    model = ctx.model(ctx.training(r).init_seed)
    ctx.runtime.label = f"r{r} dense prefix 0..{max(points)}"
    summary = dense.read_json("summary.json") if dense is not None else None
    arithmetic = (summary or {}).get("arithmetic") or {
        "stacked": recipes.replicates_stacked(ctx),
        "group": ["."],
        "position": 0,
    }
    if not arithmetic.get("stacked"):
        return train(run, model, ctx.data, job, ctx.runtime)
    position = arithmetic["position"]
    group = [run if i == position else layout.stand_in(run, i) for i in range(len(arithmetic["group"]))]
    return train_together([run], [model], ctx.data, [job], ctx.runtime, stacked=True, group=group)[0]


def fill_snapshots(ctx: Context, replicate_dir: RunDir, r: int, points: tuple[int, ...]) -> None:
    """W_k for each k of `points` in a finished dense run that lacks it (it was trained for an experiment with other
    rewind points, k is off the grid, or the file failed verification): the dense run's first iterations are
    retrained once for all of them in a prefix run (a network of its own), and each W_k written into the dense run
    with the dense run's own provenance -- the bytes the dense run would have written, since the prefix computes
    the same weights bit for bit."""
    dense = layout.dense(replicate_dir)
    summary = dense.read_json("summary.json")
    if summary is None:
        return
    reached = [k for k in points if not (summary["diverged"] and summary["diverged_at"] <= k)]  # (else rewind_state)
    missing = tuple(k for k in reached if not all([dense.read(n) is not None for n in snapshot_names(ctx, k)]))
    if not missing:  # (every file that fails verification is reported above)
        return
    # a network of the store that no experiment links: its W_k are copied into the dense run, which the
    # experiments' views name, so what each experiment lists never depends on which one made the prefix
    recipe = recipes.prefix(ctx, r, missing, recipes.dense(ctx, r)["arithmetic"])
    run = RunDir(claim(layout.store_of_run(replicate_dir.path), recipe))
    trained = train_prefix(ctx, run, r, missing, dense)
    if trained["diverged"] and trained["diverged_at"] <= max(missing):
        raise UserError(
            f"{run.path} diverged at iteration {trained['diverged_at']}, before rewind point {max(missing)}"
        )
    own = {
        key: value
        for key, value in read_metadata(dense.path / "final.safetensors").items()
        if key not in ("file", "iteration")
    }
    with locked(dense.path):
        for name in (name for k in missing for name in snapshot_names(ctx, k)):
            if dense.exists(name):
                continue
            if name.endswith(".safetensors"):
                dense.with_provenance(own).write_tensors(name, run.read_tensors(name))
            else:
                dense.write(name, run.read(name))


def rewind_state(ctx: Context, replicate_dir: RunDir, replicate: int, k: int) -> tuple[dict, dict | None]:
    """(W_k, optimizer state at k or None), read from the dense run; `MissingDependency` (the dense run's task)
    where they are not in the store."""
    run = layout.dense(replicate_dir)
    weights = run.read_tensors(layout.snapshot(k))
    optimizer = run.read_torch(layout.snapshot(k, optimizer=True)) if ctx.spec.imp.optimizer_state == "rewind" else None
    if weights is None or (ctx.spec.imp.optimizer_state == "rewind" and optimizer is None):
        summary = run.read_json("summary.json")
        if summary is not None and summary["diverged"] and summary["diverged_at"] < k:  # it never reached k
            raise UserError(
                f"{run.path} diverged at iteration {summary['diverged_at']}, before rewind point {k}; "
                "lower training.lr or choose an earlier imp.rewind"
            )
        raise MissingDependency(tasks.dense(replicate), f"W_{k} of the dense run {run.path}")
    return weights, optimizer


def skipped(replicate_dir: RunDir, k: int, level: int) -> bool:
    """Whether IMP level `level` is never trained: the nearest run below it in the chain that finished diverged."""
    for below in range(level - 1, -1, -1):
        summary = layout.imp_run(replicate_dir, k, below).read_json("summary.json")
        if summary is not None:
            return bool(summary["diverged"])
    return False


def level_mask(ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int) -> Mask | None:
    """The mask of the finished IMP level `level` >= 1; None where it is never trained (an earlier run of its chain
    diverged); `MissingDependency` (the level's task) where it is not in the store."""
    run = layout.level(replicate_dir, k, level)
    if run.read_json("summary.json") is not None and run.exists("final.safetensors"):
        stored = run.read_tensors("mask.safetensors")
        if stored is not None:
            return ctx.mask(stored)
    if skipped(replicate_dir, k, level):
        return None
    raise MissingDependency(tasks.level(replicate, k, level), f"IMP level {level} ({run.path})")


def run_level(ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int) -> Mask | None:
    """IMP level L >= 1 for rewind point k (`imp_step.level`): prune level L-1's final weights (among its surviving
    weights) and train m_L ⊙ W_k from k to T. Returns the mask, or None when an earlier level diverged (its
    weights are not finite: there is nothing to prune). Level L-1 must be in the store (else `MissingDependency`).
    Where the replicates are stacked (`stacked`: the plan's one task for them), every replicate's level L trains,
    as one stacked model: those whose level L-1 did not diverge."""
    members = [replicate, *stacked_replicates(ctx, replicate)]
    previous = {r: _previous(ctx, layout.sibling(replicate_dir, r), r, k, level) for r in members}
    group = [r for r in members if previous[r] is not None]
    if not group:
        return None
    ctx.runtime.label = f"r{replicate} k={k} level {level}" if len(members) == 1 else f"k={k} level {level}"
    runs = {r: layout.level(layout.sibling(replicate_dir, r), k, level) for r in group}
    rewound = [imp_step.Rewound(k, *rewind_state(ctx, layout.sibling(replicate_dir, r), r, k)) for r in group]
    one_shot = ctx.spec.imp.one_shot_density if level == 1 else None

    def train_group(starts: list[imp_step.Start]) -> list[Mask]:
        """The engine's training of a level's group: alone, or as one stacked model (replicate r at position r)."""
        models, jobs = [], []
        for r, start in zip(group, starts):
            mask = distributed.broadcast_mask(start.mask)  # under torchrun: rank 0's mask, checked equal on every rank
            tags = ctx.tags(runs[r], r, "imp", level, k)
            models.append(ctx.model(0, start.weights))
            jobs.append(ctx.job(r, start=k, mask=mask, optimizer_state=start.optimizer_state, tags=tags))
        if not recipes.replicates_stacked(ctx):
            train(runs[group[0]], models[0], ctx.data, jobs[0], ctx.runtime)
        else:
            positions = [layout.level(layout.sibling(replicate_dir, r), k, level) for r in range(ctx.spec.replicates)]
            train_together([runs[r] for r in group], models, ctx.data, jobs, ctx.runtime, stacked=True, group=positions)
        return [job.mask for job in jobs]

    masks = imp_step.level([previous[r] for r in group], rewound, rules(ctx), train_group, one_shot)
    for r in group:  # the levels in the store now (trackers and your code may listen)
        events.emit(events.LevelTrained(runs[r].path, r, k, level))
    return masks[group.index(replicate)] if replicate in group else None


def rules(ctx: Context) -> imp_step.Rules:
    """How the spec's levels prune: its network's layer kinds and its pruning settings."""
    return imp_step.Rules(ctx.layer_kinds, ctx.spec.pruning)


def _previous(ctx: Context, replicate_dir: RunDir, replicate: int, k: int, level: int) -> imp_step.Trained | None:
    """The run before IMP level L (the dense run, or level L-1) as the step reads it, or None where it diverged (or
    was never trained for that reason); it must be in the store (else `MissingDependency`)."""
    previous = layout.dense(replicate_dir) if level == 1 else layout.level(replicate_dir, k, level - 1)
    summary, final = previous.read_json("summary.json"), previous.read_tensors("final.safetensors")
    stored_mask = previous.read_tensors("mask.safetensors")
    if summary is None or final is None or stored_mask is None:
        if skipped(replicate_dir, k, level - 1):
            return None
        raise MissingDependency(
            tasks.level(replicate, k, level - 1), f"the run before IMP level {level} ({previous.path})"
        )
    if summary["diverged"]:
        if previous.path not in ctx.announced:  # once, whichever tasks find it
            ctx.announced.add(previous.path)
            print(
                f"lottery: {previous.path} diverged at iteration {summary['diverged_at']}; "
                f"IMP level {level} and later levels (and their controls) skipped",
                file=sys.stderr,
            )
        return None
    return imp_step.Trained(ctx.mask(stored_mask), final)
