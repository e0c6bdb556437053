"""Stability to pruning, stability to data order, and instability (linear mode connectivity), swept over
rewind points and IMP levels, for the IMP subnetwork, its random controls and the dense network.

Copy i of a subnetwork trains m ⊙ W_k from iteration k with its own data-order and augmentation seeds
(copy 0 uses the spec's seeds, so it IS the IMP level, control or dense run already in the store and is
never trained twice). "The same data order" for stability to pruning means: the full network's copy i
and the subnetwork's copy i use the same seeds, hence see the same batches from iteration k on. Every
copy starts from the W_k saved by the single dense run; its optimizer state follows imp.optimizer_state
('fresh': a new optimizer at k; 'rewind': the dense run's state at k, masked). The dense run itself is
copy 0 of the full network only where it is exactly that: k = 0, or optimizer_state = 'rewind'.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lottery import seeding
from lottery.analysis import barrier, distances, interpolation_curve
from lottery.experiments import controls, imp
from lottery.experiments.context import Context
from lottery.experiments.results import stats
from lottery.pruning import Mask
from lottery.spec import TrainingSpec
from lottery.store import RunDir
from lottery.training import Job, is_finished, train_together

COPY_STREAM = 21
TRAIN_SUBSET_SEED = 0
CONTROL_SEED = 0  # the control seed whose subnetwork the stability analysis studies


@dataclass
class Subject:
    """A subnetwork whose copies are compared: its kind, mask and starting point at k."""

    kind: str  # 'dense', 'imp', 'random_prune' or 'random_reinit'
    mask: Mask
    start: dict[str, Tensor]
    optimizer_state: dict | None
    copy0: RunDir | None  # the unit already in the store that is copy 0, if any


def stability_dir(replicate_dir: RunDir, k: int, level: int) -> RunDir:
    return replicate_dir / f"rewind_{k}it" / "stability" / f"level_{level}"


def copy_training(training: TrainingSpec, i: int) -> TrainingSpec:
    """Copy 0 keeps the spec's seeds; copy i > 0 gets data-order and augmentation seeds derived from them."""
    if i == 0:
        return training
    return dataclasses.replace(
        training,
        data_order_seed=seeding.derive(training.data_order_seed, i, COPY_STREAM) % 2**31,
        augmentation_seed=seeding.derive(training.augmentation_seed, i, COPY_STREAM + 1) % 2**31,
    )


def _dense_subject(ctx: Context, rdir: RunDir, r: int, k: int) -> Subject:
    weights, optimizer_state = imp.rewind_state(ctx, rdir, r, k)
    mask = Mask.ones(ctx.model(0))
    reuse = k == 0 or ctx.spec.imp.optimizer_state == "rewind"
    return Subject("dense", mask, weights, optimizer_state, imp.dense_dir(rdir) if reuse else None)


def _subjects(ctx: Context, rdir: RunDir, r: int, k: int, level: int) -> tuple[list[Subject], list[str]]:
    """The subjects at (k, level): the dense network, and at level > 0 the IMP subnetwork and its controls (whose
    copy 0 is trained here if it is not in the store yet); and the kinds that cannot be studied because an
    earlier IMP level diverged (there is no level-`level` subnetwork, nor controls of it)."""
    dense = _dense_subject(ctx, rdir, r, k)
    if level == 0:
        return [dense], []
    level_run = imp.level_dir(rdir, k, level)
    stored = level_run.read_tensors("mask.safetensors")
    if stored is None or not level_run.exists("final.safetensors"):
        if imp.run_level(ctx, rdir, r, k, level) is None:
            return [dense], ["imp", *ctx.spec.stability.controls]
        stored = level_run.read_tensors("mask.safetensors")
    mask = ctx.mask(stored)
    rewound, optimizer_state = imp.rewind_state(ctx, rdir, r, k)
    subjects = [dense, Subject("imp", mask, mask.apply_to(rewound), optimizer_state, level_run)]
    for kind in ctx.spec.stability.controls:
        controls.run_control(ctx, rdir, r, k, level, mask, kind, CONTROL_SEED)
        c_mask, c_start, c_state = controls.control_start(ctx, rdir, r, k, mask, kind, CONTROL_SEED)
        subjects.append(
            Subject(kind, c_mask, c_start, c_state, controls.control_dir(rdir, k, level, kind, CONTROL_SEED))
        )
    return subjects, []


def copy_runs(rdir: RunDir, k: int, level: int, subject: Subject, copies: int) -> list[RunDir]:
    """The copies' directories: copy 0 is the unit already in the store where there is one (the IMP level, the
    control or the dense run); the dense network's copies are shared by every level (they live at level 0)."""
    where = stability_dir(rdir, k, 0 if subject.kind == "dense" else level)
    runs = [where / f"{subject.kind}_copy{i}" for i in range(copies)]
    if subject.copy0 is not None:
        runs[0] = subject.copy0
    return runs


def train_copies(ctx: Context, rdir: RunDir, r: int, k: int, level: int, subjects: list[Subject]) -> dict[str, list]:
    """Every subject's copies (kind -> directories), training those not in the store yet: all of them together,
    one stacked model, where that is faster (`lottery.training.train_together`).

    The dense network's copies are shared by every level at k; they belong to the group of the first level
    analysed (where an uninterrupted run trains them), and are trained in that group wherever they are missing,
    so they are computed with one arithmetic whichever point finds them missing."""
    copies = ctx.spec.stability.copies
    runs = {subject.kind: copy_runs(rdir, k, level, subject, copies) for subject in subjects}
    first = min(levels(ctx))
    if level != first:
        subjects = [subject for subject in subjects if subject.kind != "dense"]
        if not all(is_finished(run, Job(ctx.training(r), ctx.schedule)) for run in runs["dense"]):
            train_copies(ctx, rdir, r, k, first, _subjects(ctx, rdir, r, k, first)[0])
    trained, models, jobs = [], [], []
    for subject in subjects:
        for i, run in enumerate(runs[subject.kind]):
            if i == 0 and subject.copy0 is not None:
                continue  # already trained by the IMP, control or dense step
            training = copy_training(ctx.training(r), i)
            trained.append(run)
            models.append(ctx.model(0, subject.start))
            seed = CONTROL_SEED if subject.kind in controls.STREAMS else None
            tags = ctx.tags(run, r, subject.kind, 0 if subject.kind == "dense" else level, k, seed=seed, copy=i)
            jobs.append(Job(training, ctx.schedule, start=k, mask=subject.mask, optimizer_state=subject.optimizer_state,
                            augment=ctx.augment, tags=tags))  # fmt: skip
    if not trained:
        return runs
    ctx.runtime.label = f"r{r} k={k} level {level} copies"
    # Stacked or not is decided for copies as a kind, not by this group's size: the dense network's copies are
    # also trained by the analysis at other levels, in groups of other sizes.
    train_together(trained, models, ctx.data, jobs, ctx.runtime, stacked=ctx.stacks(len(trained)))
    return runs


def _summarize(pairs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    return {"pairs": pairs, **{key: stats([p[key] for p in pairs]) for key in keys}}


class Analyzer:
    """Distances and interpolation curves between finished copies (curves cached next to the copies)."""

    def __init__(self, ctx: Context, experiment: RunDir) -> None:
        self.ctx, self.experiment = ctx, experiment
        s = ctx.spec.stability
        self.settings = {
            "interpolation_points": s.interpolation_points,
            "batchnorm": s.batchnorm,
            "batchnorm_batches": s.batchnorm_batches,
            "train_subset": s.train_subset,
            "threshold": s.threshold,
        }
        data = ctx.data
        order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(TRAIN_SUBSET_SEED))
        order = order.to(data.train_x.device)
        subset = order[: s.train_subset]
        self.splits = {"test": (data.test_x, data.test_y), "train": (data.train_x[subset], data.train_y[subset])}
        self.bn_data = data.train_x[order[: s.batchnorm_batches * ctx.spec.training.batch_size]]  # all it reads
        self.model = ctx.model(0)

    def rel(self, run: RunDir) -> str:
        return str(run.path.relative_to(self.experiment.path))

    def curve(self, where: RunDir, name: str, w1: dict[str, Tensor], w2: dict[str, Tensor]) -> dict[str, Any]:
        cached = where.read_json(name)
        if cached is not None and cached.get("settings") == self.settings:
            return cached
        s = self.ctx.spec.stability
        alphas = torch.linspace(0, 1, s.interpolation_points, dtype=torch.float64).tolist()
        curve = interpolation_curve(
            self.model, w1, w2, alphas, self.splits, s.batchnorm, self.bn_data,
            self.ctx.spec.training.batch_size, s.batchnorm_batches,
        )  # fmt: skip
        record = {"settings": self.settings, **curve}
        where.write_json(name, record)
        return record

    def point(self, r: int, subject: Subject, runs: list[RunDir], dense: list[RunDir], out: RunDir) -> dict[str, Any]:
        finals = [run.read_tensors("final.safetensors") for run in runs]
        full = [run.read_tensors("final.safetensors") for run in dense]
        summaries = [run.read_json("summary.json") for run in runs]
        if any(f is None for f in finals + full) or any(s is None or s["diverged"] for s in summaries):
            return {"kind": subject.kind, "density": subject.mask.density, "diverged": True}
        record: dict[str, Any] = {
            "kind": subject.kind,
            "density": subject.mask.density,
            "diverged": False,
            "copies": [
                {
                    "path": self.rel(run),
                    "data_order_seed": copy_training(self.ctx.training(r), i).data_order_seed,
                    "augmentation_seed": copy_training(self.ctx.training(r), i).augmentation_seed,
                    "final_test_accuracy": summary["final_test_accuracy"],
                }
                for i, (run, summary) in enumerate(zip(runs, summaries))
            ],
            "pruning": None,
        }
        distance_keys = ("l2", "angle_degrees", "normalized_l2")
        if subject.kind != "dense":
            pairs = [
                {"full": self.rel(d), "subnetwork": self.rel(run), **distances(f, w, subject.mask, reference=f)}
                for d, run, f, w in zip(dense, runs, full, finals)
            ]
            record["pruning"] = _summarize(pairs, distance_keys)
        pairs = []
        for i, j in itertools.combinations(range(len(runs)), 2):
            curve_name = f"{subject.kind}_interpolation_{i}_{j}.json"
            curve = self.curve(out, curve_name, finals[i], finals[j])
            test_barrier, train_barrier = barrier(curve["test_error"]), barrier(curve["train_error"])
            pairs.append(
                {
                    "a": self.rel(runs[i]),
                    "b": self.rel(runs[j]),
                    **distances(finals[i], finals[j], subject.mask, reference=full[i]),
                    "barrier_test": test_barrier,
                    "barrier_train": train_barrier,
                    "stable": test_barrier < self.settings["threshold"],
                    "curve": self.rel(out / curve_name),
                }
            )
        record["data_order"] = _summarize(pairs, (*distance_keys, "barrier_test", "barrier_train"))
        record["data_order"]["stable"] = all(p["stable"] for p in pairs)
        return record


def levels(ctx: Context) -> tuple[int, ...]:
    """The levels the analysis covers (0 = dense)."""
    spec = ctx.spec.stability
    return spec.levels if spec.levels is not None else tuple(range(ctx.spec.imp.levels + 1))


def run_point(ctx: Context, experiment: RunDir, rdir: RunDir, r: int, k: int, level: int) -> None:
    """Train every copy that (k, level) needs and write its `analysis.json`."""
    subjects, lost = _subjects(ctx, rdir, r, k, level)
    runs = train_copies(ctx, rdir, r, k, level, subjects)
    analyzer = Analyzer(ctx, experiment)
    out = stability_dir(rdir, k, level)
    studied = [s for s in subjects if level == 0 or s.kind != "dense"]  # the dense network is studied at level 0
    records = [analyzer.point(r, subject, runs[subject.kind], runs["dense"], out) for subject in studied]
    records += [{"kind": kind, "density": None, "diverged": True} for kind in lost]  # an earlier level diverged
    out.write_json("analysis.json", {"replicate": r, "rewind_iteration": k, "level": level, "points": records})


def collect(experiment: RunDir, replicates: int) -> list[dict[str, Any]]:
    """Every analysed point in the store, flattened with its replicate, rewind point and level."""
    points = []
    for r in range(replicates):
        for path in sorted((experiment.path / f"replicate_{r}").glob("rewind_*it/stability/level_*/analysis.json")):
            analysis = RunDir(path.parent).read_json("analysis.json")
            if analysis is None:
                continue
            for record in analysis["points"]:
                keys = {"replicate": r, "rewind_iteration": analysis["rewind_iteration"], "level": analysis["level"]}
                points.append({**keys, **record})
    return sorted(points, key=lambda p: (p["replicate"], p["rewind_iteration"], p["level"], p["kind"]))


PAIR_FIELDS = (
    "replicate", "rewind_iteration", "level", "kind", "density", "measure", "a", "b",
    "l2", "angle_degrees", "normalized_l2", "barrier_test", "barrier_train", "stable",
)  # fmt: skip


def pair_rows(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per compared pair (for stability.csv): measure 'pruning' (full vs subnetwork) or 'data_order'."""
    rows = []
    for p in points:
        if p["diverged"]:
            continue
        keys = {k: p[k] for k in ("replicate", "rewind_iteration", "level", "kind", "density")}
        for pair in (p["pruning"] or {"pairs": []})["pairs"]:
            rows.append({**keys, "measure": "pruning", "a": pair["full"], "b": pair["subnetwork"], **pair})
        for pair in p["data_order"]["pairs"]:
            rows.append({**keys, "measure": "data_order", **pair})
    return rows
