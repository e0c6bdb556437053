"""Stability to pruning, stability to data order, and instability (linear mode connectivity), swept over
rewind points and IMP levels, for the IMP subnetwork, its random controls and the dense network; and, with
`stability.masks`, for the [masks] runs' subnetworks (mask sources and their ablations) at every target density,
studied at the point (k = `masks.at`, level 0) next to the dense network they were pruned from.

Copy i of a subnetwork trains m ⊙ W_k from iteration k with data-order and augmentation seeds derived from
the chain's seeds and i (`copy_training`), so that the SGD noise u of every copy, copy 0 included, is
independent of the noise that trained the IMP chain and hence chose the mask m ("Stabilizing" §2 takes the
expectation over such u). No unit of the IMP chain, no control run and not the dense run itself is ever a
copy: they were trained with the chain's seeds. "The same data order" for stability to pruning means: the
full network's copy i and the subnetwork's copy i use the same derived seeds, hence see the same batches
from iteration k on. Every copy starts from the W_k saved by the single dense run; its optimizer state
follows imp.optimizer_state ('fresh': a new optimizer at k; 'rewind': the dense run's state at k, masked).
The definitions and every choice made here are documented in docs/measured.md.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lottery import seeding
from lottery.analysis import barrier, interpolation_curve
from lottery.analysis.function_space import log_probabilities
from lottery.data import Splits
from lottery.experiments import controls, dynamic_stability, imp, masks, recipes
from lottery.experiments import tasks as names
from lottery.experiments.context import Context
from lottery.experiments.tasks import MissingDependency
from lottery.extension_points import control_kinds
from lottery.measures import Pair, Trained, registered
from lottery.pruning import Mask, prune
from lottery.results.kinds import split_kind
from lottery.results.rows import stats
from lottery.spec import TrainingSpec
from lottery.store import RunDir, layout
from lottery.training import Job, is_finished, train_together

TRAIN_SUBSET_SEED = 0
# Subjects with a pruning distance: (W_k, m) from the dense run's W_k. A randomly reinitialized subnetwork does not
# start from W_k, so comparing it with the full network trained from W_k measures nothing defined.


@dataclass
class Subject:
    """A subnetwork whose copies are compared: its kind, mask and starting point at k."""

    kind: str  # 'dense', 'imp', 'random_prune', 'random_reinit', or a [masks] kind ('snip', 'snip_shuffle', ...)
    mask: Mask
    start: dict[str, Tensor]
    optimizer_state: dict | None
    target_density: float | None = None  # a [masks] run's target density; None: dense, IMP and its controls
    seed: int | None = None  # the [masks] run's seed (masks.seeds[0])

    @property
    def key(self) -> tuple[str, float | None]:
        """Tells the subjects of one point apart: a [masks] kind is studied at every target density."""
        return (self.kind, self.target_density)


DENSE = ("dense", None)  # the dense network's `Subject.key`


def subject_dir(replicate_dir: RunDir, k: int, level: int, subject: Subject) -> RunDir:
    """Where a subject's copies and interpolation curves live: the point's stability directory (the dense
    network's: level 0's, shared by every level); a [masks] subject's, below it (`mask_subject_dir`)."""
    if subject.target_density is not None:
        return mask_subject_dir(replicate_dir, k, subject.kind, subject.target_density, subject.seed)
    return layout.stability(replicate_dir, k, 0 if subject.kind == "dense" else level)


def mask_subject_dir(replicate_dir: RunDir, k: int, kind: str, density: float, seed: int) -> RunDir:
    """The directory of the `stability.masks` subject (kind, density, seed) at (k, level 0): the [masks] layout
    below the point's stability directory."""
    return layout.mask_run(layout.stability(replicate_dir, k, 0), kind, density, seed)


def mask_subjects(ctx: Context, rdir: RunDir, r: int, k: int, level: int) -> list[Subject]:
    """The `stability.masks` subjects of (k, level) (`mask_subject_keys`): each one's mask and start, read from
    its finished [masks] run; its copies are trained here, never the run itself."""
    return [
        Subject(kind, *masks.trained_start(ctx, rdir, r, kind, density, seed), target_density=density, seed=seed)
        for kind, density, seed in recipes.mask_subjects(ctx, k, level)
    ]


def has_pruning_distance(subject: Subject) -> bool:
    """Stability to pruning is defined for (W_k, m): subnetworks that start from the dense run's W_k (IMP,
    random pruning, the [masks] runs except the `reinit` ablation), not from fresh weights."""
    if subject.target_density is not None:
        return split_kind(subject.kind)[1] != "reinit"
    return subject.kind == "imp" or (subject.kind in control_kinds and control_kinds.get(subject.kind).from_rewound)


def copy_training(training: TrainingSpec, i: int) -> TrainingSpec:
    """Copy i (every i >= 0) gets data-order and augmentation seeds derived from the chain's (`training`'s) and i:
    its SGD noise is independent of the chain's, which chose the mask. The init seed is kept (copies start from
    W_k anyway)."""
    return dataclasses.replace(
        training,
        data_order_seed=seeding.derive("copy_data_order", training.data_order_seed, i) % 2**31,
        augmentation_seed=seeding.derive("copy_augmentation", training.augmentation_seed, i) % 2**31,
    )


def _dense_subject(ctx: Context, rdir: RunDir, r: int, k: int) -> Subject:
    weights, optimizer_state = imp.rewind_state(ctx, rdir, r, k)
    return Subject("dense", Mask.ones(ctx.model(0)), weights, optimizer_state)


def _subjects(ctx: Context, rdir: RunDir, r: int, k: int, level: int) -> tuple[list[Subject], list[str]]:
    """The subjects at (k, level): the dense network, and at level > 0 the IMP subnetwork and its controls (the
    control with seed recipes.CONTROL_SEED: its mask and start; its copies are trained here, never the control run); and
    the kinds that cannot be studied because an earlier IMP level diverged (there is no level-`level`
    subnetwork, nor controls of it)."""
    dense = _dense_subject(ctx, rdir, r, k)
    if level == 0:
        return [dense, *mask_subjects(ctx, rdir, r, k, level)], []
    mask = imp.level_mask(ctx, rdir, r, k, level)  # MissingDependency where the level's task has not run
    if mask is None:
        return [dense], ["imp", *ctx.spec.stability.controls]
    rewound, optimizer_state = imp.rewind_state(ctx, rdir, r, k)
    subjects = [dense, Subject("imp", mask, mask.apply_to(rewound), optimizer_state)]
    for kind in ctx.spec.stability.controls:
        subjects.append(
            Subject(kind, *controls.control_start(ctx, rdir, r, k, level, mask, kind, recipes.CONTROL_SEED))
        )
    return subjects, []


def copy_runs(rdir: RunDir, k: int, level: int, subject: Subject, copies: int) -> list[RunDir]:
    """The copies' directories, all under the stability directory (`subject_dir`); the dense network's copies are
    shared by every level (they live at level 0)."""
    where = subject_dir(rdir, k, level, subject)
    return [layout.copy(where, subject.kind, i) for i in range(copies)]


def train_copies(
    ctx: Context, rdir: RunDir, r: int, k: int, level: int, subjects: list[Subject]
) -> dict[tuple[str, float | None], list[RunDir]]:
    """Every subject's copies (`Subject.key` -> directories), training those not in the store yet: all of them
    together, one stacked model, where that is faster (`lottery.training.train_together`), in the stack order their
    recipes say (`recipes.point_subjects`, `recipes.copy_position`); a subject that cannot be studied (an earlier
    level diverged) leaves its place out.

    The dense network's copies are shared by every level at k: the task of the first level analysed trains them
    (in its group), and the other levels' tasks depend on it; where they are missing, `MissingDependency` names
    that task."""
    copies = ctx.spec.stability.copies
    runs = {subject.key: copy_runs(rdir, k, level, subject, copies) for subject in subjects}
    first = recipes.dense_copies_level(ctx)
    if level != first:
        subjects = [subject for subject in subjects if subject.kind != "dense"]
        if not all(is_finished(run, Job(ctx.training(r), ctx.schedule)) for run in runs[DENSE]):
            raise MissingDependency(names.stability(r, k, first), f"the dense network's copies at iteration {k}")
    by_key = {subject.key: subject for subject in subjects}
    order = recipes.point_subjects(ctx, k, level)
    if not by_key.keys() <= set(order):
        raise ValueError(f"subjects {sorted(by_key.keys() - set(order), key=str)} are not in the point's stack")
    stack = []  # (position, subject, copy index)
    for key in order:
        if key in by_key:
            stack += [(recipes.copy_position(ctx, k, level, *key, i)[1], by_key[key], i) for i in range(copies)]
    trained, models, jobs = [], [], []
    for _, subject, i in sorted(stack, key=lambda entry: entry[0]):
        run = runs[subject.key][i]
        training = copy_training(ctx.training(r), i)
        trained.append(run)
        models.append(ctx.model(0, subject.start))
        seed = recipes.CONTROL_SEED if subject.kind in control_kinds else subject.seed
        target = subject.target_density
        tag_level = None if target is not None else 0 if subject.kind == "dense" else level  # [masks]: no level
        tags = ctx.tags(run, r, subject.kind, tag_level, k, seed=seed, copy=i, target_density=target)
        jobs.append(
            Job(
                training,
                ctx.schedule,
                start=k,
                mask=subject.mask,
                optimizer_state=subject.optimizer_state,
                augment=ctx.augment,
                tags=tags,
            )
        )
    if not trained:
        return runs
    ctx.runtime.label = f"r{r} k={k} level {level} copies"
    # Stacked or not is decided for copies as a kind (for two or more, the answer does not depend on how many).
    train_together(trained, models, ctx.data, jobs, ctx.runtime, stacked=ctx.stacks(len(trained)))
    return runs


def distance_mask(mask: Mask, model: nn.Module, params: str) -> Mask:
    """The coordinates distances cover: the mask's kept coordinates of the prunable weights (params = 'prunable'),
    plus every coordinate of every other parameter of `model` ('all': biases, BatchNorm; never buffers)."""
    if params == "prunable":
        return mask
    return Mask(
        {
            name: mask[name] if name in mask else torch.ones(p.shape, dtype=torch.bool)
            for name, p in model.named_parameters()
        }
    )


def _summarize(pairs: list[dict[str, Any]], part: str) -> dict[str, Any]:
    """The pairs of `part` and, per measure of it (lottery.measures), its mean, min and max over them."""
    return {"pairs": pairs, **{m.column: stats([p[m.column] for p in pairs]) for m in registered(part)}}


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
        # One fixed permutation of the training split (validation excluded): its first `train_subset` examples
        # measure the train error, its first batchnorm_batches batches re-estimate BatchNorm statistics.
        order = torch.randperm(data.train_size, generator=torch.Generator().manual_seed(TRAIN_SUBSET_SEED))
        subset, bn = order[: s.train_subset], order[: s.batchnorm_batches * ctx.spec.training.batch_size]
        if isinstance(data, Splits):
            subset, bn = subset.to(data.train_x.device), bn.to(data.train_x.device)
            self.splits = {"test": (data.test_x, data.test_y), "train": (data.train_x[subset], data.train_y[subset])}
            self.bn_data = data.train_x[bn]  # all it reads
            self.test_inputs = data.test_x
        else:  # an image folder: the same examples, streamed in batches with the eval transform (never in memory)
            self.splits = {"test": data.examples("test"), "train": data.examples("train", subset)}
            self.bn_data = data.examples("train", bn)
            self.test_inputs = self.splits["test"]
        self.model = ctx.model(0)
        self._predictions: dict[str, Tensor] = {}

    def rel(self, run: RunDir) -> str:
        return str(run.path.relative_to(self.experiment.path))

    def curve(
        self, where: RunDir, name: str, pair: tuple[str, str], w1: dict[str, Tensor], w2: dict[str, Tensor]
    ) -> dict[str, Any]:
        cached = where.read_json(name)
        if (
            cached is not None
            and cached.get("settings") == self.settings
            and cached.get("pair") == list(pair)
            and "test_loss" in cached
        ):
            return cached
        s = self.ctx.spec.stability
        alphas = torch.linspace(0, 1, s.interpolation_points, dtype=torch.float64).tolist()
        curve = interpolation_curve(
            self.model,
            w1,
            w2,
            alphas,
            self.splits,
            s.batchnorm,
            self.bn_data,
            self.ctx.spec.training.batch_size,
            s.batchnorm_batches,
        )
        record = {"settings": self.settings, "pair": list(pair), **curve}
        where.write_json(name, record)
        return record

    def predictions(self, run: RunDir, weights: dict[str, Tensor]) -> Tensor:
        """The copy's log-probabilities on the test set (its own final weights and BatchNorm statistics)."""
        key = str(run.path)
        if key not in self._predictions:
            self.model.load_state_dict(weights)
            self._predictions[key] = log_probabilities(self.model, self.test_inputs)
        return self._predictions[key]

    def next_mask(self, mask: Mask, weights: dict[str, Tensor]) -> Mask | None:
        """The mask the next IMP level would keep if it pruned these trained weights (None without IMP levels)."""
        if not self.ctx.spec.imp.levels:
            return None
        return prune(weights, mask, self.ctx.layer_kinds, self.ctx.spec.pruning)

    def trained(self, run: RunDir, final: dict[str, Tensor], start: dict[str, Tensor], mask: Mask) -> Trained:
        """A network of the pairs the measures compare: its test predictions and next mask computed when asked."""
        return Trained(final, start, lambda: self.predictions(run, final), lambda: self.next_mask(mask, final))

    def compare(
        self, part: str, a: Trained, b: Trained, mask: Mask, reference: dict, curve: dict | None = None
    ) -> dict[str, Any]:
        """Every registered measure of `part` (lottery.measures) of one pair of trained networks, on `mask`'s
        coordinates, by column."""
        pair = Pair(part, a, b, mask, reference, curve)
        return {m.column: m.value(pair) for m in registered(part)}

    def point(self, r: int, subject: Subject, runs: list[RunDir], dense: list[RunDir], out: RunDir) -> dict[str, Any]:
        finals = [run.read_tensors("final.safetensors") for run in runs]
        full = [run.read_tensors("final.safetensors") for run in dense]
        summaries = [run.read_json("summary.json") for run in runs]
        chain = self.ctx.training(r)
        seeds = {
            "init_seed": chain.init_seed,
            "data_order_seed": chain.data_order_seed,
            "augmentation_seed": chain.augmentation_seed,
        }
        mask_run = {"target_density": subject.target_density, "seed": subject.seed}  # a [masks] subject's
        identity = {
            "kind": subject.kind,
            "density": subject.mask.density,
            **(mask_run if subject.target_density is not None else {}),
        }
        if any(f is None for f in finals + full) or any(s is None or s["diverged"] for s in summaries):
            return {**identity, "diverged": True, "chain_seeds": seeds}
        starts = [run.read_tensors("start.safetensors") for run in runs]
        full_starts = [run.read_tensors("start.safetensors") for run in dense]
        record: dict[str, Any] = {
            **identity,
            "diverged": False,
            "chain_seeds": seeds,  # the IMP chain's (and the controls' runs') seeds, which chose the mask
            "copies": [
                {
                    "path": self.rel(run),
                    "data_order_seed": copy_training(chain, i).data_order_seed,
                    "augmentation_seed": copy_training(chain, i).augmentation_seed,
                    "final_test_accuracy": summary["final_test_accuracy"],
                }
                for i, (run, summary) in enumerate(zip(runs, summaries))
            ],
            "pruning": None,
        }
        mask = distance_mask(subject.mask, self.model, self.ctx.spec.stability.distance_params)
        copies = [self.trained(*c, subject.mask) for c in zip(runs, finals, starts)]
        if has_pruning_distance(subject):  # pruning stability is defined for (W_k, m) from the dense run's W_k
            fulls = [self.trained(*d, subject.mask) for d in zip(dense, full, full_starts)]
            pairs = [
                {"full": self.rel(d), "subnetwork": self.rel(c), **self.compare("pruning", f, t, mask, f.final)}
                for d, c, f, t in zip(dense, runs, fulls, copies)
            ]
            record["pruning"] = _summarize(pairs, "pruning")
        pairs = []
        threshold = self.settings["threshold"]
        for i, j in itertools.combinations(range(len(runs)), 2):
            curve_name = f"{subject.kind}_interpolation_{i}_{j}.json"
            a, b = self.rel(runs[i]), self.rel(runs[j])
            curve = self.curve(out, curve_name, (a, b), finals[i], finals[j])
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    **self.compare("data_order", copies[i], copies[j], mask, full[i], curve),
                    "stable": barrier(curve["test_error"]) < threshold,
                    "curve": self.rel(out / curve_name),
                }
            )
        record["data_order"] = _summarize(pairs, "data_order")
        record["data_order"]["stable"] = all(p["stable"] for p in pairs)  # every pair below the threshold
        # The LMC paper's criterion: the mean barrier over pairs below the threshold.
        record["data_order"]["stable_mean_barrier"] = record["data_order"]["barrier_test"]["mean"] < threshold
        return record


def run_point(ctx: Context, experiment: RunDir, rdir: RunDir, r: int, k: int, level: int) -> None:
    """Train every copy that (k, level) needs and write its `analysis.json`."""
    subjects, lost = _subjects(ctx, rdir, r, k, level)
    runs = train_copies(ctx, rdir, r, k, level, subjects)
    analyzer = Analyzer(ctx, experiment)
    out = layout.stability(rdir, k, level)
    studied = [s for s in subjects if level == 0 or s.kind != "dense"]  # the dense network is studied at level 0
    records = [
        analyzer.point(r, subject, runs[subject.key], runs[DENSE], subject_dir(rdir, k, level, subject))
        for subject in studied
    ]
    records += [{"kind": kind, "density": None, "diverged": True} for kind in lost]  # an earlier level diverged
    records += dynamic_stability.records(ctx, analyzer, rdir, r, k, level, runs[DENSE])  # stability.dynamic (issue 28)
    out.write_json("analysis.json", {"replicate": r, "rewind_iteration": k, "level": level, "points": records})


def collect(experiment: RunDir, replicates: int) -> list[dict[str, Any]]:
    """Every analysed point in the store, flattened with its replicate, rewind point and level."""
    points = []
    for r in range(replicates):
        for path in sorted(layout.replicate(experiment.path, r).glob(layout.STABILITY_ANALYSES)):
            analysis = RunDir(path.parent).read_json("analysis.json")
            if analysis is None:
                continue
            for record in analysis["points"]:
                keys = {"replicate": r, "rewind_iteration": analysis["rewind_iteration"], "level": analysis["level"]}
                points.append({**keys, **record})

    def order(p: dict[str, Any]) -> tuple:
        return (p["replicate"], p["rewind_iteration"], p["level"], p["kind"], -(p.get("target_density") or 0))

    return sorted(points, key=order)
