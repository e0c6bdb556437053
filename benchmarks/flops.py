"""Achieved FLOP/s of training LeNet-300-100 and ResNet-20 with `lottery.training.train`, against the machine's peak.

FLOPs of one training step: `torch.utils.flop_counter.FlopCounterMode` over forward + backward of one batch
(matmuls and convolutions, 2 FLOPs per multiply-add; elementwise ops, the optimizer and the mask are not
counted, as is usual). Note that masked (pruned) weights are still multiplied: dense kernels do the work of the
dense network, so these are dense FLOPs. Step time: the median iteration of the real training loop (time between
consecutive batch requests), on a network pruned to density 0.2.

Peak, two ways: measured -- the median FLOP/s of a large fp32 matmul (torch.mm, 2048^3) with the same number of
threads, the best the BLAS gets from this machine; nominal -- threads x 2 AVX-512 FMA units x 16 fp32 lanes x
2 FLOPs x the clock (lscpu's BogoMIPS / 2 where no MHz is reported, 2.6 GHz here; turbo clocks are higher,
so this is an estimate).

Threads: torch's default (all cores: the machine's peak); --threads 1 for one core.

    python benchmarks/flops.py
    python benchmarks/flops.py --threads 1
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import _common
import lottery.training.loop as loop
from lottery.data import Splits
from lottery.models import Network
from lottery.models.lenet import LeNet
from lottery.models.resnet import ResNet
from lottery.pruning import Mask
from lottery.spec import TrainingSpec
from lottery.store import RunDir
from lottery.training import Job, Runtime, Schedule


def clock_ghz() -> float:
    """The nominal clock from lscpu: 'CPU max MHz' if reported, else BogoMIPS / 2 (x86: BogoMIPS = 2 x MHz)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return float("nan")
    for key, scale in (("CPU max MHz", 1e-3), ("BogoMIPS", 0.5e-3)):
        match = re.search(rf"^{key}:\s*([\d.]+)", out, re.M)
        if match:
            return float(match.group(1)) * scale
    return float("nan")


def matmul_peak(n: int = 2048, repeats: int = 9) -> float:
    """Median FLOP/s of an n x n x n fp32 matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * n**3 / _common.median(seconds)


def step_flops(model: Network, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of forward + backward of one batch (what a training step computes apart from elementwise work)."""
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(
    name: str, build: Callable[[], Network], training: TrainingSpec, data: Splits, iterations: int, warmup: int
) -> tuple[float, float]:
    """(achieved FLOP/s by wall clock p25, by CPU-time median) of `iterations` steps of the training loop."""
    model = build()
    flops = step_flops(model, data.train_x[: training.batch_size], data.train_y[: training.batch_size])
    g = torch.Generator().manual_seed(0)
    mask = Mask({n: torch.rand(m.shape, generator=g) < 0.2 for n, m in Mask.ones(model).items()})
    clock = _common.Clock()
    job = Job(
        training=training,
        schedule=Schedule(len(data.train_x) // training.batch_size, iterations, 0, [], 10**9),
        mask=mask,
    )
    with _common.watched(loop, clock, first_only=False), tempfile.TemporaryDirectory() as tmp:
        loop.train(RunDir(tmp), model, _common.without_eval(data), job, Runtime(progress=False, label=name))
    wall = _common.quantile(clock.wall[warmup:], 0.25)
    cpu = _common.median(clock.cpu[warmup:])
    print(
        f"{name}: {flops / 1e6:.1f} MFLOP per step (forward + backward); step {_common.ms(cpu)} CPU median, "
        f"{_common.ms(wall)} wall p25 -> {flops / cpu / 1e9:.1f} GFLOP/s (CPU time), {flops / wall / 1e9:.1f} "
        f"GFLOP/s (wall)"
    )
    return flops / wall, flops / cpu


def main() -> None:
    args = _common.arguments(__doc__.splitlines()[0], threads=0)
    _common.header("achieved FLOP/s of training vs peak")
    threads = torch.get_num_threads()
    ghz = clock_ghz()
    nominal = threads * 2 * 16 * 2 * ghz * 1e9
    measured = matmul_peak(repeats=3 if args.quick else 9)
    print(
        f"peak: measured fp32 matmul (2048^3) {measured / 1e9:.1f} GFLOP/s; nominal {nominal / 1e9:.1f} GFLOP/s "
        f"({threads} thread(s) x 64 FLOP/cycle (2 AVX-512 FMA units) x {ghz:.2f} GHz)"
    )
    data, source = _common.fashion_mnist()
    results = {}

    def lenet() -> Network:
        model = LeNet((1, 28, 28), 10)
        model.initialize("glorot_normal", torch.Generator().manual_seed(0))
        return model

    results["lenet_300_100 (batch 60, Adam)"] = measure(
        f"lenet_300_100 (batch 60, Adam; {source})",
        lenet,
        TrainingSpec(optimizer="adam", lr=1.2e-3, batch_size=60),
        data,
        iterations=100 if args.quick else 600,
        warmup=20 if args.quick else 100,
    )

    def resnet() -> Network:
        model = ResNet((3, 32, 32), 10, 20)
        model.initialize("kaiming_normal", torch.Generator().manual_seed(0))
        return model

    results["resnet20 (batch 128, SGD)"] = measure(
        "resnet20 (batch 128, SGD momentum; CIFAR-10-shaped synthetic)",
        resnet,
        TrainingSpec(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128),
        _common.cifar_like(n_train=2048),
        iterations=4 if args.quick else 12,
        warmup=1 if args.quick else 2,
    )
    # one thread: CPU time (immune to preemption); several: wall-clock (CPU time adds the threads up)
    basis = "CPU time" if threads == 1 else "wall-clock p25"
    for name, (wall, cpu) in results.items():
        achieved = cpu if threads == 1 else wall
        print(
            f"{name}: {achieved / 1e9:.1f} GFLOP/s = {achieved / measured:.0%} of measured matmul peak, "
            f"{achieved / nominal:.0%} of nominal peak ({basis})"
        )


if __name__ == "__main__":
    main()
