"""The store's lock across 'hosts': two processes in different mount and PID namespaces (`unshare -m -p`) share a
directory. A live holder keeps its lock (its heartbeat goes on); a frozen holder (SIGSTOP: a node that stopped
answering but whose lock the filesystem still holds) loses it to a waiter after the lease, and stops with one
line when it wakes up instead of writing next to the new holder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lottery.errors import UserError
from lottery.store import lock

SRC = str(Path(__file__).resolve().parents[1] / "src")

HOLDER = """
import sys, time
from pathlib import Path
from lottery.store.lock import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""

WAITER = """
import sys, time
from pathlib import Path
from lottery.store.lock import exclusive
start = time.monotonic()
with exclusive(Path(sys.argv[1])):
    print(f"acquired {time.monotonic() - start:.2f}", flush=True)
"""


def _namespaced() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-m", "-p", "-f", "true"], capture_output=True, timeout=10)
    if probe.returncode:
        pytest.skip(f"cannot create mount/PID namespaces here: {probe.stderr.decode().strip()[:200]}")
    return ["unshare", "-m", "-p", "-f", "--mount-proc"]


def _start(prefix: list[str], code: str, *args: str, lease: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, lock.LEASE_VARIABLE: str(lease)}
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: SIGSTOP reaches unshare and the python under it
    )


def test_lease_takes_over_a_frozen_holder_across_namespaces(tmp_path: Path) -> None:
    prefix = _namespaced()
    lease = 1.5
    holder = _start(prefix, HOLDER, str(tmp_path), "60", lease=lease)
    waiter = None
    try:
        assert holder.stdout.readline().strip() == "held"
        # alive: its heartbeat goes on, so a waiter does not take the lock within several leases
        waiter = _start(prefix, WAITER, str(tmp_path), lease=lease)
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(timeout=3 * lease)
        # frozen: no heartbeat, the waiter takes it over after about one lease
        os.killpg(holder.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        out, err = waiter.communicate(timeout=20 * lease)
        waited = time.monotonic() - frozen
        assert waiter.returncode == 0, err
        assert out.startswith("acquired") and "taking it over" in err
        assert lease <= waited < 15 * lease
        # woken up: it finds its lock file replaced and stops without going on
        os.killpg(holder.pid, signal.SIGCONT)
        out, err = holder.communicate(timeout=20 * lease)
        assert holder.returncode == lock.LOST_LEASE_EXIT
        assert "released" not in out
        assert err.strip().splitlines()[-1].startswith("lottery: error: the lock on")
    finally:
        for process in (holder, waiter):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_lock_is_exclusive_and_released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lock.LEASE_VARIABLE, "0.4")
    with lock.exclusive(tmp_path):
        beats = (tmp_path / ".lock").read_text()
        deadline = time.monotonic() + 10
        while (tmp_path / ".lock").read_text() == beats and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / ".lock").read_text() != beats  # the heartbeat, every lease / 8
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from lottery.store.lock import exclusive\n"
                "with exclusive(Path(sys.argv[1]), wait=False): pass",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC},
            timeout=60,
        )
        assert probe.returncode == 1 and "is in use by another lottery process" in probe.stderr
    assert (tmp_path / ".lock").read_text() == ""  # released: empty again
    with lock.exclusive(tmp_path, wait=False):  # and taken again at once
        pass
    monkeypatch.setenv(lock.LEASE_VARIABLE, "soon")
    with pytest.raises(UserError, match="LOTTERY_LOCK_LEASE"):
        lock.lease_seconds()
