"""What each task of a sweep is doing, readable from any host that sees the store: `lottery sweep SPEC --status`.

    <store>/.sweeps/<sweep id>/sweep.json                     the sweep: its tasks, executor, Slurm job ids
    <store>/.sweeps/<sweep id>/tasks/<spec hash>/<task>.json  one task's last state, written by its worker

A worker writes `running` when it starts a task, then `done` or `failed` (with the error), `interrupted` when it
was stopped (a preempted Slurm job, Ctrl-C): each record replaces the last atomically. The sweep id is a hash
of the grid's experiment hashes, so the same spec file and --set options find the same record. Under Slurm the
queue (`squeue`) says what is pending, and a job that left the queue without a record ended without finishing
(cancelled, node failure, out of memory). The records only report: the store itself says what is finished
(every task is idempotent)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lottery.errors import UserError
from lottery.store.atomic import write_bytes

SWEEPS = ".sweeps"  # hidden: records, not artifacts (verify and the store's readers skip dot directories)
STATES = ("pending", "running", "done", "failed")


def sweep_dir(root: Path, spec_hashes: Sequence[str]) -> Path:
    digest = hashlib.sha256("\n".join(sorted(set(spec_hashes))).encode()).hexdigest()[:16]
    return Path(root) / SWEEPS / digest


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _task_path(directory: Path, key: str) -> Path:
    spec_hash, _, name = key.partition(":")
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    return directory / "tasks" / spec_hash / Path(*parts[:-1]) / f"{parts[-1]}.json"


def start(directory: Path, keys: Sequence[str], executor: str, keep: Sequence[str] = ()) -> None:
    """A new run of the sweep: forget the previous run's task records (but those of `keep`, tasks whose Slurm
    jobs of the previous run are still queued and are waited for again), list the tasks."""
    if not keep:
        shutil.rmtree(directory / "tasks", ignore_errors=True)
    for key in set(keys) - set(keep):
        _task_path(directory, key).unlink(missing_ok=True)
    _write_json(
        directory / "sweep.json",
        {"executor": executor, "tasks": list(keys), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "slurm": {}},
    )


def record_slurm_jobs(directory: Path, job_ids: dict[str, str], folder: Path) -> None:
    """The Slurm job id of every task (and where submitit keeps their logs), for --status and resubmission."""
    data = _read_json(directory / "sweep.json") or {}
    data["slurm"] = dict(job_ids)
    data["slurm_folder"] = str(folder)
    _write_json(directory / "sweep.json", data)


def mark(directory: Path, key: str, state: str, error: str = "") -> None:
    """Record what this worker is doing with task `key`. Never fails the task: a record is a report."""
    record = {"state": state, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    slurm_job = os.environ.get("SLURM_JOB_ID")
    if slurm_job:
        record["slurm_job"] = slurm_job
    if error:
        record["error"] = error
    try:
        _write_json(_task_path(directory, key), record)
    except (UserError, OSError):
        pass


def read(directory: Path, key: str) -> dict[str, Any] | None:
    return _read_json(_task_path(directory, key))


def slurm_queue(job_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, reason)} of those still in Slurm's queue; None when squeue cannot answer."""
    if not job_ids:
        return {}
    try:
        done = subprocess.run(
            ["squeue", "-h", "-o", "%i|%T|%r", "--jobs", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode and "Invalid job id" not in done.stderr:
        return None
    queue = {}
    for line in done.stdout.splitlines():
        job, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job:
            queue[job] = (state, reason)
    return queue


@dataclass
class TaskStatus:
    key: str
    state: str  # one of STATES
    detail: str = ""


def task_states(directory: Path, keys: Sequence[str] | None = None) -> list[TaskStatus]:
    """Every task of the sweep recorded at `directory` with its state, from the records and Slurm's queue."""
    sweep = _read_json(directory / "sweep.json")
    if sweep is None:
        raise UserError(f"no sweep record at {directory} (the sweep has not been started with this store)")
    keys = list(keys if keys is not None else sweep.get("tasks", []))
    slurm: dict[str, str] = sweep.get("slurm") or {}
    queue = slurm_queue(sorted(set(slurm.values()))) if slurm else {}
    out = []
    for key in keys:
        record = read(directory, key) or {}
        state, job = record.get("state"), slurm.get(key)
        where = f"{record.get('host')} pid {record.get('pid')}" if record else ""
        in_queue = queue.get(job) if queue and job else None
        if state == "done":
            out.append(TaskStatus(key, "done", where))
        elif state == "failed":
            out.append(TaskStatus(key, "failed", record.get("error", "")))
        elif in_queue is not None and in_queue[0] in ("RUNNING", "COMPLETING"):
            out.append(TaskStatus(key, "running", f"Slurm job {job} {where}".strip()))
        elif in_queue is not None:
            out.append(TaskStatus(key, "pending", f"Slurm job {job} {in_queue[0]} ({in_queue[1]})"))
        elif job and queue is not None:
            out.append(TaskStatus(key, "failed", f"Slurm job {job} left the queue without finishing"))
        elif state == "running":
            out.append(TaskStatus(key, "running", where))
        else:
            detail = "interrupted; resumes when run again" if state == "interrupted" else ""
            out.append(TaskStatus(key, "pending", detail))
    return out


def summary(states: Sequence[TaskStatus]) -> str:
    counts = {s: sum(1 for t in states if t.state == s) for s in STATES}
    return ", ".join(f"{counts[s]} {s}" for s in STATES)
