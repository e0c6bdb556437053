"""A real single-node Slurm cluster for the tests (Debian's slurm-wlm and munge; `scripts/setup.sh` installs them).

Everything lives in a temporary directory: munge's key and socket, slurm.conf, the controller's state, the
daemons' logs and pid files. The daemons run inside a network namespace of their own that has only loopback
(`unshare -n`, `ip link set lo up`, plus 127.0.0.2 on lo, see `start`), and slurm.conf names 127.0.0.1 for the
controller and the node, so nothing listens on or is reached through another interface. The test's Slurm
commands (sbatch, squeue, scancel, scontrol, sacct: what submitit and lottery call) reach them through wrappers
on PATH that enter that namespace (`nsenter --net`); the jobs, started by slurmd, run inside it. `stop` cancels
the jobs and stops the daemons."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sacct", "sinfo", "srun")
DAEMONS = ("slurmctld", "slurmd", "munged", "mungekey", "unshare", "nsenter", "ip")


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


class Unavailable(Exception):
    """Slurm cannot start here (the one line says why)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, directory: Path, cpus: int = 1) -> None:
        self.dir, self.cpus = directory, cpus
        self.conf = directory / "slurm.conf"
        self.bin = directory / "bin"
        self.holder: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def _ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        assert self.holder is not None
        return subprocess.run(
            ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def start(self) -> None:
        missing = [c for c in (*COMMANDS, *DAEMONS) if shutil.which(c) is None]
        if missing:
            raise Unavailable(f"missing {', '.join(missing)} (apt-get install slurm-wlm munge)")
        d = self.dir
        for sub in ("munge", "state", "spool", "bin"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # the namespace: a process that only sleeps holds it; everything else enters it
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "86400"], start_new_session=True)
        time.sleep(0.2)
        if self.holder.poll() is not None:
            raise Unavailable("cannot create a network namespace (unshare -n)")
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._ns("ip", "link", "set", "lo", "up")
        # glibc's getaddrinfo(AI_ADDRCONFIG), with which slurm picks the address family to listen with, ignores
        # 127.0.0.1 itself: a second loopback address (still on lo, still unreachable from outside) satisfies it
        self._ns("ip", "addr", "add", "127.0.0.2/32", "dev", "lo")
        key, sock = d / "munge" / "munge.key", d / "munge" / "munge.socket"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True, timeout=60)
        key.chmod(0o600)
        started = self._ns(
            "munged",
            "--force",
            f"--key-file={key}",
            f"--socket={sock}",
            f"--pid-file={d / 'munge' / 'munged.pid'}",
            f"--log-file={d / 'munge' / 'munged.log'}",
            f"--seed-file={d / 'munge' / 'munged.seed'}",
            "--origin=127.0.0.1",
            "--num-threads=1",
            check=False,
        )
        if started.returncode:
            raise Unavailable(f"munged did not start: {started.stderr.strip()[:200]}")
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=lotterytest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={sock}",
                    "CredType=cred/munge",
                    f"StateSaveLocation={d / 'state'}",
                    f"SlurmdSpoolDir={d / 'spool'}",
                    f"SlurmctldPidFile={d / 'slurmctld.pid'}",
                    f"SlurmdPidFile={d / 'slurmd.pid'}",
                    f"SlurmctldLogFile={d / 'slurmctld.log'}",
                    f"SlurmdLogFile={d / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "PlugStackConfig=/dev/null",
                    "SchedulerParameters=kill_invalid_depend",
                    "MinJobAge=300",
                    f"NodeName={host} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={self.cpus} "
                    "RealMemory=4000 State=UNKNOWN",
                    f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        for daemon, args in (("slurmctld", ["-i"]), ("slurmd", [])):
            result = self._ns(daemon, *args, check=False)
            if result.returncode:
                raise Unavailable(f"{daemon} did not start: {result.stderr.strip()[:200]}")
        for command in COMMANDS:  # the client commands, entering the daemons' namespace
            wrapper = self.bin / command
            wrapper.write_text(
                f'#!/bin/sh\nexec nsenter --net=/proc/{self.holder.pid}/ns/net {shutil.which(command)} "$@"\n'
            )
            wrapper.chmod(0o755)
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = self._ns("sinfo", "-h", "-o", "%t", check=False)
            if info.returncode == 0 and info.stdout.strip() in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise Unavailable(f"the Slurm node did not become idle: {self.log_tail()}")

    def log_tail(self) -> str:
        lines = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / name
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-3:]
        return " | ".join(lines)[-400:]

    def stop(self) -> None:
        if self.holder is None:
            return
        self._ns("scancel", "-u", "root", check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # let the jobs' processes go before the daemons do
            queue = self._ns("squeue", "-h", check=False)
            if queue.returncode or not queue.stdout.strip():
                break
            time.sleep(0.5)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.dir / pid_file
            try:
                pid = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        os.killpg(self.holder.pid, signal.SIGKILL)
        self.holder.wait(timeout=10)
        self.holder = None
