"""Shared helpers of the benchmark scripts: machine description, data, interleaved timing, medians.

Every script measures ours and its baseline within one run, alternating between them, and reports
ratios of medians, so that load from other processes on the machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from lottery.data import BatchStream, ImageData, Splits
from lottery.spec import DatasetSpec


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line: CPU model, cores, torch version and threads, device."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (
        f"{cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads); {cuda}; Python {platform.python_version()}"
    )


def arguments(description: str, threads: int = 1, **extra: tuple[type, object, str]) -> argparse.Namespace:
    """Common options (--threads, default `threads`; --quick) plus `extra` name -> (type, default, help)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        help=f"torch intra-op threads (default {threads or 'all cores'}; 0: torch's default, all cores). One thread "
        "makes ratios robust on a shared machine: OpenMP threads under contention measure the scheduler",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not a measurement)")
    for name, (kind, default, text) in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=text)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def header(title: str, command: str | None = None) -> None:
    print(f"== {title}")
    print(f"machine: {machine()}")
    print(f"command: {command or ' '.join([os.path.basename(sys.executable), *sys.argv])}")


def fashion_mnist() -> tuple[Splits, str]:
    """Fashion-MNIST as the framework loads it (normalised, 5,000 held out), or synthetic data of the
    same shape when the IDX files are not installed (said in the returned name)."""
    from lottery import data as datasets
    from lottery.errors import UserError

    try:
        return datasets.load(DatasetSpec(name="fashion_mnist")), "fashion_mnist"
    except UserError:
        from lottery.data.synthetic import make

        raw = make((1, 28, 28), 10, train=60000, test=10000)
        return _splits(raw), "synthetic (Fashion-MNIST not installed)"


def cifar_like(n_train: int = 2048, n_test: int = 1000) -> Splits:
    """CIFAR-10-shaped synthetic data (the real set is not on this machine; speed does not depend on pixels)."""
    from lottery.data.synthetic import make

    return _splits(make((3, 32, 32), 10, train=n_train, test=n_test))


def without_eval(data: Splits) -> Splits:
    """The same training data with empty validation and test splits (so a run evaluates nothing)."""
    return replace(data, val_x=data.val_x[:0], val_y=data.val_y[:0], test_x=data.test_x[:0], test_y=data.test_y[:0])


def _splits(raw: ImageData) -> Splits:
    mean = raw.train_x.mean(dim=(0, 2, 3))
    std = raw.train_x.std(dim=(0, 2, 3))

    def norm(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean[:, None, None]) / std[:, None, None]).contiguous()

    empty = raw.train_x[:0]
    return Splits(
        norm(raw.train_x),
        raw.train_y,
        norm(empty),
        raw.train_y[:0],
        norm(raw.test_x),
        raw.test_y,
        raw.num_classes,
        -mean / std,
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (linear interpolation), q in [0, 1]."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


class Times:
    """Wall-clock and CPU seconds of repeated calls of one side."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def median(self, cpu: bool = True) -> float:
        return median(self.cpu if cpu else self.wall)


def interleave(sides: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, Times]:
    """Times of each side, alternating A B A B ... (B A on odd rounds) after `warmup` unrecorded rounds."""
    names = list(sides)
    times = {name: Times() for name in names}
    for round_ in range(warmup + repeats):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            wall, cpu = timed(sides[name])
            if round_ >= warmup:
                times[name].wall.append(wall)
                times[name].cpu.append(cpu)
    return times


class Clock:
    """Per-iteration wall and CPU times, from the moments a watched stream is asked for a batch (on a CUDA
    device after synchronizing, so that an iteration's time is its kernels' time, not their launch)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.last: tuple[float, float] | None = None
        self.cuda = torch.device(device).type == "cuda"

    def tick(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = (time.perf_counter(), time.process_time())
        if self.last is not None:
            self.wall.append(now[0] - self.last[0])
            self.cpu.append(now[1] - self.last[1])
        self.last = now

    def restart(self) -> None:
        self.last = None


@contextmanager
def watched(module: Any, clock: Clock, first_only: bool) -> Iterator[None]:
    """Replace `module.BatchStream` by a subclass that ticks `clock` at each batch request: of the first stream
    created only (first_only), or of every stream, restarting the clock when another stream asks."""
    original = module.BatchStream
    created: list[BatchStream] = []
    last: list[BatchStream] = []

    class Watched(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            created.append(self)

        def batch(self, iteration: int) -> tuple[Tensor, Tensor]:
            if first_only and self is not created[0]:
                return super().batch(iteration)
            if last and last[0] is not self:
                clock.restart()
            last[:] = [self]
            clock.tick()
            return super().batch(iteration)

    module.BatchStream = Watched
    try:
        yield
    finally:
        module.BatchStream = original


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3f} ms"
