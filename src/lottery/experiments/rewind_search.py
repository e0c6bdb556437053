"""Rewind-point search: the earliest rewind iteration k at which the dense network, and the IMP subnetwork of one
level, are stable (linear mode connectivity: error barrier between copies below `stability.threshold`), and
whether the subnetwork is matching there.

The search lives in ONE experiment directory, the one of the *search spec*: the user's spec with the candidate
grid as its rewind points (`imp.rewind` = `stability.rewind` = the grid), IMP up to the searched level,
`stability.levels` = [0, level] and random pruning as the stability control. The dense run therefore snapshots
W_k at every grid point, and a probe at a grid point k is exactly the stability task (k, level) of that
experiment: `lottery run` of the recorded spec later reuses every probe, and a search run again (with a larger
budget) reuses every run already there. A bisection point k off the grid gets W_k by retraining the dense run's
prefix 0..k with the same seeds in a prefix run (`lottery.store.layout.prefix`; data order, augmentation and the
learning rate are pure functions of the iteration, so this is W_k bit for bit; a test checks it), copied into the
dense run's snapshots, after which the engine's own code (IMP levels, controls, copies, analysis) runs unchanged.

Each probe ends in a decision with its uncertainty (`results/conclusions.py`: the barrier's mean and an interval
over the independent units, replicates, or with one replicate the copies): `stable`, `unstable` or `undecided`.
Where a probe is undecided the search adds copies (one more per replicate at a time, up to `max_copies`, within the
budget); a probe still undecided counts as not stable. The search assumes stability is monotone in k (unstable,
then stable): a binary search over the grid, then `refine` bisection steps between the last unstable and the
first stable point; then it checks that assumption by probing the next `BEYOND` grid points after k, and reports
`monotone: false` with the offending probes where one of them is unstable, and an `interval` for k from the
decisions (undecided probes widen it).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lottery.errors import UserError
from lottery.experiments import driver, imp, views
from lottery.experiments import tasks as names
from lottery.experiments.context import Context
from lottery.experiments.plan import run_task
from lottery.experiments.tasks import Task
from lottery.results import conclusions
from lottery.results.probes import CONTROL
from lottery.spec import ExperimentSpec, Step
from lottery.store import RunDir, layout

DEFAULT_TOLERANCE = conclusions.TOLERANCE  # percentage points: "matching" as in the papers
DEFAULT_REFINE = 2  # bisection steps after the grid
DEFAULT_MAX_COPIES = 6  # copies per replicate an undecided probe may grow to
BEYOND = 2  # grid points after k probed to check that stability holds there


class BudgetSpent(Exception):
    """The next probe would train more networks than the budget has left."""


def default_grid(end: int) -> list[int]:
    """0, then a doubling grid from max(1, end // 128) up to (not including) end // 2: 0, 7, 14, 28, ... for 916."""
    first = max(1, end // 128)
    grid, k = [0], first
    while k < end // 2:
        grid.append(k)
        k *= 2
    return grid


def search_spec(spec: ExperimentSpec, level: int, grid_steps: tuple[str, ...]) -> ExperimentSpec:
    """The spec of the search's experiment directory (see the module docstring)."""
    from lottery.spec import ControlsSpec, ImpSpec

    imp_spec = ImpSpec(level, grid_steps, spec.imp.one_shot_density, spec.imp.optimizer_state)
    levels = (0, level) if level else (0,)
    stab = dataclasses.replace(spec.stability, rewind=grid_steps, levels=levels, controls=(CONTROL,) if level else ())
    out = dataclasses.replace(spec, imp=imp_spec, stability=stab, controls=ControlsSpec())
    out = dataclasses.replace(
        out, imp=out.imp.validate(), stability=out.stability.validate(), controls=out.controls.validate()
    )
    return out.validate()


def bracket_search(
    is_stable: Callable[[int], bool], grid: list[int], refine: int
) -> tuple[int | None, list[int | None], bool]:
    """(k, [last unstable, first stable], complete): the earliest stable k on `grid` by binary search (stability
    assumed monotone in k), then `refine` bisection steps on the integers between the bracket's ends. k is the
    bracket's stable end (None where no stable point is known). A `BudgetSpent` raised by `is_stable` stops the
    search: the bracket so far is returned with complete = False."""
    lo: int | None = None
    hi: int | None = None
    try:
        if is_stable(grid[0]):
            return grid[0], [None, grid[0]], True
        lo = grid[0]
        if len(grid) == 1 or not is_stable(grid[-1]):
            return None, [grid[-1], None], True
        hi = grid[-1]
        a, b = 0, len(grid) - 1
        while b - a > 1:
            m = (a + b) // 2
            if is_stable(grid[m]):
                b, hi = m, grid[m]
            else:
                a, lo = m, grid[m]
        for _ in range(refine):
            if hi - lo <= 1:
                break
            m = (lo + hi) // 2
            if is_stable(m):
                hi = m
            else:
                lo = m
    except BudgetSpent:
        return hi, [lo, hi], False
    return hi, [lo, hi], True


def escalate(
    measure: Callable[[int], dict[str, Any]], base: int, max_copies: int, affordable: Callable[[int], bool]
) -> dict[str, Any]:
    """The probe's record with `base` copies, then, while its decision is undecided, with one more copy per replicate
    at a time up to `max_copies`, as long as `affordable(copies)` (the budget) allows."""
    copies = base
    record = measure(copies)
    while record["decision"] == conclusions.UNDECIDED and copies < max_copies and affordable(copies + 1):
        copies += 1
        record = measure(copies)
    return record


def beyond(grid: list[int], k: int | None, count: int = BEYOND) -> list[int]:
    """The `count` grid points after k (none where k is None)."""
    return [] if k is None else [g for g in grid if g > k][:count]


def k_interval(decisions: dict[int, str]) -> list[int | None]:
    """[a, b]: the earliest point from which every probe is stable lies in (a, b] as far as the probes' decisions
    tell: a = the last probe decided unstable (None: none), b = the first probe after a from which every probe is
    decided stable (None: none). An undecided probe counts as possibly either, so it widens the interval."""
    ks = sorted(decisions)
    unstable = [k for k in ks if decisions[k] == conclusions.UNSTABLE]
    a = unstable[-1] if unstable else None
    after = [k for k in ks if a is None or k > a]
    b = None
    for i, k in enumerate(after):
        if all(decisions[j] == conclusions.STABLE for j in after[i:]):
            b = k
            break
    return [a, b]


def check(
    decide: Callable[[int], str], grid: list[int], k: int | None, probed: dict[int, str], count: int = BEYOND
) -> dict[str, Any]:
    """After the search: probe the `count` grid points after k (`decide(k)` -> decision; points in `probed` are not
    probed again) and say whether stability holds there: `monotone` true (every probe after k stable), false
    (some probe after k unstable: `offending` lists them) or None (no k, or undecided probes only); `interval` for
    k (`k_interval`). A `BudgetSpent` from `decide` stops the check (`complete` False)."""
    complete = True
    try:
        for g in beyond(grid, k, count):
            if g not in probed:
                probed[g] = decide(g)
    except BudgetSpent:
        complete = False
    after = {j: d for j, d in probed.items() if k is not None and j > k}
    offending = sorted(j for j, d in after.items() if d == conclusions.UNSTABLE)
    if k is None:
        monotone = None
    elif offending:
        monotone = False
    elif all(d == conclusions.STABLE for d in after.values()) and after:
        monotone = True
    else:
        monotone = None
    return {"monotone": monotone, "offending": offending, "interval": k_interval(probed), "complete": complete}


class Search:
    """Probes of one search: each trains what it needs (within the budget) and records what the analysis found."""

    def __init__(
        self,
        ctx: Context,
        experiment: RunDir,
        level: int,
        max_trainings: int | None,
        tolerance: float,
        max_copies: int | None = None,
    ) -> None:
        self.ctx, self.experiment, self.level, self.tolerance = ctx, experiment, level, tolerance
        self.max_trainings = max_trainings
        base = ctx.spec.stability.copies
        self.max_copies = max(base, DEFAULT_MAX_COPIES if max_copies is None else max_copies)
        self.trained = 0  # networks trained by this search (runs already in the store are free)
        self.iterations = 0  # iterations those networks trained
        self.probes: dict[str, dict[int, dict[str, Any]]] = {"dense": {}, "imp": {}}
        self._contexts = {base: ctx}

    def context(self, copies: int) -> Context:
        """The search's context with `copies` copies per stability point (copy i is the same network whatever
        the count: its key holds its index only), sharing the data already loaded."""
        if copies not in self._contexts:
            ctx = with_copies(self.ctx, copies)
            ctx.__dict__["data"] = self.ctx.data  # functools.cached_property's slot: the same tensors
            self._contexts[copies] = ctx
        return self._contexts[copies]

    # -- what a probe needs ------------------------------------------------------------------------------------
    def missing(self, k: int, level: int, ctx: Context | None = None) -> list[tuple[RunDir, int]]:
        """(run, iterations it trains) of every network probing (k, level) would train: those of
        `views.point_networks` (the dense run, IMP levels 1..level, the copies of the dense network, the IMP
        subnetwork and its control, as many copies as `ctx` says) that the store does not hold, and the prefix
        0..k where W_k is not stored."""
        ctx = ctx or self.ctx
        out: list[tuple[RunDir, int]] = []
        for r in range(ctx.spec.replicates):
            found = views.bind_point(ctx, self.experiment, r, k, level, (CONTROL,))  # others' networks count
            rdir = layout.replicate(self.experiment, r)
            out += [(self.experiment / network.view.as_posix(), iterations(ctx, network, k)) for network in found]
            if k not in ctx.dense_snapshots and not self._has_snapshot(rdir, k):
                out.append((layout.prefix(rdir, k), imp.prefix_end(ctx, k)))
        return [(run, its) for run, its in out if run.read_json("summary.json") is None]

    def _has_snapshot(self, rdir: RunDir, k: int) -> bool:
        dense = layout.dense(rdir)
        return all(dense.exists(name) for name in imp.snapshot_names(self.ctx, k))

    def ensure_snapshot(self, r: int, k: int) -> None:
        """W_k (and the optimizer state at k where IMP rewinds it) in the dense run's snapshots."""
        rdir = layout.replicate(self.experiment, r)
        if k in self.ctx.dense_snapshots or self._has_snapshot(rdir, k):
            return  # the dense run's own task saves it, or it is there
        imp.train_dense(
            self.ctx, rdir, r
        )  # the dense run first (read back when stored): its final weights prune level 1
        imp.fill_snapshots(self.ctx, rdir, r, (k,))

    def _fits(self, trainings: int) -> bool:
        return self.max_trainings is None or self.trained + trainings <= self.max_trainings

    # -- one probe -----------------------------------------------------------------------------------------------
    def probe(self, subject: str, k: int) -> str:
        """Train and analyse (k, 0) for the dense network or (k, level) for the IMP subnetwork, with more copies
        while undecided (`escalate`); return the decision (stable / unstable / undecided)."""
        level = 0 if subject == "dense" else self.level
        base = self.ctx.spec.stability.copies
        first = self.missing(k, level)
        if not self._fits(len(first)):
            left = self.max_trainings - self.trained
            _say(f"{subject} k={k}: needs {len(first)} trainings, {left} left in the budget: stopping")
            raise BudgetSpent
        spent = {"trainings": 0}

        def measure(copies: int) -> dict[str, Any]:
            ctx = self.context(copies)
            missing = self.missing(k, level, ctx)
            for r in range(ctx.spec.replicates):
                self.ensure_snapshot(r, k)
                tasks = point_tasks(ctx, r, k, level)  # k may be off the plan's grid: this point's own tasks
                run_task(tasks[names.stability(r, k, level)], ctx, self.experiment, tasks)
            self.trained += len(missing)
            self.iterations += sum(its for _, its in missing)
            spent["trainings"] += len(missing)
            record = self.record(subject, k, level)
            record["copies"], record["trainings"] = copies, spent["trainings"]
            self._say_probe(subject, record)
            return record

        def affordable(copies: int) -> bool:
            fits = self._fits(len(self.missing(k, level, self.context(copies))))
            if not fits:
                _say(f"{subject} k={k}: undecided, and {copies} copies do not fit in the budget")
            return fits

        record = escalate(measure, base, self.max_copies, affordable)
        self.probes[subject][k] = record
        return record["decision"]

    def _say_probe(self, subject: str, record: dict[str, Any]) -> None:
        interval = record["barrier_interval"]
        barrier = "-" if record["barrier_mean"] is None else f"{record['barrier_mean']:.2f}"
        barrier += "" if interval is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]"
        accuracy = "-" if record["accuracy"] is None else f"{100 * record['accuracy']:.2f}%"
        budget = "" if self.max_trainings is None else f", {self.max_trainings - self.trained} left"
        _say(
            f"{subject} k={record['k']}: barrier {barrier} ({record['decision']}, {record['copies']} copies), "
            f"accuracy {accuracy}; trained {record['trainings']}{budget}"
        )

    def record(self, subject: str, k: int, level: int) -> dict[str, Any]:
        """The probe as recorded: the stability decision (`conclusions.stability_decision`: decision, barrier_mean
        and barrier_interval in percentage points, unit, n, pairs), barrier_max, accuracy (mean of the copies' final
        test accuracy), the matching decision, and the random-pruning control's numbers."""
        kinds = {"dense": ("dense",), "imp": ("imp", CONTROL)}[subject]
        found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for r in range(self.ctx.spec.replicates):
            analysis = layout.stability(layout.replicate(self.experiment, r), k, level).read_json("analysis.json")
            for point in (analysis or {}).get("points", []):
                if point["kind"] in found:
                    found[point["kind"]].append({**point, "replicate": r})
        threshold = self.ctx.spec.stability.threshold
        summary = {kind: _point_summary(found[kind], threshold) for kind in kinds}
        main = summary[kinds[0]]
        record: dict[str, Any] = {"k": k, **main}
        if level:
            record["density"] = statistics.fmean(p["density"] for p in found["imp"]) if found["imp"] else None
            record["control"] = {"kind": CONTROL, **summary[CONTROL]}
        match = self.matching(found[kinds[0]])
        record["matching"] = match["decision"]
        record["gap_mean"], record["gap_interval"] = match["gap_mean"], match["gap_interval"]
        return record

    def dense_accuracies(self) -> dict[int, float]:
        """Each replicate's dense final test accuracy (the matching reference)."""
        values = {}
        for r in range(self.ctx.spec.replicates):
            summary = layout.dense(layout.replicate(self.experiment, r)).read_json("summary.json")
            if summary and summary["final_test_accuracy"] is not None:
                values[r] = summary["final_test_accuracy"]
        return values

    def dense_accuracy(self) -> float | None:
        """The dense network's final test accuracy, mean over replicates."""
        values = list(self.dense_accuracies().values())
        return statistics.fmean(values) if values else None

    def matching(self, points: list[dict[str, Any]]) -> dict[str, Any]:
        """`conclusions.matching_decision` of the copies' final test accuracy against their replicate's dense run."""
        dense = self.dense_accuracies()
        gaps = [
            [100 * (c["final_test_accuracy"] - dense[p["replicate"]]) for c in p["copies"]]
            for p in points
            if not p.get("diverged") and p["replicate"] in dense
        ]
        return conclusions.matching_decision(gaps, self.tolerance)


def _point_summary(points: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    decision = conclusions.stability_decision(points, threshold)
    keys = ("decision", "barrier_mean", "barrier_interval", "unit", "n", "pairs")
    out: dict[str, Any] = {key: decision[key] for key in keys}
    if not points or decision["diverged"]:
        return {**out, "barrier_max": None, "accuracy": None, "diverged": bool(points)}
    accuracies = [c["final_test_accuracy"] for p in points for c in p["copies"]]
    return {
        **out,
        "barrier_max": max(b for pairs in decision["pairs"] for b in pairs),
        "accuracy": statistics.fmean(accuracies),
        "diverged": False,
    }


def point_tasks(ctx: Context, r: int, k: int, level: int) -> dict[str, Task]:
    """The tasks one probe needs, by name, for `plan.run_task`: those of the networks of `views.point_networks`
    (the dense run, IMP levels 1..level rewound to k, the analysis at (k, 0), whose task trains the dense network's
    copies, and at (k, level)); `run_task` runs the analysis, and before it any of those whose output is missing."""
    return {network.task: network.step for network in views.point_networks(ctx, r, k, level, (CONTROL,))}


def with_copies(ctx: Context, copies: int) -> Context:
    """`ctx` with `copies` copies per stability point (`ctx` itself where it has as many), sharing what `ctx` has
    computed of its data (copy i is the same network whatever the count: its key holds its index only)."""
    if copies == ctx.spec.stability.copies:
        return ctx
    stab = dataclasses.replace(ctx.spec.stability, copies=copies)
    out = Context(dataclasses.replace(ctx.spec, stability=stab), ctx.runtime)
    for name in ("data", "data_fingerprint"):  # functools.cached_property's slots
        if name in ctx.__dict__:
            out.__dict__[name] = ctx.__dict__[name]
    out.fingerprint_cache = ctx.fingerprint_cache
    return out


def iterations(ctx: Context, network: views.Network, k: int) -> int:
    """The iterations a network a probe at k needs trains: the dense run all of them, the others from k."""
    return ctx.schedule.end if network.kind == "dense" else ctx.schedule.end - k


def cost_of(
    ctx: Context, level: int, dense: list[int], pruned: list[int], copies: dict[str, dict[int, int]] | None = None
) -> dict[str, int]:
    """Trainings and iterations that probing `dense` (level 0) and `pruned` (level `level`) rewind points take from
    an empty store: the networks of `views.point_networks` of every probe, each once (the dense run; at every point
    the dense network's copies; at the pruned points IMP levels 1..level and the copies of the IMP subnetwork and
    its control), and a prefix 0..k for each point off the grid. `copies`: per subject ("dense", "imp") and point,
    the copies its probe used (default `stability.copies`)."""
    base, copies = ctx.spec.stability.copies, copies or {}
    needed: dict[Path, int] = {}  # every network, once, with the iterations it trains
    points = sorted(set(dense) | set(pruned))
    for k in points:
        probes = [(0, copies.get("dense", {}).get(k, base))] if k in dense else []
        probes += [(level, copies.get("imp", {}).get(k, base))] if k in pruned else []
        for probe_level, count in probes:
            probing = with_copies(ctx, count)
            for r in range(ctx.spec.replicates):
                for network in views.point_networks(probing, r, k, probe_level, (CONTROL,)):
                    needed.setdefault(network.view, iterations(ctx, network, k))
    off_grid = [k for k in points if k not in ctx.dense_snapshots]  # each a prefix run per replicate
    replicates = ctx.spec.replicates
    return {
        "trainings": len(needed) + replicates * len(off_grid),
        "iterations": sum(needed.values()) + replicates * sum(imp.prefix_end(ctx, k) for k in off_grid),
    }


def full_sweep_cost(ctx: Context, level: int) -> dict[str, int]:
    """The cost of a full sweep over the grid: every grid point probed for both the dense network and IMP."""
    return cost_of(ctx, level, ctx.rewind_points, ctx.rewind_points)


def _say(message: str) -> None:
    print(f"lottery rewind-search: {message}", file=sys.stderr, flush=True)


def grid_iterations(ctx: Context, steps: tuple[str, ...]) -> list[int]:
    return sorted({Step.parse(s).to_iterations(ctx.schedule.iterations_per_epoch) for s in steps})


def summarize(
    search: Search, subject: str, k: int | None, bracket: list, complete: bool, checked: dict[str, Any]
) -> dict[str, Any]:
    """One subject's answer: k, bracket, complete, the check beyond k (monotone, offending, interval), matching and
    accuracy at k, and every probe (`probes`, sorted by k)."""
    probes = [search.probes[subject][key] for key in sorted(search.probes[subject])]
    at_k = search.probes[subject].get(k) if k is not None else None
    return {
        "k": k,
        "bracket": bracket,
        "interval": checked["interval"],
        "monotone": checked["monotone"],
        "offending": checked["offending"],
        "complete": complete and checked["complete"],
        "matching": None if at_k is None else at_k["matching"],
        "accuracy": None if at_k is None else at_k["accuracy"],
        "probes": probes,
    }


def nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


def run_search(
    spec: ExperimentSpec,
    preset: str | None,
    root: Path | str,
    runtime: Any,
    level: int | None = None,
    max_trainings: int | None = None,
    grid: list[str] | None = None,
    refine: int = DEFAULT_REFINE,
    tolerance: float = DEFAULT_TOLERANCE,
    wait: bool = True,
    max_copies: int | None = None,
) -> tuple[RunDir, dict[str, Any]]:
    """Search the dense network's and the IMP subnetwork's stability points; write `rewind_search.json` (and the
    experiment's results) in the search's experiment directory; return it and the search's record. The driver's
    sequence (experiments/driver.py), its execution step the search's probes (`search`)."""
    from lottery.experiments.run import write_results
    from lottery.plugins import stamp

    level = spec.imp.levels if level is None else level
    if level < 1:
        raise UserError(f"--level must be an IMP level >= 1 (the spec has imp.levels = {spec.imp.levels}), got {level}")
    if max_trainings is not None and max_trainings < 1:
        raise UserError(f"--max-trainings must be at least 1, got {max_trainings}")
    if refine < 0 or not tolerance >= 0:
        raise UserError("refine must be >= 0 and the matching tolerance >= 0")
    if max_copies is not None and not 2 <= max_copies <= 1000:
        raise UserError(f"--max-copies must be between 2 and 1000 (copies per replicate), got {max_copies}")
    end = Context(stamp(spec), runtime).schedule.end
    steps = tuple(grid) if grid else tuple(f"{k}it" for k in default_grid(end))
    (experiment,) = driver.prepare([(search_spec(spec, level, steps), preset)], Path(root), runtime)

    def work(experiments: Sequence[driver.Experiment]) -> dict[str, Any]:
        return search(experiments[0].ctx, experiments[0].directory, level, max_trainings, refine, tolerance, max_copies)

    _, out = driver.drive([experiment], runtime, work, write_results, wait)
    return experiment.directory, out


def search(
    ctx: Context,
    experiment: RunDir,
    level: int,
    max_trainings: int | None,
    refine: int,
    tolerance: float,
    max_copies: int | None,
) -> dict[str, Any]:
    """Probe the search spec's experiment (`ctx`, `experiment`: locked, its spec written) for both subjects and
    write `rewind_search.json`; return its content."""
    spec, candidates = ctx.spec, ctx.rewind_points
    search = Search(ctx, experiment, level, max_trainings, tolerance, max_copies)
    _say(f"{experiment.path}: grid {candidates} (iterations), level {level}, threshold {spec.stability.threshold}")
    out: dict[str, Any] = {
        "level": level,
        "grid": candidates,
        "threshold": spec.stability.threshold,
        "tolerance": tolerance,
        "refine": refine,
        "max_trainings": max_trainings,
        "copies": spec.stability.copies,
        "max_copies": search.max_copies,
        "confidence": conclusions.CONFIDENCE,
    }
    for subject in ("dense", "imp"):

        def decide(k: int, subject: str = subject) -> str:
            return search.probe(subject, k)

        k, bracket, complete = bracket_search(lambda j: decide(j) == conclusions.STABLE, candidates, refine)
        decisions = {j: p["decision"] for j, p in search.probes[subject].items()}
        checked = check(decide, candidates, k, decisions, BEYOND if complete else 0)  # budget spent: no probe
        out[subject] = summarize(search, subject, k, bracket, complete, checked)
        found = out[subject]
        _say(
            f"{subject}: k = {k}, bracket {bracket}, interval {found['interval']}, monotone {found['monotone']}"
            + (f" (unstable at {found['offending']})" if found["offending"] else "")
            + ("" if found["complete"] else " (budget spent)")
        )
    out["dense_accuracy"] = search.dense_accuracy()
    used = {subject: {j: p["copies"] for j, p in search.probes[subject].items()} for subject in ("dense", "imp")}
    out["cost"] = {  # trained by this call (stored runs are free); all its probes take; a full sweep takes
        "trainings": search.trained,
        "iterations": search.iterations,
        "probed": cost_of(ctx, level, list(search.probes["dense"]), list(search.probes["imp"]), used),
        "full_sweep": full_sweep_cost(ctx, level),
    }
    out = nan_to_none(out)
    experiment.write_json("rewind_search.json", out)
    return out
