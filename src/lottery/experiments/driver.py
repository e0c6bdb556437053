"""The one driver of `lottery run` (and `train`), `lottery sweep` and `lottery rewind-search`. Each command runs the
same sequence over its experiments (one for `run` and a search, the grid's for a sweep):

1. validate (`prepare`): every spec stamped with its plugins' code, its context built and validated, its directory
   checked for a collision, all before anything is written;
2. lock (`held`): every experiment's lock, taken in one order (so two drivers never deadlock), then again the
   collision check and the spec written (`spec.json`, `spec.toml`);
3. bind, plan, execute (`execute`): each experiment's run directories linked to their networks (`views.bind`), its
   tasks planned from the networks (`plan.plan`), and every task run through an executor (`executors.py`: the local
   one for `run`, stopping at the first error; the local, Ray or Slurm one for a sweep). A rewind search does this
   step its own way, point by point (`rewind_search.Search`: it binds and runs the tasks of each probe);
4. write results (`results.json`, `results.csv`, `stability.csv`), still under the locks;
5. announce (`announce_results`): the one place where an experiment's written results are announced (today: the
   trackers of `--log`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lottery import events
from lottery.experiments import executors, sweep_status, views
from lottery.experiments.context import Context
from lottery.experiments.plan import index, plan
from lottery.plugins import stamp
from lottery.spec import ExperimentSpec
from lottery.store import RunDir, check_collision, experiment_dir, layout, locked, write_spec
from lottery.training import Runtime

T = TypeVar("T")
Writer = Callable[[RunDir, ExperimentSpec], dict[str, Any]]  # writes an experiment's results files, returns them


@dataclass(frozen=True)
class Experiment:
    """One experiment a command drives: its spec (stamped), the preset it came from, its context and directory."""

    spec: ExperimentSpec
    preset: str | None
    ctx: Context
    directory: RunDir


def prepare(
    specs: Sequence[tuple[ExperimentSpec, str | None]],
    root: Path,
    runtime: Runtime,
    context: Callable[[ExperimentSpec, Runtime], Context] = Context,
) -> list[Experiment]:
    """Validate: each (spec, preset) stamped (a spec built in Python names its plugins' code too), its context built
    with `context` and validated, its directory checked for a collision; nothing is written."""
    out = []
    for spec, preset in specs:
        spec = stamp(spec)
        ctx = context(spec, runtime)
        ctx.validate()
        directory = experiment_dir(root, spec)
        check_collision(directory, spec)
        out.append(Experiment(spec, preset, ctx, directory))
    return out


@contextmanager
def held(experiments: Sequence[Experiment], wait: bool = True) -> Iterator[None]:
    """Lock every experiment (in the order of their paths; under torchrun rank 0 takes them for all ranks; `wait`
    False: refuse, instead of waiting, when another process holds one), check again for a collision (another
    process may have written the directory meanwhile) and write each spec."""
    with ExitStack() as locks:
        for path in sorted({experiment.directory.path for experiment in experiments}):
            locks.enter_context(locked(path, wait=wait))
        for experiment in experiments:
            check_collision(experiment.directory, experiment.spec)
            write_spec(experiment.directory, experiment.spec, experiment.preset)
        yield


@dataclass(frozen=True)
class Execution:
    """How `execute` runs the tasks: the executor ('local', 'ray' or 'slurm') and its options. `stop_on_error`:
    the first failing task's error is raised (`lottery run`), instead of being reported in the outcome while the
    other tasks go on (a sweep)."""

    executor: str = "local"
    retries: int = 0
    address: str | None = None
    workers: int | None = None
    nproc: int = 1
    slurm: Any = None  # slurm.SlurmOptions
    record: str | None = None  # the sweep's record (sweep_status.py)
    stop_on_error: bool = False


def execute(
    experiments: Sequence[Experiment], root: Path, runtime: Runtime, how: Execution, dense_only: bool = False
) -> executors.Outcome:
    """Bind every experiment (`views.bind`), plan its tasks (`plan.plan`: the tasks of its networks) and run them all
    through the executor `how` names."""
    jobs = []
    for experiment in experiments:
        views.bind(experiment.ctx, experiment.directory, dense_only)  # its run directories: links to the networks
        everything = plan(experiment.ctx)
        tasks = index(everything)  # by name and by a stacked group's members' names
        planned = plan(experiment.ctx, dense_only) if dense_only else everything
        jobs += [executors.TaskJob(experiment.spec, task, experiment.ctx, tasks) for task in planned]
    if how.executor == "slurm":
        from lottery.experiments.slurm import SlurmOptions, run_slurm

        assert how.record is not None, "the slurm executor keeps its jobs in the sweep's record"
        return run_slurm(jobs, root, runtime, how.retries, how.slurm or SlurmOptions(), how.record, how.nproc)
    if how.record is not None:
        sweep_status.start(Path(how.record), [job.key for job in jobs], how.executor)
    if how.executor == "ray":
        return executors.run_ray(jobs, root, runtime, how.retries, how.address, how.workers, how.record, how.nproc)
    return executors.run_local(jobs, root, runtime, how.retries, how.record, how.nproc, stop_on_error=how.stop_on_error)


def drive(
    experiments: Sequence[Experiment],
    runtime: Runtime,
    work: Callable[[Sequence[Experiment]], T],
    write_results: Writer,
    wait: bool = True,
) -> tuple[list[dict[str, Any]], T]:
    """The sequence after validation: lock and write the specs (`held`), `work` (bind, plan and execute: `execute`,
    or a rewind search's probes), `write_results` for each experiment, then `announce_results`. Returns each
    experiment's results and what `work` returned."""
    with held(experiments, wait):
        outcome = work(experiments)
        results = [write_results(experiment.directory, experiment.spec) for experiment in experiments]
    for experiment, written in zip(experiments, results, strict=True):
        announce_results(experiment.directory, written, runtime)
    return results, outcome


def announce_results(experiment: RunDir, results: dict[str, Any], runtime: Runtime) -> None:
    """The one place where an experiment's written results are announced: the `on_results` event (lottery.events),
    to which the trackers of `runtime.log` subscribe."""
    events.emit(events.ResultsWritten(experiment.path, results, runtime.log, runtime.log_strict))


def dry_run(
    spec: ExperimentSpec, preset: str | None, root: Path, runtime: Runtime, dense_only: bool = False
) -> list[str]:
    """What `lottery run --dry-run` prints, having validated the spec and written nothing: every task of the plan
    in order, with the networks it trains (`views.networks`) and how many of them the store already holds, then a
    total. A task that trains no network (the early-bird trace) shows '-'."""
    (experiment,) = prepare([(spec, preset)], root, runtime)
    ctx, store = experiment.ctx, Path(root)
    tasks = index(plan(ctx))
    held_by: dict[str, dict[Path, bool]] = {}  # task -> its networks' views -> stored
    for network in views.networks(ctx, dense_only):
        held_by.setdefault(tasks[network.task].name, {})[network.view] = _stored(store, network)
    lines, to_run = [], 0
    for task in plan(ctx, dense_only):
        found = held_by.get(task.name, {})
        done = sum(found.values())
        state = "-" if not found else "stored" if done == len(found) else "to run"
        to_run += state == "to run"
        lines.append(f"{state:7} {task.name}  ({done}/{len(found)} networks stored)")
    networks = [stored for found in held_by.values() for stored in found.values()]
    lines.append(
        f"{experiment.directory.path}: {len(lines)} tasks, {to_run} to run; "
        f"{len(networks) - sum(networks)} of {len(networks)} networks to train"
    )
    return lines


def _stored(store: Path, network: views.Network) -> bool:
    """Whether the store holds the network finished (its summary), read without following a link out of it."""
    summary = layout.network(store, network.kind, network.digest) / "summary.json"
    layout.confined(summary)  # every directory on the way a real one of the store: UserError otherwise
    return summary.is_file() and not summary.is_symlink()


def without_stacking(runtime: Runtime, nproc: int) -> Runtime:
    """A data-parallel task (`nproc` > 1) trains its runs one by one: plan as its ranks do, without stacking."""
    return dataclasses.replace(runtime, batch_copies=False) if nproc > 1 else runtime
