"""Runs of one architecture trained together as one stacked model, where that is faster.

The copies of a stability analysis (and its subjects: the dense network, the IMP subnetwork, the controls) are
runs that differ only in start weights, masks, seeds and optimizer state. `train_together` trains such runs as
one `Stacked` model and leaves every run with exactly the artifacts `lottery.training.train` writes (start
weights, mask, sparsity, metrics at the same evaluation points, checkpoints in the same format, final weights,
summary, whose "arithmetic" records how it was computed). A run checkpointed in a group resumes without the
others, at its position in a stack of its group's size, so it ends bit for bit where the uninterrupted group
puts it at any thread count. Each copy sees exactly the batches of its separate run (its own `BatchStream`); its
weights equal a separate run's up to float rounding (see `stacked.py`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from lottery import collective
from lottery.data import Splits
from lottery.models import Network
from lottery.spec import TrainingSpec
from lottery.store import RunDir, locked
from lottery.training.job import Job
from lottery.training.loop import Runtime, Session, is_finished, run_loop, train
from lottery.training.stacked import Stacked, optimizer_signature, unsupported

SEED_FIELDS = ("init_seed", "data_order_seed", "augmentation_seed")


def should_batch(model: nn.Module, runtime: Runtime, k: int) -> bool:
    """Whether k runs of `model` are trained together: `runtime.batch_copies` if set (where stacking is possible),
    else the measured rule (benchmarks/batched_copies.py, docs/performance.md): on an accelerator for k >= 2; on
    the CPU for networks without convolutions (LeNet: batched matmuls and one fused optimizer step for all copies
    beat k separate steps), not for convnets (grouped convolutions are slower there than k ordinary ones). Never
    with active dropout, under torchrun (each rank trains one run's slice) or with --compile."""
    if k < 2 or unsupported(model) is not None or collective.active() or runtime.batch_copies is False:
        return False
    if runtime.batch_copies:
        return True
    if runtime.compile:
        return False
    convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return runtime.device.type != "cpu" or not convolutional


def _check(models: Sequence[Network], jobs: Sequence[Job]) -> None:
    if len(models) != len(jobs):
        raise ValueError(f"train_together needs one job per model (got {len(models)} models, {len(jobs)} jobs)")

    def neutral(training: TrainingSpec) -> TrainingSpec:
        return dataclasses.replace(training, **{f: 0 for f in SEED_FIELDS})

    first, shapes = jobs[0], {n: v.shape for n, v in models[0].state_dict().items()}
    for model, job in zip(models, jobs):
        if type(model) is not type(models[0]) or {n: v.shape for n, v in model.state_dict().items()} != shapes:
            raise ValueError("train_together needs runs of one architecture")
        same = (job.schedule, job.start, job.augment, job.snapshots, job.snapshot_optimizer) == (
            first.schedule,
            first.start,
            first.augment,
            first.snapshots,
            first.snapshot_optimizer,
        )
        if not same or neutral(job.training) != neutral(first.training):
            raise ValueError(
                "train_together needs one schedule, start, set of snapshots and hyperparameters (seeds may differ)"
            )


def train_together(
    runs: Sequence[RunDir],
    models: Sequence[Network],
    data: Splits,
    jobs: Sequence[Job],
    runtime: Runtime,
    stacked: bool | None = None,
    group: Sequence[RunDir] | None = None,
) -> list[dict[str, Any]]:
    """Train run i from `models[i]` with `jobs[i]`, as `lottery.training.train` would; the runs' summaries.

    The jobs may differ in seeds, masks, start weights and optimizer states, nothing else. Finished runs are
    read back. `stacked` (None: `should_batch` for all the runs given, finished or not) says whether the runs
    are trained as stacked models -- the others one after another with the training loop.

    `group` (default: `runs`) is the whole group the runs belong to, in stack order: every run given is one of
    its members, the others may be finished or not buildable yet. A stacked run is always computed at its own
    position in a stack of the group's size, whichever members actually train with it: with more than one CPU
    thread, the kernels split a stacked tensor between threads by its size, so a copy's bits depend on the
    stack's size and on its position in it (never on the other copies' values, see `stacked.py`). Members that
    are not training (finished, resuming from another iteration, or not given) are stood in for by a
    placeholder copy whose results are discarded. Runs that resume from different iterations, or whose
    optimizer states cannot be stacked, form separate stacks, each of the group's size: a run computes with one
    arithmetic from start to end, whatever the store holds when it resumes. Callers therefore give the same
    group, and the same `stacked`, whenever they ask for a run. Each run's summary records its arithmetic
    (`"arithmetic"`: stacked or not, the group and its position, threads, device), which `lottery verify`
    checks across a group.
    """
    _check(models, jobs)
    group = list(runs if group is None else group)
    positions = [[member.path for member in group].index(run.path) for run in runs]  # ValueError: not a member
    todo = [i for i in range(len(runs)) if not is_finished(runs[i], jobs[i])]
    if not todo:
        return [run.read_json("summary.json") for run in runs]
    if not (should_batch(models[0], runtime, len(runs)) if stacked is None else stacked):
        return [train(run, model, data, job, _named(runtime, run)) for run, model, job in zip(runs, models, jobs)]
    with ExitStack() as locks:
        for i in sorted(todo, key=lambda i: str(runs[i].path)):  # one order for every process: no deadlock
            locks.enter_context(locked(runs[i].path))
        todo = [i for i in todo if not is_finished(runs[i], jobs[i])]  # finished by another process meanwhile
        sessions = []
        for i in todo:
            runs[i].remove_temporary()
            session = Session(runs[i], models[i], data, jobs[i], _named(runtime, runs[i]))
            session.arithmetic.update(stacked=True, group=_relative(group, runs[i]), position=positions[i])
            sessions.append(session)

        def key(s: Session) -> tuple[Any, ...]:
            return s.t, optimizer_signature(s.optimizer, list(s.model.parameters()))

        for _, same in itertools.groupby(sorted(sessions, key=lambda s: repr(key(s))), key=key):
            _train_stacked(list(same), len(group))  # alone too: a run keeps its stacked arithmetic when resumed alone
    return [run.read_json("summary.json") for run in runs]


def _relative(group: Sequence[RunDir], run: RunDir) -> list[str]:
    """The group's directories relative to `run`'s (its own is '.'), as its summary records them: where the runs
    are stored (an experiment's run directories are links into the store's networks/)."""
    return [os.path.relpath(os.path.realpath(member.path), os.path.realpath(run.path)) for member in group]


def _named(runtime: Runtime, run: RunDir) -> Runtime:
    """The runtime with the run's name added to its label (one label is given for all the runs)."""
    return dataclasses.replace(runtime, label=f"{runtime.label} {run.path.name}".strip())


def _train_stacked(sessions: list[Session], size: int) -> None:
    """The training loop (`loop.run_loop`) for sessions at one iteration, one stacked step for all."""
    run_loop(sessions, StackedSteps(sessions, size))


class StackedSteps:
    """The loop's backend for sessions trained as one stacked model: session s is copy `s.arithmetic["position"]`
    of a stack of `size` copies, the others placeholders (copies of the first session, fed its batches, whose
    results are never read)."""

    def __init__(self, sessions: list[Session], size: int) -> None:
        first = sessions[0]
        slots = [first] * size
        for s in sessions:
            slots[s.arithmetic["position"]] = s
        self.sessions, self.size = sessions, size
        self.where = {id(s): s.arithmetic["position"] for s in sessions}  # a session's copy in the stack
        self.streams = [s.stream() for s in sessions]
        models, masks, optimizers = [s.model for s in slots], [s.mask for s in slots], [s.optimizer for s in slots]
        self.stacked = Stacked(models, masks, optimizers, first.job.training)
        self.autocast = first.autocast()

    def sync(self, sessions: list[Session], optimizer: bool) -> None:
        for s in sessions:
            self.stacked.write_back(self.where[id(s)], s.model, s.optimizer if optimizer else None)

    def step(self, sessions: list[Session], lr: float) -> list[torch.Tensor]:
        t = sessions[0].t
        batches = [stream.batch(t) for stream in self.streams]  # every session's, finished ones too
        fed = [batches[0]] * self.size
        for s, batch in zip(self.sessions, batches):
            fed[self.where[id(s)]] = batch
        losses = self.stacked.step(
            torch.stack([x for x, _ in fed]), torch.stack([y for _, y in fed]), lr, self.autocast
        )
        return [losses[self.where[id(s)]] for s in sessions]
