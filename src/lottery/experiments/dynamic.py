"""Dynamic sparsity in the engine (`[dynamic]`; the methods: lottery/dynamic, docs/dynamic.md).

Each method of `dynamic.methods` trains sparse from W_0 (the replicate's initialisation, the dense run's start) at
every target density and seed, with the engine's loop and the training spec's protocol: a `DynamicSession` is the
loop's session with the dynamic handle in place of the fixed mask, its state in the run's checkpoint, so a killed
run resumes bit-identically. The run writes its final mask as `mask.safetensors` (the initial one as
`initial_mask.safetensors`) and the settings and per-update history in `dynamic.json`. `<method>_rewound` takes that
final mask onto W_k of the dense run (each `imp.rewind` point) and trains it with the IMP protocol, as an IMP
level: is a dynamic-sparsity mask a ticket? Results kinds: the method's name and `<method>_rewound`. With a stability
analysis, a method's run also saves its whole state at each stability point k (`state_points`: W_k, the optimizer
state and the handle's state, `state_name`), from which `stability.dynamic`'s copies continue
(experiments/dynamic_stability.py).

Wiring (marked `# dynamic sparsity (issue 28)`): plan.plan adds `planned`'s tasks and plan.execute calls `execute`;
views.views yields `views`; run.collect adds `rows` and run.results_of adds `collect`; Context.validate calls
lottery.dynamic.settings.check.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import torch

from lottery import collective, seeding
from lottery.data import Splits
from lottery.dynamic.config import Config
from lottery.dynamic.handle import DynamicSparsity
from lottery.dynamic.settings import config as resolve_config
from lottery.dynamic.settings import method_of
from lottery.experiments import recipes
from lottery.experiments.context import Context
from lottery.experiments.imp import rewind_state
from lottery.experiments.tasks import MissingDependency
from lottery.models import Network
from lottery.pruning import Mask, layer_pool
from lottery.results import rows as results
from lottery.spec import ExperimentSpec, Step, TrainingSpec
from lottery.store import RunDir, layout, locked
from lottery.training import Job, Runtime, train
from lottery.training.loop import Alone, Session, is_finished, run_loop


def derived_seed(seed: int, training: TrainingSpec) -> int:
    """The seed a run's initial mask and SET's growth use, from its recorded seed and the seed values of the dense
    run it starts from (`training`: the replicate's training settings), never a replicate's number."""
    return seeding.derive("dynamic", seed, training.init_seed, training.data_order_seed, training.augmentation_seed)


def config(ctx: Context, method: str, density: float, seed: int, replicate: int) -> Config:
    schedule = ctx.schedule
    group = ctx.spec.dynamic
    derived = derived_seed(seed, ctx.training(replicate))
    return resolve_config(group, method, density, derived, schedule.end, schedule.iterations_per_epoch)


def pool(ctx: Context) -> list[str]:
    """The layers made sparse: the prunable ones that `pruning.layers_to_ignore` leaves (the others stay dense)."""
    return layer_pool(Mask(dict.fromkeys(ctx.layer_kinds)), ctx.layer_kinds, ctx.spec.pruning)


def rewind_iterations(ctx: Context) -> list[int]:
    """The points k of `imp.rewind`, where `<method>_rewound` starts."""
    return sorted({Step.parse(s).to_iterations(ctx.schedule.iterations_per_epoch) for s in ctx.spec.imp.rewind})


def runs(ctx: Context) -> list[tuple[str, float, int, int | None]]:
    """(kind, density, seed, k or None) of every run the group asks for."""
    group, out = ctx.spec.dynamic, []
    for kind in group.kinds():
        points: list[int | None] = list(rewind_iterations(ctx)) if kind != method_of(kind) else [None]
        out += [(kind, d, s, k) for d in group.densities for s in group.seeds for k in points]
    return out


def task_name(r: int, kind: str, density: float, seed: int, k: int | None = None) -> str:
    where = f"r{r}/dynamic/{kind}" if k is None else f"r{r}/k{k}/dynamic/{kind}"
    return f"{where}/density{density:g}/seed{seed}"


def key(ctx: Context, r: int, kind: str, density: float, seed: int, k: int | None = None) -> dict[str, Any]:
    """What determines the network: the dense run's settings (model, data, training with the replicate's seeds: W_0
    and the protocol), the resolved dynamic settings and the layers; a rewound run: its mask's run, k and the
    optimizer-state option."""
    method = method_of(kind)
    run = {
        "kind": method,
        "version": recipes.VERSIONS["dynamic"],
        "dense": recipes.dense(ctx, r),
        "dynamic": asdict(config(ctx, method, density, seed, r)),
        "layers": pool(ctx),
        "arithmetic": recipes.arithmetic(ctx, stacked=False),
    }
    if k is None:
        return run
    return {
        "kind": kind,
        "version": recipes.VERSIONS["dynamic"],
        "mask_of": {key_: value for key_, value in run.items() if key_ != "arithmetic"},
        "rewind_iteration": k,
        "optimizer_state": ctx.spec.imp.optimizer_state,
        "arithmetic": recipes.arithmetic(ctx, stacked=False),
    }


def networks(ctx: Context, rdir: Any, r: int) -> list[tuple[Any, dict[str, Any], str]]:
    """(run directory, recipe, task) of replicate r's dynamic runs (views.networks)."""
    return [
        (layout.dynamic_run(rdir, kind, d, s, k), key(ctx, r, kind, d, s, k), task_name(r, kind, d, s, k))
        for kind, d, s, k in runs(ctx)
    ]


def planned(ctx: Context, r: int, dense: str) -> list[dict[str, Any]]:
    """The fields of replicate r's dynamic tasks (plan.Task): a method's run needs nothing before it (it starts
    from the initialisation); a rewound run needs its mask's run and the dense run (W_k)."""
    out = []
    for kind, density, seed, k in runs(ctx):
        method = method_of(kind)
        deps = () if k is None else (task_name(r, method, density, seed), dense)
        out.append(
            {
                "name": task_name(r, kind, density, seed, k),
                "action": "dynamic",
                "replicate": r,
                "rewind": k or 0,
                "control": kind,
                "seed": seed,
                "deps": deps,
                "density": density,
            }
        )
    return out


def execute(ctx: Context, rdir: RunDir, r: int, kind: str, density: float, seed: int, k: int) -> dict | None:
    """Run one dynamic task (plan.execute): the method's run, or its rewound mask at k."""
    if kind == method_of(kind):
        return run_method(ctx, rdir, r, kind, density, seed)
    return run_rewound(ctx, rdir, r, kind, density, seed, k)


def full_mask(ctx: Context, mask: Mask, shapes: dict[str, tuple[int, ...]]) -> Mask:
    """`mask` over every prunable layer, in the model's order (the layers it leaves out: all kept)."""
    return Mask({n: mask[n] if n in mask else torch.ones(shapes[n], dtype=torch.bool) for n in ctx.layer_kinds})


class DynamicSession(Session):
    """The loop's session of a dynamic run: the dynamic handle replaces the session's fixed mask attachment; its
    state rides in the run's checkpoint and is saved at the job's snapshot points (`state_name`); the final mask and
    the history are written at the end. `start`: a handle's state to continue from (a copy of a dynamic run from k,
    experiments/dynamic_stability.py); None: the method's initial mask at step 0."""

    def __init__(
        self,
        run: RunDir,
        model: Network,
        data: Splits,
        job: Job,
        runtime: Runtime,
        config: Config,
        names: list[str],
        start: dict[str, Any] | None = None,
    ) -> None:
        self.dynamic_config, self.names = config, names
        self.restored: dict[str, Any] | None = None
        self.first_step = 0 if start is None else int(start["step"])  # the handle's step at iteration job.start
        super().__init__(run, model, data, job, runtime)  # attaches the initial mask, resumes or writes the start
        if self.attachment is not None:
            self.attachment.remove()
            self.attachment = None
        state = self.restored if self.restored is not None else start
        self.handle = DynamicSparsity(model, self.optimizer, config, names, state=state)
        self.shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"dynamic": self.handle.state_dict()}

    def restore_extra(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["dynamic"]
        if int(state["step"]) != int(checkpoint["iteration"]) - self.job.start + self.first_step:
            raise ValueError(
                f"the dynamic state is at step {state['step']}, the checkpoint at {checkpoint['iteration']}"
            )
        self.restored = state

    def snapshot(self) -> None:
        """The weights (and optimizer state) at a snapshot point, and the handle's state there (mask, step,
        history: what a copy from k continues)."""
        super().snapshot()
        if self.t in self.job.snapshots and not self.run.exists(state_name(self.t)):
            self.run.write_torch(state_name(self.t), self.handle.state_dict())

    def finish(self) -> dict[str, Any]:
        initial = self.mask
        self.mask = full_mask_of(self.handle.mask, initial)
        self.handle.remove()
        self.run.write_tensors("initial_mask.safetensors", initial.to_tensors())
        self.run.write_tensors("mask.safetensors", self.mask.to_tensors())  # the final mask: what the run ends with
        self.run.write_json("sparsity.json", self.mask.report())
        record = {
            "method": self.dynamic_config.method,
            "config": asdict(self.dynamic_config),
            "layers": self.names,
            "initial_density": initial.density,
            "history": self.handle.history,
        }
        self.run.write_json("dynamic.json", record)
        return super().finish()


def state_name(k: int) -> str:
    """The file, inside a dynamic run, of the handle's state at iteration k (beside W_k and the optimizer state)."""
    return layout.dynamic_state(k)


def state_points(ctx: Context) -> tuple[int, ...]:
    """Where a method's run saves its whole state (weights, optimizer, mask and method state): the stability
    points k, when the spec has a stability analysis (`stability.dynamic` trains copies from them); none else."""
    return tuple(ctx.stability_points) if ctx.spec.stability.rewind else ()


def full_mask_of(mask: Mask, like: Mask) -> Mask:
    """`mask`'s layers in `like`'s order; `like`'s other layers as they are (all kept)."""
    return Mask({name: mask[name].clone() if name in mask else like[name].clone() for name in like})


def finished(run: RunDir, job: Job) -> bool:
    """Whether the run is finished with every artifact: the loop's, `dynamic.json`, and the handle's state at each
    snapshot point it reached."""
    if not is_finished(run, job) or run.read_json("dynamic.json") is None:
        return False
    summary = run.read_json("summary.json")
    reached = [k for k in job.snapshots if not (summary["diverged"] and summary["diverged_at"] < k)]
    return all([run.read(state_name(k)) is not None for k in reached])  # (every bad file is reported)


def train_dynamic(
    run: RunDir,
    model: Network,
    data: Splits,
    job: Job,
    runtime: Runtime,
    config: Config,
    names: list[str],
    start: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one dynamic run (or read it back), locked as `training.train` locks a run; `start`: see
    `DynamicSession`."""
    if finished(run, job):
        return run.read_json("summary.json")
    with locked(run.path):
        if finished(run, job):
            return run.read_json("summary.json")
        if collective.is_main():
            run.remove_temporary()
        session = DynamicSession(run, model, data, job, runtime, config, names, start)
        run_loop([session], Alone(session))
        return session.summary


def run_method(ctx: Context, rdir: RunDir, r: int, method: str, density: float, seed: int) -> dict[str, Any]:
    """Train `method` at `density` from W_0 of replicate r (the dense run's initialisation)."""
    cfg = config(ctx, method, density, seed, r)
    run = layout.dynamic_run(rdir, method, density, seed)
    names = pool(ctx)
    model = ctx.model(ctx.training(r).init_seed)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    initial = full_mask(ctx, DynamicSparsity.initial(cfg, {n: shapes[n] for n in names}), shapes)
    tags = ctx.tags(run, r, method, None, None, seed=seed, target_density=density)  # level: none (not IMP)
    points = state_points(ctx)  # its state at k, for copies from k (stability.dynamic)
    job = ctx.job(r, start=0, mask=initial, tags=tags, snapshots=points, snapshot_optimizer=bool(points))
    ctx.runtime.label = f"r{r} {method} {100 * density:.3g}%"
    return train_dynamic(run, model, ctx.data, job, ctx.runtime, cfg, names)


def final_mask(ctx: Context, rdir: RunDir, r: int, method: str, density: float, seed: int) -> Mask | None:
    """The final mask of a finished dynamic run; None where it diverged; `MissingDependency` where it is not in
    the store."""
    run = layout.dynamic_run(rdir, method, density, seed)
    summary = run.read_json("summary.json")
    stored = run.read_tensors("mask.safetensors") if summary is not None else None
    if summary is None or stored is None or run.read_json("dynamic.json") is None:
        raise MissingDependency(task_name(r, method, density, seed), f"the {method} run {run.path}")
    if summary["diverged"]:
        print(f"lottery: {run.path} diverged; its rewound mask is not trained", file=sys.stderr)
        return None
    return ctx.mask(stored)


def run_rewound(ctx: Context, rdir: RunDir, r: int, kind: str, density: float, seed: int, k: int) -> dict | None:
    """`<method>_rewound`: the method's final mask on W_k, trained from k with the IMP protocol."""
    mask = final_mask(ctx, rdir, r, method_of(kind), density, seed)
    if mask is None:
        return None
    rewound, optimizer_state = rewind_state(ctx, rdir, r, k)
    run = layout.dynamic_run(rdir, kind, density, seed, k)
    tags = ctx.tags(run, r, kind, None, k, seed=seed, target_density=density)
    job = ctx.job(r, start=k, mask=mask, optimizer_state=optimizer_state, tags=tags)
    ctx.runtime.label = f"r{r} {kind} k={k} {100 * density:.3g}%"
    return train(run, ctx.model(0, mask.apply_to(rewound)), ctx.data, job, ctx.runtime)


def _stored_runs(spec: ExperimentSpec, rdir: RunDir) -> list[tuple[str, float, int, int | None, RunDir]]:
    """(kind, density, seed, k, run) of the dynamic runs of a replicate that the spec implies (rewound runs: at
    every rewind point present in the store)."""
    out = []
    for kind in spec.dynamic.kinds():
        for density in spec.dynamic.densities:
            for seed in spec.dynamic.seeds:
                base = layout.dynamic_run(rdir, kind, density, seed)
                if kind == method_of(kind):
                    out.append((kind, density, seed, None, base))
                    continue
                for k in layout.rewind_points(base.path.parent):
                    out.append((kind, density, seed, k, layout.dynamic_run(rdir, kind, density, seed, k)))
    return out


def rows(experiment: RunDir, spec: ExperimentSpec, rdir: RunDir, r: int) -> list[dict[str, Any]]:
    """The results rows of replicate r's dynamic runs (run.collect): kind = the method or `<method>_rewound`."""
    out = []
    for kind, density, seed, k, run in _stored_runs(spec, rdir):
        row = results.run_row(
            experiment, run, kind=kind, replicate=r, rewind_iteration=k, level=None, seed=seed, target_density=density
        )
        if row is not None:
            out.append(row)
    return out


def _moved(update: dict[str, Any]) -> float:
    """The fraction of the active weights an update changed (grown; GMP: pruned), from its counts."""
    grown, dropped = sum(update["grown"].values()), sum(update["dropped"].values())
    return max(grown, dropped) / max(1, update["kept"] + dropped - grown)


def collect(experiment: RunDir, spec: ExperimentSpec) -> list[dict[str, Any]]:
    """results.json's "dynamic" section: every finished dynamic run's mask movement (the fraction of its active
    weights each update changes: grown, or for GMP pruned) and its number of updates."""
    out = []
    for r in range(spec.replicates):
        rdir = layout.replicate(experiment, r)
        for kind, density, seed, k, run in _stored_runs(spec, rdir):
            record = run.read_json("dynamic.json") if k is None else None
            if record is None:
                continue
            movement = [{"step": h["step"], "moved": _moved(h), "kept": h["kept"]} for h in record["history"]]
            where = str(run.path.relative_to(experiment.path))
            out.append(
                {
                    "kind": kind,
                    "replicate": r,
                    "target_density": density,
                    "seed": seed,
                    "path": where,
                    "updates": len(movement),
                    "movement": movement,
                }
            )
    return out
