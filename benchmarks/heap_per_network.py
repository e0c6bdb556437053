"""The C heap and resident memory of one `lottery run` process after each network (or stacked group) it trains.

Runs `lottery run` in this process with a hook on the training loop's "finished" report and prints, after each
group: glibc's heap (`mallinfo2`: the arena, its bytes in use and free), RSS and the peak RSS so far; at the end,
how much the peak rose per network after the first group. Memory that only Python's cyclic garbage collector
frees shows as in-use heap that climbs over several networks and drops at a full collection (a sawtooth), and the
heap it leaves free fragments and raises the peak (docs/performance.md, "the whole demo's memory").

    python benchmarks/heap_per_network.py                       # the demo, 200 iterations per network (~30 s)
    python benchmarks/heap_per_network.py -- examples/demo.toml --set training.training_steps=1ep
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = [str(HERE.parent / "examples" / "demo.toml"), "--set", "training.training_steps=200it"]


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def status(key: str) -> float:
    """A /proc/self/status figure in MiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    args = args or DEFAULT
    libc = ctypes.CDLL("libc.so.6")  # glibc >= 2.33 has mallinfo2
    libc.mallinfo2.restype = MallInfo2
    import lottery.cli.main as cli
    import lottery.training.overall as overall

    rows: list[tuple[int, float]] = []
    original, began = overall.finished, time.perf_counter()

    def finished(count: int = 1) -> None:
        original(count)
        done = (rows[-1][0] if rows else 0) + count
        info, peak = libc.mallinfo2(), status("VmHWM")
        rows.append((done, peak))
        print(
            f"networks {done:3d}  {time.perf_counter() - began:6.1f} s  heap {info.arena / 2**20:6.1f} MiB: in use "
            f"{info.uordblks / 2**20:6.1f}, free {info.fordblks / 2**20:6.1f}  RSS {status('VmRSS'):6.1f}  "
            f"peak {peak:6.1f} MiB",
            flush=True,
        )

    overall.finished = finished
    with tempfile.TemporaryDirectory(prefix="heap_per_network_") as tmp:
        sys.argv = ["lottery", "run", "--out", os.path.join(tmp, "runs"), "--progress", "log", *args]
        code = cli.main()
    if len(rows) > 1:
        (first, low), (last, high) = rows[0], rows[-1]
        print(
            f"peak after {first} networks {low:.1f} MiB, after {last}: {high:.1f} MiB, "
            f"{(high - low) / (last - first):.2f} MiB a network"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
