"""Helpers shared by the reliability tests (test_reliability_*.py, test_bad_input.py, test_divergence.py,
test_disk_full.py): a tiny experiment on synthetic data, the `lottery` command run in-process or as a
subprocess, byte-level snapshots of a store, and ways to damage an artifact."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY  # a finished experiment in about a second
from lottery.cli.main import main
from lottery.store import layout
from lottery.store.layout import walk


def cli_args(out: Path, *overrides: str, command: str = "run", extra: tuple[str, ...] = ()) -> list[str]:
    """`lottery COMMAND` on the tiny experiment (preset lenet_300_100 plus TINY plus `overrides`)."""
    args = [command, "--preset", "lenet_300_100"]
    for override in (*TINY, *overrides):
        args += ["--set", override]
    return [*args, "--progress", "log", "--out", str(out), *extra]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `lottery ARGV` run in this process."""
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def subprocess_env(threads: int | None = 1) -> dict[str, str]:
    """One thread per process by default (fair on 2 cores, and the same arithmetic in every run); `threads`
    None: torch's default thread count (as a user runs it). Unbuffered output."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return {**env, "PYTHONUNBUFFERED": "1"}


def lottery_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "lottery", *argv]


def run_subprocess(
    argv: list[str], timeout: float = 120, threads: int | None = 1, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lottery_command(argv), capture_output=True, text=True, timeout=timeout, env=subprocess_env(threads), **kwargs
    )


# `lottery ARGV` that SIGKILLs itself right after the training run named NAME has finished (final weights and
# summary written): a crash at an exact moment, e.g. between two members of a stacked group finishing.
_KILL_AFTER_FINISH = """
import os, signal, sys
from lottery.cli.main import main
from lottery.training import loop
NAME, finish = sys.argv[1], loop.Session.finish
def finish_then_die(self):
    summary = finish(self)
    if self.run.path.name == NAME:
        os.kill(os.getpid(), signal.SIGKILL)
    return summary
loop.Session.finish = finish_then_die
sys.exit(main(sys.argv[2:]))
"""


def run_killed_after_finishing(
    name: str, argv: list[str], threads: int | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`lottery ARGV` in a subprocess killed with SIGKILL right after the run in directory `name` finishes."""
    return subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_FINISH, name, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(threads),
    )


class Started:
    """A `lottery` subprocess running in the background; threads collect its output, stderr line by line
    with the time each line arrived."""

    def __init__(self, argv: list[str], threads: int | None = 1) -> None:
        self.proc = subprocess.Popen(
            lottery_command(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(threads),
        )
        self.lines: list[tuple[float, str]] = []
        self.out = ""
        self.first_line = threading.Event()
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._read_err, self._read_out)]
        for thread in self._threads:
            thread.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append((time.monotonic(), line))
                self._changed.notify_all()
            self.first_line.set()
        self.first_line.set()  # ended without a line
        with self._changed:
            self._changed.notify_all()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.read()

    def wait_for(self, text: str, timeout: float = 120) -> float:
        """The time the first stderr line containing `text` arrived (waiting for it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for when, line in self.lines:
                    if text in line:
                        return when
                if not self._threads[0].is_alive() or time.monotonic() > deadline:
                    raise AssertionError(f"no line with {text!r} in {self.stderr(join=False)!r}")
                self._changed.wait(timeout=1)

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=30)
        return code

    def stderr(self, join: bool = True) -> str:
        if join:
            self._threads[0].join(timeout=30)
        return "".join(line for _, line in self.lines)


def experiment_dir(out: Path) -> Path:
    """The one experiment directory under store `out`."""
    dirs = [p for p in out.iterdir() if p.is_dir() and p.name != layout.NETWORKS]
    assert len(dirs) == 1, dirs
    return dirs[0]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes): a byte-for-byte picture of a store."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(walk(root, "*")) if p.is_file()}


def files(root: Path, suffix: str) -> dict[str, bytes]:
    return {name: data for name, data in tree(root).items() if name.endswith(suffix)}


def temp_files(root: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (`.<name>.<random>.tmp`)."""
    return sorted(p for p in walk(root, ".*.tmp") if p.is_file())


def manifest_entries(root: Path) -> set[str]:
    """Every artifact recorded in a manifest under `root`, as a path relative to `root`."""
    entries = set()
    for manifest in walk(root, "manifest.json"):
        for name in json.loads(manifest.read_text()):
            entries.add(str((manifest.parent / name).relative_to(root)))
    return entries


def _strip(value: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_strip(v, keys) for v in value]
    return value


TIMES = ("train_seconds", "wall_time", "elapsed")


def results(experiment: Path) -> dict[str, Any]:
    """results.json without the timings (which legitimately differ between runs)."""
    return _strip(json.loads((experiment / "results.json").read_text()), TIMES)


def outcomes(root: Path) -> dict[str, Any]:
    """Everything a run computes, timings left out: weights and masks (bytes), metrics, summaries,
    sparsity reports, specs and results. Two stores with equal outcomes are bit-identical results."""
    out: dict[str, Any] = {}
    for name, data in tree(root).items():
        base = Path(name).name
        if base.startswith(".") or base == "manifest.json" or base == "checkpoint.pt":
            continue  # locks, temporary files, bookkeeping; checkpoints are deleted once a run ends
        if base.endswith(".jsonl"):
            out[name] = [_strip(json.loads(line), TIMES) for line in data.decode().splitlines()]
        elif base.endswith(".json"):
            out[name] = _strip(json.loads(data), TIMES)
        elif base.endswith(".csv"):
            out[name] = _strip(list(csv.DictReader(io.StringIO(data.decode()))), TIMES)
        else:
            out[name] = data
    return out


def assert_same_outcomes(actual: Path, expected: Path, extra: str | None = None) -> None:
    """`extra`: files whose path contains it may exist in `actual` only (e.g. a prefix run that recomputed W_k)."""
    got, want = outcomes(actual), outcomes(expected)
    if extra is not None:
        got = {name: value for name, value in got.items() if extra not in name}
        for name, value in got.items():  # an experiment's view lists the extra run's link too
            if name.endswith("runs.json"):
                value["runs"] = {view: network for view, network in value["runs"].items() if extra not in view}
    assert sorted(got) == sorted(want)
    different = [name for name in want if got[name] != want[name]]
    assert not different, f"differ from the uninterrupted run: {different}"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bit(path: Path, offset: int | None = None) -> None:
    """Flip one bit, by default in the middle of the file (in the tensor data of a safetensors file)."""
    data = bytearray(path.read_bytes())
    position = len(data) // 2 if offset is None else offset
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def trained(err: str) -> bool:
    """Whether a command's stderr shows any training progress (a 'lottery: LABEL iteration t/T: ...' line)."""
    return re.search(r"^lottery: .* iteration \d+/\d+:", err, flags=re.MULTILINE) is not None


def one_error_line(err: str) -> str:
    """The single stderr line of a refused command (asserting there is exactly one and no traceback)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("lottery: error: "), lines[0]
    return lines[0]
