"""A Ray cluster of two nodes on this machine, inside a network namespace that has only loopback (`unshare -n`,
`ip link set lo up`; Ray's token authentication off inside it, `RAY_AUTH_MODE=disabled`): a head and a second node,
separate `ray start` processes with their own process groups and temp dirs, one CPU each, one store. The shortened
demo sweep with 2 replicates runs on it while the second node is SIGKILLed in the middle of a task
(tests/cluster_scripts/ray_two_nodes.py). The weights and results equal those of the sweep in one process,
`verify` is clean, and no network was trained twice (a plugin logs every final weights write)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lottery.store.layout import walk

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "cluster_scripts" / "ray_two_nodes.py"
DEMO = ROOT / "examples" / "demo.toml"
SHORT = ["imp.levels=2", "training.training_steps=60it", "training.eval_every=30it", "imp.rewind=10it"]


def weights(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in walk(root, "*.safetensors")}


def results(root: Path) -> list[str]:
    out = []
    for path in sorted(root.glob("*/results.csv")):
        lines = path.read_text().splitlines()
        column = lines[0].split(",").index("train_seconds")
        out += [",".join(v for i, v in enumerate(line.split(",")) if i != column) for line in lines]
    return out


@pytest.mark.slow
def test_two_node_ray_cluster_survives_losing_a_node(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a loopback-only network namespace")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()[:200]}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = " ".join(["ip link set lo up && exec", sys.executable, str(SCRIPT), str(tmp_path), str(DEMO), *SHORT])
    done = subprocess.run(["unshare", "-n", "sh", "-c", command], capture_output=True, text=True, env=env, timeout=560)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["addresses"] == ["127.0.0.1"]
    assert report["killed"], "the second node was never seen training a task"
    assert report["alive_after"] == 1  # the second node is gone; the head finished the sweep
    assert not report["failed"] and not report["skipped"] and report["done"] == 14  # 2 dense, 4 levels, 8 controls
    # identical to the sweep in one process
    assert weights(tmp_path / "local") == weights(tmp_path / "cluster") != {}
    assert results(tmp_path / "local") == results(tmp_path / "cluster") != []
    # nothing trained twice: every network's final weights were written once, by whichever node finished it
    trained = Counter((tmp_path / "trained-cluster.log").read_text().splitlines())
    networks = {os.path.realpath(p.parent) for p in walk(tmp_path / "cluster", "final.safetensors")}
    assert set(trained) == networks and max(trained.values()) == 1
    verify = subprocess.run(
        [sys.executable, "-m", "lottery", "verify", str(tmp_path / "cluster")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
