"""Masks found without IMP's retraining, trained like the controls: each `[masks]` source computes its mask
from W_k of the dense run (k = `masks.at`; k = 0: pruning at initialization) to each target density, and the
subnetwork m ⊙ W_k trains from k to T. Ablations (Frankle et al., "Pruning Neural Networks at
Initialization: Why Are We Missing the Mark?", ICLR 2021, §5): `shuffle` permutes the mask within each layer,
`reinit` trains the mask from fresh weights, `invert` keeps the lowest scores. `early_bird` traces the mask of
`masks.early_bird_source` over the dense run's snapshots and uses it from the iteration where it settles."""

from __future__ import annotations

from typing import Any

import torch

from lottery import seeding
from lottery.experiments import recipes, tasks
from lottery.experiments.context import Context
from lottery.experiments.imp import rewind_state
from lottery.experiments.imp_step import chain_seeds
from lottery.experiments.mask_points import at_iteration, trace_points
from lottery.experiments.mask_recipe import score_mode
from lottery.experiments.tasks import MissingDependency
from lottery.models import Network
from lottery.pruning import Mask, random_like
from lottery.pruning.early_bird import TRACE_NORMALISATION, WINDOW, drawn_at, mask_distance, random_expectation
from lottery.pruning.sources import find_mask, sources
from lottery.results import rows as results
from lottery.results.kinds import split_kind
from lottery.spec import ExperimentSpec, TrainingSpec
from lottery.store import RunDir, layout
from lottery.training import Job, train, train_together
from lottery.training.loop import is_finished


def kinds(spec: ExperimentSpec) -> list[str]:
    """Every kind of run the spec asks for: each source, then `<source>_<ablation>`."""
    return spec.masks.kinds()


def derived_seed(kind: str, seed: int, training: TrainingSpec) -> int:
    """The seed a source or ablation actually uses, from its kind, its recorded seed and the seed values of the
    dense run it prunes (`training`: the replicate's training settings), never a replicate's number."""
    source, ablation = split_kind(kind)
    if ablation is None:
        return seeding.derive(f"masks.{source}", seed, *chain_seeds(training))
    return seeding.derive(f"masks.{ablation}", seeding.STREAMS[f"masks.{source}"], seed, *chain_seeds(training))


def trace_seed(training: TrainingSpec) -> int:
    """The seed of the early-bird trace's scoring batches (one trace per dense run)."""
    return seeding.derive("masks.trace", *chain_seeds(training))


def score_batches(ctx: Context, derived: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`masks.snip_batches` training batches of `training.batch_size`, drawn without replacement by `derived`."""
    size, count = ctx.spec.training.batch_size, ctx.spec.masks.option("snip_batches")
    n = len(ctx.data.train_x)
    order = torch.randperm(n, generator=seeding.seeded(derived))[: size * count].to(ctx.data.train_x.device)
    return [(ctx.data.train_x[idx], ctx.data.train_y[idx]) for idx in order.split(size)]


def compute_mask(
    ctx: Context, weights: dict[str, torch.Tensor], source: str, density: float, derived: int, invert: bool
) -> Mask:
    """`source`'s mask at `density` of the network holding `weights`, with the spec's scope, rounds, schedule
    and ignore rules, and the source's own options (its registration's: `[masks]` keys)."""
    spec = ctx.spec.masks
    model = ctx.model(0, weights)
    registered = sources.get(source)
    options = {key: spec.option(key) for key in registered.option_types()}
    mask = find_mask(
        model,
        source,
        density=density,
        scope=spec.scope,
        rounds=spec.rounds.get(source),
        schedule=spec.schedule,
        invert=invert,
        ignore=ctx.spec.pruning.layers_to_ignore,
        layer_kinds=ctx.layer_kinds,
        structure=ctx.spec.pruning,
        names=list(ctx.layer_kinds),
        batches=score_batches(ctx, derived) if registered.needs_data else None,
        seed=derived % 2**63,
        input_shape=ctx.data.input_shape,
        score_mode=score_mode(spec, source),
        **options,
    )
    return ctx.mask(mask)


def dense_weights(ctx: Context, replicate_dir: RunDir, replicate: int, t: int) -> dict[str, torch.Tensor]:
    """W_t of the dense run: a snapshot, or the final weights at the end."""
    run = layout.dense(replicate_dir)
    if t == ctx.schedule.end:
        weights = run.read_tensors("final.safetensors")
    else:
        weights = run.read_tensors(layout.snapshot(t))
    if weights is None:
        raise MissingDependency(tasks.dense(replicate), f"W_{t} of the dense run {run.path}")
    return weights


def _current(stored: dict[str, Any] | None, spec: Any) -> bool:
    """Whether a stored trace was computed as the spec asks now: the normalisation, the rule and its window."""
    return (
        stored is not None
        and stored.get("normalised_by") == TRACE_NORMALISATION
        and stored.get("rule") == spec.early_bird_rule
        and stored.get("window") == WINDOW
    )


def trace(ctx: Context, replicate_dir: RunDir, replicate: int) -> dict[str, Any]:
    """The early-bird trace of one replicate (computed once, then read from `masks/early_bird.json`): for each
    target density, the distance between the masks at successive trace points and from each mask to the previous
    WINDOW - 1 (normalised by the weights kept: `lottery.pruning.early_bird`), and the iteration where the ticket
    is drawn (`settled_at`) under `masks.early_bird_rule` (online, You et al.'s, by default; None: never, the
    final mask is then used). A trace stored under another normalisation, rule or window (or before they were
    recorded) is computed again."""
    out = layout.masks(replicate_dir)
    stored = out.read_json("early_bird.json")
    spec = ctx.spec.masks
    if _current(stored, spec):
        return stored
    points = trace_points(ctx)
    derived = trace_seed(ctx.training(replicate))
    history: dict[float, list[Mask]] = {d: [] for d in spec.densities}  # the last WINDOW - 1 masks, newest last
    distances: dict[float, list[float | None]] = {d: [] for d in spec.densities}
    recent: dict[float, list[list[float] | None]] = {d: [] for d in spec.densities}
    for t in points:
        weights = dense_weights(ctx, replicate_dir, replicate, t)
        for density in spec.densities:
            mask = compute_mask(ctx, weights, spec.early_bird_source, density, derived, invert=False)
            before = history[density]
            to_previous = [mask_distance(m, mask, TRACE_NORMALISATION) for m in reversed(before)]  # newest first
            distances[density].append(to_previous[0] if to_previous else None)
            recent[density].append(to_previous if len(to_previous) == WINDOW - 1 else None)
            history[density] = [*before, mask][-(WINDOW - 1) :]
    data = {
        "source": spec.early_bird_source,
        "threshold": spec.early_bird_threshold,
        "normalised_by": TRACE_NORMALISATION,
        "rule": spec.early_bird_rule,
        "window": WINDOW,
        "iterations": points,
        "densities": [
            {
                "density": density,
                "distances": distances[density],
                "window_distances": recent[density],
                "settled_at": drawn_at(
                    spec.early_bird_rule, points, distances[density], recent[density], spec.early_bird_threshold
                ),
            }
            for density in spec.densities
        ],
    }
    out.write_json("early_bird.json", data)
    return data


def early_bird_iteration(ctx: Context, replicate_dir: RunDir, replicate: int, density: float) -> int:
    stored = layout.masks(replicate_dir).read_json("early_bird.json")
    if not _current(stored, ctx.spec.masks):
        raise MissingDependency(tasks.mask_trace(replicate), f"the early-bird trace of replicate {replicate}")
    entry = next(e for e in stored["densities"] if e["density"] == density)
    return entry["settled_at"] if entry["settled_at"] is not None else ctx.schedule.end


def source_mask(
    ctx: Context, replicate_dir: RunDir, replicate: int, source: str, density: float, seed: int, invert: bool
) -> tuple[Mask, dict[str, Any]]:
    """(mask, what was recorded about it) of `source` at `density` for this replicate and recorded seed."""
    derived = derived_seed(f"{source}_invert" if invert else source, seed, ctx.training(replicate))
    if source == "early_bird":
        t = early_bird_iteration(ctx, replicate_dir, replicate, density)
        weights = dense_weights(ctx, replicate_dir, replicate, t)
        derived = trace_seed(ctx.training(replicate))
        mask = compute_mask(ctx, weights, ctx.spec.masks.early_bird_source, density, derived, invert)
        return mask, {"computed_at": t, "early_bird_source": ctx.spec.masks.early_bird_source}
    k = at_iteration(ctx)
    weights = dense_weights(ctx, replicate_dir, replicate, k)
    return compute_mask(ctx, weights, source, density, derived, invert), {"computed_at": k, "derived_seed": derived}


def run_source(ctx: Context, replicate_dir: RunDir, replicate: int, kind: str, density: float, seed: int) -> dict:
    """Train the subnetwork of mask source (or ablation) `kind` at `density`, or read it back. Where they are
    stacked (`stacked`: the plan's one task for them), every kind the spec plans at this density and seed trains
    with it, as one stacked model, as a level's controls do."""
    group = kinds(ctx.spec)
    together = recipes.masks_stacked(ctx)  # the same for every caller (the recipe's arithmetic)
    wanted = [kind] + ([other for other in group if other != kind] if together else [])
    k = at_iteration(ctx)
    runs = [layout.mask_run(replicate_dir, other, density, seed) for other in wanted]
    if is_finished(runs[0], ctx.job(replicate, start=k)) and not together:
        return runs[0].read_json("summary.json")
    if all(is_finished(run, ctx.job(replicate, start=k)) for run in runs):
        return runs[0].read_json("summary.json")
    memo: dict[tuple[str, bool], tuple[Mask, dict[str, Any]]] = {}
    models, jobs = [], []
    for other, run in zip(wanted, runs, strict=True):
        model, job = mask_start(ctx, replicate_dir, replicate, other, density, seed, run, memo)
        models.append(model)
        jobs.append(job)
    ctx.runtime.label = f"r{replicate} " + (
        f"masks {100 * density:.3g}%" if together else f"{kind} {100 * density:.3g}%"
    )
    if not together:
        return train(runs[0], models[0], ctx.data, jobs[0], ctx.runtime)
    return train_together(runs, models, ctx.data, jobs, ctx.runtime, stacked=True)[0]


def mask_start(
    ctx: Context,
    replicate_dir: RunDir,
    replicate: int,
    kind: str,
    density: float,
    seed: int,
    run: RunDir,
    memo: dict[tuple[str, bool], tuple[Mask, dict[str, Any]]],
) -> tuple[Network, Job]:
    """(model holding m ⊙ W_k, job) of one [masks] run; records how its mask was made in `source.json`.
    `memo` shares the masks computed for one group of runs."""
    k = at_iteration(ctx)
    source, ablation = split_kind(kind)
    record: dict[str, Any] = {
        "kind": kind,
        "source": source,
        "ablation": ablation,
        "target_density": density,
        "seed": seed,
        "replicate": replicate,
        "at": k,
        "scope": ctx.spec.masks.scope,
    }
    invert = ablation == "invert"
    if (source, invert) not in memo:
        memo[(source, invert)] = source_mask(ctx, replicate_dir, replicate, source, density, seed, invert)
    mask, info = memo[(source, invert)]
    record.update(info)
    rewound, optimizer_state = rewind_state(ctx, replicate_dir, replicate, k)
    if ablation is not None:
        record["ablation_seed"] = derived_seed(kind, seed, ctx.training(replicate))
    if ablation == "shuffle":
        mask = random_like(mask, None, seeding.seeded(record["ablation_seed"]), ctx.spec.pruning)
    if ablation == "reinit":
        fresh = ctx.model(record["ablation_seed"] % 2**63)
        rewound, optimizer_state = {n: v.detach().cpu() for n, v in fresh.state_dict().items()}, None
    record["mask"] = mask.report()
    if not is_finished(run, ctx.job(replicate, start=k)):
        run.write_json("source.json", record)
    tags = ctx.tags(run, replicate, kind, None, k, seed=seed, target_density=density)  # level: none (not IMP)
    job = ctx.job(replicate, start=k, mask=mask, optimizer_state=optimizer_state, tags=tags)
    return ctx.model(0, mask.apply_to(rewound)), job


def trained_start(
    ctx: Context, replicate_dir: RunDir, replicate: int, kind: str, density: float, seed: int
) -> tuple[Mask, dict[str, torch.Tensor], dict | None]:
    """(mask, start weights, optimizer state) of the finished [masks] run (kind, density, seed), read from it: what
    the stability analysis trains its copies from (`stability.masks`). `MissingDependency` (the run's task) where
    it is not in the store."""
    run = layout.mask_run(replicate_dir, kind, density, seed)
    stored = run.read_tensors("mask.safetensors") if run.read_json("summary.json") is not None else None
    start = run.read_tensors("start.safetensors") if stored is not None else None
    if stored is None or start is None:
        raise MissingDependency(tasks.mask(replicate, kind, density, seed), f"the [masks] run {run.path}")
    reinit = split_kind(kind)[1] == "reinit"  # trained from fresh weights with a fresh optimizer, as in mask_start
    optimizer_state = None if reinit else rewind_state(ctx, replicate_dir, replicate, at_iteration(ctx))[1]
    return ctx.mask(stored), start, optimizer_state


def imp_replicate_distances(experiment: RunDir, spec: ExperimentSpec, rewinds: list[int]) -> list[dict[str, Any]]:
    """Is the ticket itself stable? The normalised Hamming distance between the IMP masks of every pair of
    replicates (different init and data order), per rewind point and level, normalised by the weights kept as the
    early-bird trace is, next to the distance two random masks of those densities would have on average
    (1 − 2·d_a·d_b / (d_a + d_b))."""
    out = []
    for k in rewinds:
        for level in range(1, spec.imp.levels + 1):
            masks = {}
            for r in range(spec.replicates):
                run = layout.level(layout.replicate(experiment, r), k, level)
                tensors = run.read_tensors("mask.safetensors") if run.read_json("summary.json") else None
                if tensors is not None:
                    masks[r] = Mask(tensors)
            for a in sorted(masks):
                for b in sorted(masks):
                    if a < b:
                        da, db = masks[a].density, masks[b].density
                        distance = mask_distance(masks[a], masks[b], TRACE_NORMALISATION)
                        out.append(
                            {
                                "rewind_iteration": k,
                                "level": level,
                                "a": a,
                                "b": b,
                                "density": (da + db) / 2,
                                "distance": distance,
                                "random_expectation": random_expectation(da, db, TRACE_NORMALISATION),
                            }
                        )
    return out


def rows(experiment: RunDir, spec: ExperimentSpec, replicate_dir: RunDir, replicate: int) -> list[dict[str, Any]]:
    """The results rows of one replicate's [masks] runs (kind = the source, or `<source>_<ablation>`)."""
    out = []
    for kind in kinds(spec):
        for density in spec.masks.densities:
            for seed in spec.masks.seeds:
                run = layout.mask_run(replicate_dir, kind, density, seed)
                record = run.read_json("source.json") or {}
                row = results.run_row(
                    experiment,
                    run,
                    kind=kind,
                    replicate=replicate,
                    rewind_iteration=record.get("at"),
                    level=None,
                    seed=seed,
                    target_density=density,
                )
                if row is not None:
                    out.append({**row, "computed_at": record.get("computed_at")})
    return out


def collect(experiment: RunDir, spec: ExperimentSpec) -> dict[str, Any]:
    """results.json's "masks" section: each replicate's early-bird trace, and the IMP mask distance between
    replicates (empty parts left out)."""
    out: dict[str, Any] = {}
    if "early_bird" in spec.masks.sources:
        traces = []
        for r in range(spec.replicates):
            stored = layout.masks(layout.replicate(experiment, r)).read_json("early_bird.json")
            if stored is not None:
                traces.append({"replicate": r, **stored})
        if traces:
            out["early_bird"] = traces
    if spec.replicates > 1 and spec.imp.levels:
        first = layout.replicate(experiment, 0).path
        rewinds = layout.rewind_points(first)
        distances = imp_replicate_distances(experiment, spec, rewinds)
        if distances:
            out["imp_replicate_distance"] = distances
    return out
