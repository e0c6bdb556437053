"""Run inside a network namespace that has only loopback (tests/test_ray_cluster.py starts it with `unshare -n`):
the shortened demo sweep once in this process (the reference), then on a Ray cluster of two nodes started here by
`ray start` (a head and a second node, each its own process group and temp dir, one CPU each, the store in one
directory). The second node is SIGKILLed while it trains a task. Writes report.json into OUT.

    python ray_two_nodes.py OUT DEMO_SPEC SET...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from cluster_helpers import descendants  # noqa: E402
from lottery.experiments.sweep import run_sweep  # noqa: E402
from lottery.training import Runtime  # noqa: E402

TIMEOUT_S = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_all(process: subprocess.Popen) -> None:
    """SIGKILL a node: its process group, and every process below it that left the group."""
    pids = descendants(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def main() -> None:
    out, spec, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    torch.set_num_threads(1)
    runtime = Runtime(progress=False, batch_copies=False, threads=1, imports=(str(HERE / "trained_log.py"),))
    os.environ["LOTTERY_TRAINED_LOG"] = str(out / "trained-local.log")
    run_sweep(spec, None, overrides, out / "local", runtime)

    os.environ["LOTTERY_TRAINED_LOG"] = str(out / "trained-cluster.log")
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join(sys.path[:1] + [os.environ.get("PYTHONPATH", "")]),
    }
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = free_port()
    # each node's own temp dir, short: Ray's socket paths must fit in 107 bytes
    temp = {name: tempfile.mkdtemp(prefix=f"lottery-ray-{name}-") for name in ("head", "second")}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats", "--block"]
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--temp-dir={temp['head']}",
            *common,
        ],
        env=env,
        start_new_session=True,
        stdout=open(out / "head.log", "w"),
        stderr=subprocess.STDOUT,
    )
    nodes = [head]
    report: dict = {}
    try:
        import ray

        deadline = time.monotonic() + 120
        while True:  # the head's GCS answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or head.poll() is not None:
                    raise RuntimeError("the Ray head did not start") from None
                time.sleep(0.5)
        second = subprocess.Popen(
            [ray_cli, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={temp['second']}", *common],
            env=env,
            start_new_session=True,
            stdout=open(out / "second.log", "w"),
            stderr=subprocess.STDOUT,
        )
        nodes.append(second)
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        while sum(1 for n in ray.nodes() if n["Alive"]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second Ray node did not join")
            time.sleep(0.5)
        report["addresses"] = sorted({n["NodeManagerAddress"] for n in ray.nodes()})

        killed: dict = {}

        def watch() -> None:  # SIGKILL the second node while it trains a task, after some tasks are finished
            log = out / "trained-cluster.log"
            while time.monotonic() < deadline + TIMEOUT_S:
                finished = log.read_text().count("\n") if log.exists() else 0
                below = descendants(second.pid)  # the second node's processes (its workers are not all in its group)
                for record in out.glob("cluster/.sweeps/*/tasks/**/*.json"):
                    try:
                        data = json.loads(record.read_text())
                    except (OSError, ValueError):
                        continue
                    if finished >= 2 and data.get("state") == "running" and data["pid"] in below:
                        killed.update(task=str(record), finished_before=finished, at=time.monotonic())
                        kill_all(second)
                        return
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        _, outcome = run_sweep(
            spec, None, overrides, out / "cluster", runtime, "ray", address=f"127.0.0.1:{port}", retries=3
        )
        watcher.join(timeout=5)
        seconds = time.monotonic() - started
        noticed = time.monotonic() + 90  # the head declares the dead node dead after its health checks fail
        while sum(1 for n in ray.nodes() if n["Alive"]) > 1 and time.monotonic() < noticed:
            time.sleep(1)
        report.update(
            done=len(outcome.done),
            failed=dict(outcome.failed),
            skipped=dict(outcome.skipped),
            killed=killed,
            seconds=seconds,
            alive_after=sum(1 for n in ray.nodes() if n["Alive"]),
        )
        ray.shutdown()
    finally:
        for node in reversed(nodes):
            if node.poll() is None:
                kill_all(node)
        for directory in temp.values():
            shutil.rmtree(directory, ignore_errors=True)
        (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
