"""Many machines on one: two torchrun "nodes" (--nnodes=2, one process each, c10d rendezvous on 127.0.0.1, gloo)
train an image-folder experiment, are killed in level 1 after its checkpoint, and ONE process resumes it. Masks
must equal a single process's exactly and weights within float tolerance (Conv-2: no BatchNorm, which gloo cannot
synchronise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.test_distributed import KILL_IN_LEVEL_1, files, free_port, only_experiment

from lottery.cli.main import main
from lottery.data.jpegs import write_folder

pytestmark = pytest.mark.slow  # ~50 s on a loaded 2-core machine: four torch processes start and rendezvous
ATOL = 1e-5


def run_args(out: Path, root: Path) -> list[str]:
    args = ["run", "--out", str(out), "--progress", "log", "--device", "cpu", "--data-workers", "1"]
    args += ["--checkpoint-every", "3"]
    for setting in (
        f"dataset.root={root}",
        "dataset.name=imagefolder",
        "dataset.image_size=16",
        "dataset.validation_size=4",
        "dataset.augment=true",
        "model.name=conv2",
        "training.batch_size=6",
        "training.training_steps=6it",
        "training.eval_every=3it",
        "training.optimizer=sgd",
        "training.momentum=0.9",
        "training.lr=0.02",
        "imp.levels=1",
    ):
        args += ["--set", setting]
    return args


def two_nodes(target: list[str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """`torchrun --nnodes=2 --nproc_per_node=1 --node-rank=R --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:PORT`,
    nodes 0 and 1 started together."""
    env = {**os.environ, "LOTTERY_DIST_TIMEOUT": "120", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOTTERY_RUNS"):
        env.pop(name, None)
    env["GLOO_SOCKET_IFNAME"] = "lo"
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                f"--node-rank={r}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=imagenet-test",
                *target,
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    results = []
    for node in nodes:
        out, err = node.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    return results


def test_two_nodes_then_one_process_match_one_process(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "jpegs", classes=3, train_per_class=8, val_per_class=2)
    single_root, ddp_root = tmp_path / "single", tmp_path / "ddp"
    assert main(run_args(single_root, root)) == 0
    killer = tmp_path / "kill_in_level_1.py"
    killer.write_text(KILL_IN_LEVEL_1)
    killed = two_nodes([str(killer), *run_args(ddp_root, root)], tmp_path)
    assert all(node.returncode != 0 for node in killed), [node.stderr[-2000:] for node in killed]
    experiment = only_experiment(ddp_root)
    assert (experiment / "replicate_0/rewind_0it/level_1/checkpoint.pt").exists(), killed[0].stderr[-3000:]
    assert main(run_args(ddp_root, root)) == 0  # resumed by one process
    single = only_experiment(single_root)
    assert files(experiment) == files(single)
    tensors = sorted(name for name in files(single) if name.endswith(".safetensors"))
    assert any(name.endswith("level_1/final.safetensors") for name in tensors)
    for name in tensors:
        a, b = load_file(single / name), load_file(experiment / name)
        for key in a:
            if name.endswith("mask.safetensors") or name.endswith("start.safetensors"):
                assert torch.equal(a[key], b[key]), (name, key)
            else:
                assert torch.allclose(a[key], b[key], rtol=0, atol=ATOL), (name, key)
