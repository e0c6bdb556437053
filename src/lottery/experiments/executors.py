"""Executors run the tasks of one or more experiments: `local` in this process, in dependency order,
`ray` on a Ray cluster (a local instance, or one joined with an address), with Ray resolving the
dependencies and retrying failed tasks, or `slurm` (`experiments/slurm.py`), each task a Slurm job. Whichever runs
them, the store ends the same: tasks are deterministic and idempotent, and each trained unit is locked while it
trains. A task may be trained by several processes (`nproc` > 1: `task_processes.py`). Every worker records what
it does with each task in the sweep's record (`sweep_status.py`), which `lottery sweep --status` reads.

A local Ray instance listens on and is reached at 127.0.0.1 only: it is started with
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` in its environment, with which Ray keeps a single-node instance on
localhost instead of binding the machine's network interface."""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lottery.experiments import sweep_status
from lottery.experiments.context import Context
from lottery.experiments.plan import Task, execute, run_task
from lottery.spec import ExperimentSpec, spec_hash
from lottery.store import experiment_dir
from lottery.training import Runtime


@dataclass
class TaskJob:
    """One task of one experiment; run in this process (the local executor, one process per task), with the
    driver's context of the experiment and its tasks by name (`plan.index`), where given."""

    spec: ExperimentSpec
    task: Task
    ctx: Context | None = field(default=None, repr=False, compare=False)
    tasks: dict[str, Task] | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{spec_hash(self.spec)}:{self.task.name}"

    @property
    def deps(self) -> list[str]:
        return [f"{spec_hash(self.spec)}:{d}" for d in self.task.deps]


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> error (last attempt)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> the failed dependency


_contexts: dict[tuple[str, str], Context] = {}


def context_for(spec: ExperimentSpec, runtime: Runtime) -> Context:
    """One Context (data on the device, seeded models) per experiment per process, reused across tasks."""
    key = (spec_hash(spec), str(runtime.device))
    if key not in _contexts:
        _contexts[key] = Context(spec, runtime)
    return _contexts[key]


def run_job(
    spec: ExperimentSpec,
    task: Task,
    root: str,
    runtime: Runtime,
    record: str | None = None,
    nproc: int = 1,
    ctx: Context | None = None,
    tasks: dict[str, Task] | None = None,
) -> str:
    """Run one task (the body of a Ray task and of a Slurm job too): in this process (with the context `ctx` and the
    tasks `tasks`, where given), or with `nproc` processes (one data-parallel job); its state goes to the sweep's
    record at `record`, if any."""
    key = f"{spec_hash(spec)}:{task.name}"
    if record:
        sweep_status.mark(Path(record), key, "running")
    try:
        if nproc > 1:
            from lottery.experiments.task_processes import launch

            launch(str(root), experiment_dir(Path(root), spec).path.name, task.name, runtime, nproc)
        else:
            _run_here(spec, task, root, runtime, ctx, tasks)
    except Exception as exc:
        if record:
            sweep_status.mark(Path(record), key, "failed", _error(exc))
        raise
    except BaseException:
        if record:
            sweep_status.mark(Path(record), key, "interrupted")
        raise
    if record:
        sweep_status.mark(Path(record), key, "done")
    return task.name


def _run_here(
    spec: ExperimentSpec, task: Task, root: str, runtime: Runtime, ctx: Context | None, tasks: dict[str, Task] | None
) -> None:
    if runtime.imports:  # the driver's --import plugin modules (once per process)
        from lottery.plugins import import_modules

        import_modules(runtime.imports)
    if runtime.threads is not None and torch.get_num_threads() != runtime.threads:
        torch.set_num_threads(runtime.threads)  # as many as the driver: CPU results depend on it
    run_task(task, ctx or context_for(spec, runtime), experiment_dir(Path(root), spec), tasks, step=execute)


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def run_local(
    jobs: Sequence[TaskJob],
    root: Path,
    runtime: Runtime,
    retries: int = 0,
    record: str | None = None,
    nproc: int = 1,
    stop_on_error: bool = False,
) -> Outcome:
    """In order; a failing job is retried up to `retries` times, then reported; its dependents are skipped.
    `stop_on_error` (`lottery run`): the failing job's error is raised instead, and no progress bar of tasks shown."""
    outcome = Outcome()
    bad: dict[str, str] = {}
    for job in tqdm(jobs, desc="sweep", unit="task", disable=stop_on_error or not sys.stderr.isatty()):
        blocked = next((d for d in job.deps if d in bad), None)
        if blocked is not None:
            outcome.skipped[job.key] = blocked
            bad[job.key] = blocked
            continue
        for attempt in range(retries + 1):
            try:
                run_job(job.spec, job.task, str(root), runtime, record, nproc, job.ctx, job.tasks)
                outcome.done.append(job.key)
                break
            except Exception as exc:  # noqa: BLE001  (reported at the end; the other jobs go on)
                if stop_on_error and attempt == retries:
                    raise
                error = _error(exc)
                print(f"lottery: {job.key} failed (attempt {attempt + 1}/{retries + 1}): {error}", file=sys.stderr)
                if attempt == retries:
                    outcome.failed[job.key] = error
                    bad[job.key] = job.key
    return outcome


LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local Ray instance stays on 127.0.0.1


def loopback_ray() -> None:
    """Make the Ray instance this process starts listen on and be reached at 127.0.0.1 only: the variable, in this
    process's environment (inherited by every Ray process it starts) and, where Ray was imported before it was
    set, in Ray's constant read from it at import."""
    os.environ[LOOPBACK_VARIABLE] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def run_ray(
    jobs: Sequence[TaskJob],
    root: Path,
    runtime: Runtime,
    retries: int = 0,
    address: str | None = None,
    workers: int | None = None,
    record: str | None = None,
    nproc: int = 1,
) -> Outcome:
    """Each job a Ray task that depends on its dependencies' tasks; Ray schedules and retries them."""
    if not address:
        loopback_ray()
    try:
        import ray
    except ImportError:
        from lottery.errors import UserError

        raise UserError("the ray executor needs Ray: pip install 'lottery[ray]'") from None
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            options["address"] = address
        else:
            options["_node_ip_address"] = "127.0.0.1"
            if workers:
                options["num_cpus"] = workers
        ray.init(**options)
    runtime = dataclasses.replace(runtime, threads=runtime.threads or torch.get_num_threads())
    remote = ray.remote(**task_options(runtime, retries, nproc))(_ray_job)
    refs: dict[str, Any] = {}
    for job in jobs:
        deps = [refs[d] for d in job.deps]
        refs[job.key] = remote.remote(job.spec, job.task, str(Path(root).resolve()), runtime, record, nproc, *deps)
    pending = {ref: key for key, ref in refs.items()}
    errors: dict[str, str] = {}
    with tqdm(total=len(refs), desc="sweep", unit="task", disable=not sys.stderr.isatty()) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ready[0])
            try:
                ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                errors[key] = _error(getattr(exc, "cause", None) or exc)
            bar.update()
    return _classify(jobs, errors)


def task_options(runtime: Runtime, retries: int, nproc: int = 1) -> dict[str, Any]:
    """Ray options of every task: retries, and the GPUs it holds (`runtime.gpus_per_task`; by default 1 per
    process when training on CUDA, so Ray places each task on its own GPUs and sets CUDA_VISIBLE_DEVICES to them,
    else 0), and a CPU per process."""
    gpus = runtime.gpus_per_task
    if gpus is None:
        gpus = nproc if runtime.device.type == "cuda" else 0
    options: dict[str, Any] = {"max_retries": retries, "retry_exceptions": True}
    if nproc > 1:
        options["num_cpus"] = nproc  # Ray's default for a task is 1
    if gpus:
        options["num_gpus"] = gpus
    return options


def _classify(jobs: Sequence[TaskJob], errors: dict[str, str]) -> Outcome:
    """A job whose dependency did not succeed is 'skipped' (it never ran: Ray does not start a task whose
    argument failed); the others that raised are 'failed'."""
    outcome = Outcome()
    bad: dict[str, str] = {}
    for job in jobs:
        blocked = next((bad[d] for d in job.deps if d in bad), None)
        if blocked is not None:
            outcome.skipped[job.key] = blocked
            bad[job.key] = blocked
        elif job.key in errors:
            outcome.failed[job.key] = errors[job.key]
            bad[job.key] = job.key
        else:
            outcome.done.append(job.key)
    return outcome


def _ray_job(
    spec: ExperimentSpec, task: Task, root: str, runtime: Runtime, record: str | None, nproc: int, *deps: str
) -> str:
    return run_job(spec, task, root, runtime, record, nproc)
