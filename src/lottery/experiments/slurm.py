"""The `slurm` executor: every task of the sweep is one Slurm job, submitted through submitit, that depends on the
jobs of the tasks it needs (`--dependency=afterok:...`, with `--kill-on-invalid-dep=yes` so that the dependents
of a failed job leave the queue). Each job trains its networks into the shared store (`--out` on a filesystem
every node sees).

Preemption and time limits: Slurm signals the job (`--signal=USR2@90`, submitit's default), submitit calls the
task's `checkpoint` and requeues the same job; the requeued job runs the task again, which resumes each run
from its last checkpoint in the store (`--checkpoint-every`, default every 2 minutes of training). A failing
task is retried inside its job (`--retries`); then its dependents are cancelled and reported as skipped.

The driver (`lottery sweep ... --executor slurm`) submits, then waits for the jobs, holding the sweep's
experiment locks, and writes the results. Killed and started again with the same command, it does not submit
twice: jobs of the previous run still in the queue are waited for (and depended on) instead. `lottery sweep SPEC
--status` reports pending / running / done / failed from any host (`sweep_status.py`)."""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lottery.errors import UserError
from lottery.experiments import sweep_status
from lottery.experiments.executors import Outcome, TaskJob, _classify, run_job
from lottery.spec import ExperimentSpec
from lottery.training import Runtime

POLL_S = 2.0  # seconds between two looks at the queue while waiting


@dataclass(frozen=True)
class SlurmOptions:
    """What the jobs ask of Slurm (each `None`: the cluster's default)."""

    partition: str | None = None
    time_minutes: int = 240  # --time: a job's limit; a task that needs longer is requeued and resumes
    gpus_per_task: int | None = None  # GPUs of one job (all of its processes together); default 1 per process on CUDA
    cpus_per_task: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # --slurm KEY=VALUE: any other sbatch option
    max_requeues: int = 3  # times a job that hit its time limit is requeued (preemptions do not count)


TIME = re.compile(r"^(?:(?:(\d+)-)?(\d+):)?(\d+)(?::(\d+))?$")


def parse_time(text: str) -> int:
    """Slurm's --time formats in minutes: 'M', 'H:M:S'... -> as sbatch reads them ('MM', 'MM:SS', 'HH:MM:SS',
    'D-HH', 'D-HH:MM', 'D-HH:MM:SS'); at least one minute."""
    text = text.strip()
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            raise UserError(f"--time {head}-{text!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
        days = int(head)
        parts = text.split(":")
        if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
            raise UserError(f"--time {days}-{text!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
        h, m, s = ([int(p) for p in parts] + [0, 0])[:3]
    else:
        parts = text.split(":")
        if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
            raise UserError(f"--time {text!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
        values = [int(p) for p in parts]
        h, m, s = {1: (0, values[0], 0), 2: (0, *values), 3: tuple(values)}[len(values)]  # type: ignore[assignment]
    minutes = days * 1440 + h * 60 + m + (1 if s else 0)
    if minutes < 1:
        raise UserError(f"--time {text!r} must be at least one minute")
    return minutes


def parse_extra(items: Sequence[str]) -> dict[str, str]:
    """--slurm KEY=VALUE (repeatable) -> {KEY: VALUE}, for sbatch options the CLI does not name."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise UserError(f"--slurm {item!r}: expected KEY=VALUE with an sbatch option name, e.g. --slurm qos=high")
        extra[key] = value
    return extra


class SlurmTask:
    """The callable a Slurm job runs (pickled by submitit): the task, retried in the job; `checkpoint` makes
    submitit requeue it when the job is preempted or timed out (the task resumes from the store)."""

    def __init__(
        self, spec: ExperimentSpec, task: Any, root: str, runtime: Runtime, record: str, retries: int, nproc: int
    ) -> None:
        self.spec, self.task, self.root, self.runtime = spec, task, root, runtime
        self.record, self.retries, self.nproc = record, retries, nproc

    def __call__(self) -> str:
        for attempt in range(self.retries + 1):
            try:
                return run_job(self.spec, self.task, self.root, self.runtime, self.record, self.nproc)
            except Exception as exc:  # noqa: BLE001  (retried, then raised: the job fails)
                print(
                    f"lottery: {self.task.name} failed (attempt {attempt + 1}/{self.retries + 1}): {exc}",
                    file=sys.stderr,
                )
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        print(
            f"lottery: {self.task.name}: preempted or timed out; requeued, it resumes from its checkpoint",
            file=sys.stderr,
        )
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _executor(folder: Path, options: SlurmOptions, runtime: Runtime, nproc: int) -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("the slurm executor needs submitit: pip install 'lottery[slurm]'") from None
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_requeues)
    gpus = options.gpus_per_task
    if gpus is None and runtime.device.type == "cuda":
        gpus = nproc
    parameters: dict[str, Any] = {
        "job_name": "lottery",
        "time": options.time_minutes,
        "nodes": 1,
        "ntasks_per_node": 1,  # one submitit process; several ranks are started by torchrun inside (nproc)
        "cpus_per_task": options.cpus_per_task or (runtime.threads or 1) * nproc,
        "use_srun": True,
    }
    for name in ("partition", "mem", "account", "qos", "constraint"):
        if getattr(options, name):
            parameters[name] = getattr(options, name)
    if gpus:
        parameters["gpus_per_node"] = gpus
    executor.update_parameters(**parameters)
    return executor


def run_slurm(
    jobs: Sequence[TaskJob],
    root: Path,
    runtime: Runtime,
    retries: int,
    options: SlurmOptions,
    record: str,
    nproc: int = 1,
) -> Outcome:
    """Submit every job (dependencies as Slurm dependencies), wait until each has finished, and classify them."""
    import torch

    runtime = dataclasses.replace(runtime, threads=runtime.threads or torch.get_num_threads())
    directory = Path(record)
    folder = directory / "slurm"
    executor = _executor(folder, options, runtime, nproc)
    previous = _previous_jobs(directory)
    queue = sweep_status.slurm_queue(sorted(set(previous.values()))) or {}
    waited = [job.key for job in jobs if previous.get(job.key) in queue]
    sweep_status.start(directory, [job.key for job in jobs], "slurm", keep=waited)
    ids: dict[str, str] = {}
    root = Path(root).resolve()
    for job in jobs:
        if previous.get(job.key) in queue:  # still queued from a driver that was stopped: wait for it instead
            ids[job.key] = previous[job.key]
            continue
        deps = [ids[d] for d in job.deps if d in ids]
        extra = {**options.extra, "kill-on-invalid-dep": "yes"}
        if deps:
            extra["dependency"] = "afterok:" + ":".join(deps)
        executor.update_parameters(additional_parameters=extra)
        task = SlurmTask(job.spec, job.task, str(root), runtime, record, retries, nproc)
        try:
            submitted = executor.submit(task)
        except Exception as exc:  # noqa: BLE001  (sbatch refused: one line, the jobs so far stay queued)
            sweep_status.record_slurm_jobs(directory, ids, folder)
            message = str(exc).strip().splitlines()
            raise UserError(f"sbatch refused a job: {message[-1] if message else exc}") from None
        ids[job.key] = str(submitted.job_id)
        sweep_status.record_slurm_jobs(directory, ids, folder)
    sweep_status.record_slurm_jobs(directory, ids, folder)
    again = f", and waiting for {len(waited)} still queued from an earlier run" if waited else ""
    print(f"lottery: submitted {len(ids) - len(waited)} Slurm jobs{again} (logs in {folder})", file=sys.stderr)
    return _wait(jobs, directory, ids)


def _previous_jobs(directory: Path) -> dict[str, str]:
    data = sweep_status._read_json(directory / "sweep.json") or {}
    slurm = data.get("slurm")
    return {str(k): str(v) for k, v in slurm.items()} if isinstance(slurm, dict) else {}


def _wait(jobs: Sequence[TaskJob], directory: Path, ids: dict[str, str]) -> Outcome:
    """Until every job has left the queue; a job's error is its task's record ('failed'), or, with no record, that
    it ended without finishing (cancelled, node failure, out of memory)."""
    errors: dict[str, str] = {}
    pending = dict(ids)
    while pending:
        queue = sweep_status.slurm_queue(sorted(set(pending.values())))
        if queue is not None:
            for key, job_id in list(pending.items()):
                if job_id in queue:
                    continue
                record = sweep_status.read(directory, key) or {}
                if record.get("state") == "failed":
                    errors[key] = record.get("error", "failed")
                elif record.get("state") != "done":
                    errors[key] = f"Slurm job {job_id} ended without finishing its task"
                del pending[key]
        if pending:
            time.sleep(POLL_S)
    outcome = _classify(jobs, errors)
    return outcome
