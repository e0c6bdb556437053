"""Stability of dynamic sparsity (`stability.dynamic`, issue 28; docs/dynamic.md): do two copies of a RigL, SET or
GMP run, continued from the same point k with other SGD noise, end in one linearly connected basin, and with the
same mask?

For each listed method, target density and seed, the method's run saves its whole state at every stability point k
(W_k, the optimizer state, and the handle's mask, step and history: experiments/dynamic.py `state_points`). Copy i
starts from that state and continues the method to the end of training (its mask updates included) with its own
data-order and augmentation seeds, and, for SET, its own regrowth seed: each derived from the chain's seed values,
the run's recorded seed and i with a purpose of its own (lottery.seeding: `dynamic.copy_*`). Its optimizer state at
k follows `imp.optimizer_state`, as every other copy's ('rewind': the run's state at k; 'fresh': a new optimizer).
Each copy is a network of the store (kind `dynamic_copy`, its recipe: the run's, k, the option, i) at
`rewind_<k>it/stability/level_<L>/dynamic/<method>/density_<d>_seed<s>/<method>_copy<i>`, L the first analysed
level, whose task (stability.run_point) trains the copies after the IMP subjects' and writes their analysis into
its `analysis.json`: per pair of copies, IMP's measures (the error barrier along the same linear interpolation,
distances, function-space agreement) over the coordinates either copy or the start uses (zero elsewhere in all
three), and `mask_jaccard` = |A ∩ B| / |A ∪ B| of the copies' final masks over the weights the method makes sparse
(`dynamic.pool`). `summary` adds, per (k, method, density), the mean and 95% interval of both over replicates
(results.json's `stability.dynamic`).

Wiring (marked `# stability.dynamic (issue 28)`): stability.run_point calls `records`, views.stability_step adds
`dependencies`, views.copies yields `networks`, run.results_of adds `summary`.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from lottery import seeding
from lottery.analysis import barrier
from lottery.dynamic.config import METHODS, Config
from lottery.experiments import dynamic, recipes
from lottery.experiments.context import Context
from lottery.experiments.tasks import MissingDependency
from lottery.measures import Trained
from lottery.pruning import Mask
from lottery.results.conclusions import barrier_estimate
from lottery.results.rows import stats
from lottery.spec import TrainingSpec
from lottery.store import RunDir, layout
from lottery.training import Job

Subject = tuple[str, float, int]  # (method, target density, seed)
PAIR_KEYS = ("a", "b", "stable", "curve")  # a pair's fields that are not measures


def subjects(ctx: Context, k: int, level: int) -> list[Subject]:
    """(method, density, seed) of every dynamic run whose copies the stability point (k, level) trains: at each
    stability point k, in the first analysed level's point; none elsewhere (a rewind search's probe included)."""
    if level != recipes.dense_copies_level(ctx) or k not in ctx.stability_points:
        return []
    group = ctx.spec.dynamic
    return [(m, d, s) for m in ctx.spec.stability.dynamic for d in group.densities for s in group.seeds]


def subject_dir(rdir: Any, k: int, level: int, subject: Subject) -> Any:
    """Where a subject's copies and interpolation curves live: the dynamic layout below the point's stability
    directory."""
    return layout.dynamic_run(layout.stability(rdir, k, level), *subject)


def copy_training(training: TrainingSpec, seed: int, i: int) -> TrainingSpec:
    """Copy i's data-order and augmentation seeds, from the chain's (`training`'s), the run's recorded seed and i."""
    return dataclasses.replace(
        training,
        data_order_seed=seeding.derive("dynamic.copy_data_order", training.data_order_seed, seed, i) % 2**31,
        augmentation_seed=seeding.derive("dynamic.copy_augmentation", training.augmentation_seed, seed, i) % 2**31,
    )


def copy_config(config: Config, i: int) -> Config:
    """The run's settings, with copy i's own regrowth seed (SET's; the other methods draw nothing after the start)."""
    return config.replace(seed=seeding.derive("dynamic.copy_growth", config.seed, i))


def recipe(ctx: Context, r: int, k: int, subject: Subject, i: int) -> dict[str, Any]:
    """Copy i from k of the dynamic run `subject`: the run's full recipe (its state at k depends on how it was
    computed, arithmetic included), k, the optimizer-state option and i."""
    method, density, seed = subject
    return {
        "kind": "dynamic_copy",
        "version": recipes.VERSIONS["dynamic_copy"],
        "subject": dynamic.key(ctx, r, method, density, seed),
        "rewind_iteration": k,
        "optimizer_state": ctx.spec.imp.optimizer_state,
        "copy": i,
        "arithmetic": recipes.arithmetic(ctx, stacked=False),
    }


def networks(ctx: Context, rdir: Path, r: int, k: int, level: int) -> list[tuple[Any, Callable[[], dict]]]:
    """(run directory, its recipe when called) of every dynamic copy the point (k, level) trains: the point's own
    task trains them (views.copies)."""
    return [
        (layout.copy(subject_dir(rdir, k, level, subject), subject[0], i), partial(recipe, ctx, r, k, subject, i))
        for subject in subjects(ctx, k, level)
        for i in range(ctx.spec.stability.copies)
    ]


def dependencies(ctx: Context, r: int, k: int, level: int) -> tuple[str, ...]:
    """The tasks of the dynamic runs the point (k, level) continues (plan.py)."""
    return tuple(dict.fromkeys(dynamic.task_name(r, *subject) for subject in subjects(ctx, k, level)))


def state_at(ctx: Context, rdir: RunDir, r: int, subject: Subject, k: int) -> tuple[dict, dict | None, dict] | None:
    """(W_k, the optimizer state at k or None ('fresh'), the handle's state at k) of the finished dynamic run; None
    where it diverged before k; `MissingDependency` (the run's task) where they are not in the store."""
    run = layout.dynamic_run(rdir, *subject)
    summary = run.read_json("summary.json")
    if summary is not None and summary["diverged"] and summary["diverged_at"] < k:
        return None
    weights, state = run.read_tensors(layout.snapshot(k)), run.read_torch(dynamic.state_name(k))
    rewind = ctx.spec.imp.optimizer_state == "rewind"
    optimizer = run.read_torch(layout.snapshot(k, optimizer=True)) if rewind else None
    if summary is None or weights is None or state is None or (rewind and optimizer is None):
        raise MissingDependency(dynamic.task_name(r, *subject), f"the state at iteration {k} of the run {run.path}")
    return weights, optimizer, state


def train_copy(
    ctx: Context, rdir: RunDir, run: RunDir, r: int, k: int, subject: Subject, i: int, training: TrainingSpec
) -> dict[str, Any] | None:
    """Train copy i of `subject` (replicate r's run, in `rdir`) from its state at k in `run` with `training`'s seeds,
    or read it back; None where the run diverged before k."""
    found = state_at(ctx, rdir, r, subject, k)
    if found is None:
        return None
    method, density, seed = subject
    weights, optimizer, state = found
    config = copy_config(dynamic.config(ctx, method, density, seed, r), i)
    state = {**state, "config": dataclasses.asdict(config)}  # the run's mask, step and history; the copy's seed
    names = dynamic.pool(ctx)
    model = ctx.model(0, weights)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    mask = dynamic.full_mask(ctx, Mask({name: state["mask"][name] for name in names}), shapes)
    tags = ctx.tags(run, r, method, None, k, seed=seed, copy=i, target_density=density)
    job = Job(training, ctx.schedule, start=k, mask=mask, optimizer_state=optimizer, augment=ctx.augment, tags=tags)
    ctx.runtime.label = f"r{r} k={k} {method} {100 * density:.3g}% copy {i}"
    return dynamic.train_dynamic(run, model, ctx.data, job, ctx.runtime, config, names, start=state)


def copies(ctx: Context, rdir: RunDir, r: int, k: int, level: int, subject: Subject) -> list[RunDir] | None:
    """Train (or read back) every copy of `subject` from k; None where its run diverged before k."""
    where = subject_dir(rdir, k, level, subject)
    runs = [layout.copy(where, subject[0], i) for i in range(ctx.spec.stability.copies)]
    for i, run in enumerate(runs):
        if train_copy(ctx, rdir, run, r, k, subject, i, copy_training(ctx.training(r), subject[2], i)) is None:
            return None
    return runs


def records(ctx: Context, analyzer: Any, rdir: RunDir, r: int, k: int, level: int, dense: list[RunDir]) -> list[dict]:
    """Train the copies of every `stability.dynamic` subject of (k, level) and return their analysis records
    (stability.run_point; `analyzer`: its stability.Analyzer, `dense`: the dense network's copies at k)."""
    out = []
    for subject in subjects(ctx, k, level):
        runs = copies(ctx, rdir, r, k, level, subject)
        out.append(point(ctx, analyzer, r, subject, runs, dense, subject_dir(rdir, k, level, subject)))
    return out


def final_mask(ctx: Context, run: RunDir) -> Mask:
    """A finished copy's final mask over the weights the method makes sparse (`dynamic.pool`)."""
    stored = run.read_tensors("mask.safetensors")
    return Mask({name: stored[name].bool() for name in dynamic.pool(ctx)})


def coordinates(ctx: Context, masks: list[Mask], model: Any) -> Mask:
    """The coordinates a pair's distances cover: those any of `masks` keeps (the two copies' final masks and the
    mask at k: every other coordinate is zero in both copies and at the start), plus with
    `stability.distance_params = 'all'` every coordinate of every other parameter (as stability.distance_mask)."""
    kept = {name: masks[0][name].bool().clone() for name in masks[0]}
    for mask in masks[1:]:
        for name in kept:
            kept[name] |= mask[name].bool()
    if ctx.spec.stability.distance_params == "all":
        for name, p in model.named_parameters():
            kept.setdefault(name, p.detach().new_ones(p.shape, dtype=bool).cpu())
    return Mask(kept)


def summarize(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pairs, and mean/min/max of each measure over them (stability.py's shape)."""
    measures = [key for key in (pairs[0] if pairs else {}) if key not in PAIR_KEYS]
    return {"pairs": pairs, **{key: stats([p[key] for p in pairs]) for key in measures}}


def point(
    ctx: Context, analyzer: Any, r: int, subject: Subject, runs: list[RunDir] | None, dense: list[RunDir], out: RunDir
) -> dict[str, Any]:
    """The analysis record of one subject: stability.Analyzer.point's shape, kind = the method, target_density and
    seed the run's, no pruning distance; per pair `mask_jaccard` = the Jaccard overlap of the copies' final masks."""
    method, density, seed = subject
    chain = ctx.training(r)
    seeds = {
        "init_seed": chain.init_seed,
        "data_order_seed": chain.data_order_seed,
        "augmentation_seed": chain.augmentation_seed,
    }
    identity = {"kind": method, "density": None, "target_density": density, "seed": seed, "chain_seeds": seeds}
    summaries = [run.read_json("summary.json") for run in runs or []]
    finals = [run.read_tensors("final.safetensors") for run in runs or []]
    if runs is None or any(s is None or s["diverged"] for s in summaries) or any(f is None for f in finals):
        return {**identity, "diverged": True}
    starts = [run.read_tensors("start.safetensors") for run in runs]
    references = [run.read_tensors("final.safetensors") for run in dense]
    full = [ctx.mask(run.read_tensors("mask.safetensors")) for run in runs]  # the final masks, every prunable layer
    at_k = ctx.mask(runs[0].read_tensors("initial_mask.safetensors"))  # the mask at k, where every copy starts
    masks = [final_mask(ctx, run) for run in runs]
    identity["density"] = statistics.fmean(mask.density for mask in full)
    record: dict[str, Any] = {
        **identity,
        "diverged": False,
        "copies": [
            {
                "path": analyzer.rel(run),
                "data_order_seed": copy_training(chain, seed, i).data_order_seed,
                "augmentation_seed": copy_training(chain, seed, i).augmentation_seed,
                "final_test_accuracy": summary["final_test_accuracy"],
                "density": mask.density,
            }
            for i, (run, summary, mask) in enumerate(zip(runs, summaries, full))
        ],
        "pruning": None,  # no (W_k, m) of the dense run: the copies move their masks
    }
    threshold = analyzer.settings["threshold"]
    # every registered measure (lottery.measures); a copy's "next mask" is its own final mask, so `mask_jaccard` is
    # the Jaccard overlap of the two copies' final masks over the layers the method makes sparse
    copies = [
        Trained(final, start, partial(analyzer.predictions, run, final), lambda mask=mask: mask)
        for run, final, start, mask in zip(runs, finals, starts, masks)
    ]
    pairs = []
    for i, j in itertools.combinations(range(len(runs)), 2):
        name = f"{method}_interpolation_{i}_{j}.json"
        a, b = analyzer.rel(runs[i]), analyzer.rel(runs[j])
        curve = analyzer.curve(out, name, (a, b), finals[i], finals[j])
        where = coordinates(ctx, [full[i], full[j], at_k], analyzer.model)
        reference = references[i] if i < len(references) else None
        pairs.append(
            {
                "a": a,
                "b": b,
                **analyzer.compare("data_order", copies[i], copies[j], where, reference, curve),
                "stable": barrier(curve["test_error"]) < threshold,
                "curve": analyzer.rel(out / name),
            }
        )
    record["data_order"] = summarize(pairs)
    record["data_order"]["stable"] = all(p["stable"] for p in pairs)
    record["data_order"]["stable_mean_barrier"] = record["data_order"]["barrier_test"]["mean"] < threshold
    return record


def summary(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (k, method, target density): the test error barrier and the Jaccard overlap of the final masks, each
    as a mean and 95% interval over replicates (with one replicate: a jackknife over its copies;
    conclusions.barrier_estimate), from stability.collect's points (results.json's `stability.dynamic`)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        if p["kind"] in METHODS and p.get("target_density") is not None:
            groups[(p["rewind_iteration"], p["kind"], p["target_density"])].append(p)
    out = []
    for (k, kind, target), members in sorted(groups.items()):
        fine = [p for p in members if not p["diverged"]]
        row: dict[str, Any] = {
            "rewind_iteration": k,
            "kind": kind,
            "target_density": target,
            "replicates": len(members),
            "diverged": len(members) - len(fine),
        }
        row["density"] = statistics.fmean(p["density"] for p in fine) if fine else None
        for measure, name in (("barrier_test", "barrier"), ("mask_jaccard", "jaccard")):
            estimate = barrier_estimate([[pair[measure] for pair in p["data_order"]["pairs"]] for p in fine])
            row.update({f"{name}_mean": estimate["barrier_mean"], f"{name}_interval": estimate["barrier_interval"]})
            row.update(unit=estimate["unit"], n=estimate["n"])
        out.append(row)
    return out
