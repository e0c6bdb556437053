"""A task trained by several processes: one data-parallel job (DistributedDataParallel, `training/distributed.py`)
of `nproc` ranks on this node, started with torchrun, for any executor (`--nproc-per-task N`): the local one, a
Ray task (holding the GPUs of all its ranks) or a Slurm job. On CUDA each rank trains on its own GPU (nccl); on
the CPU the same path runs with gloo over loopback, which is how it is tested here.

The ranks find their task again from the store (the experiment's spec.json, written by the sweep before any task
runs, and the task's name in the plan), so nothing is pickled to reach them. Every rank starts from the same
weights and mask, checked (`distributed.check_equal`, `distributed.check_weights`): a rank that disagrees stops
the job with one line, which this module raises as the task's error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import torch

from lottery.errors import UserError
from lottery.training import Runtime

WORKER = "lottery.experiments.task_worker"


def encode_runtime(runtime: Runtime) -> str:
    """The runtime as JSON, for the ranks' command line (what they need to compute as this process would)."""
    return json.dumps(
        {
            "device": runtime.device.type,
            "checkpoint_every": runtime.checkpoint_every,
            "checkpoint_seconds": runtime.checkpoint_seconds,
            "threads": runtime.threads or torch.get_num_threads(),
            "compile": runtime.compile,
            "batch_copies": runtime.batch_copies,
            "channels_last": runtime.channels_last,
            "data_workers": runtime.data_workers,
            "log": list(runtime.log),
            "imports": list(runtime.imports),
        }
    )


def decode_runtime(text: str) -> Runtime:
    data: dict[str, Any] = json.loads(text)
    return Runtime(
        device=torch.device(data["device"]),
        checkpoint_every=data["checkpoint_every"],
        checkpoint_seconds=data["checkpoint_seconds"],
        progress=False,
        threads=data["threads"],
        compile=data["compile"],
        batch_copies=data["batch_copies"],
        channels_last=data["channels_last"],
        data_workers=data["data_workers"],
        log=tuple(data["log"]),
        imports=tuple(data["imports"]),
    )


def command(root: str, experiment: str, task: str, runtime: Runtime, nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        WORKER,
        "--root",
        root,
        "--experiment",
        experiment,
        "--task",
        task,
        "--runtime",
        encode_runtime(runtime),
    ]


def launch(root: str, experiment: str, task: str, runtime: Runtime, nproc: int) -> None:
    """Train the task with `nproc` processes; raise RuntimeError with the ranks' own error line if it fails."""
    if nproc < 1:
        raise UserError(f"--nproc-per-task must be >= 1, got {nproc}")
    env = dict(os.environ)
    if runtime.device.type == "cpu":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the ranks of one task are on one node: talk over loopback
    env.setdefault("OMP_NUM_THREADS", str(runtime.threads or torch.get_num_threads()))
    process = subprocess.Popen(
        command(root, experiment, task, runtime, nproc),
        stdout=sys.stderr,  # the ranks' output is log output here
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    error, held = "", []
    assert process.stderr is not None
    for line in process.stderr:
        if "lottery: error:" in line and not error:
            error = line.split("lottery: error:", 1)[1].strip()
        if error and not line.startswith("lottery:"):
            held.append(line)  # after a rank's error: torchrun's own report (a traceback), shown only if needed
        else:
            sys.stderr.write(line)
    code = process.wait()
    if code and error:
        raise RuntimeError(error)  # the ranks said what went wrong in one line; torchrun's report adds nothing
    sys.stderr.writelines(held)
    if code:
        raise RuntimeError(f"the {nproc}-process job of {task} exited with code {code}")
