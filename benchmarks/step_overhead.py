"""Framework tax: one training step of a masked network in `lottery.training.train` vs a plain PyTorch loop.

Ours is the real training loop (`lottery.training.loop.train`: learning-rate schedule, BatchStream gather,
mask enforcement, loss bookkeeping, snapshot / evaluation / checkpoint checks) on a network pruned to a
given density. The baseline is the loop one writes by hand: permuted index, `X[idx]`, forward, cross-entropy,
`zero_grad`, `backward`, `step` -- same model, batch, optimizer and in-memory data, no mask.

The two are interleaved step by step: the BatchStream of the real loop is replaced by a subclass that, each
time the loop asks for a batch, first runs (and times) one step of the plain loop. Our time per iteration is
the time between two batch requests minus the plain step, so it covers everything the loop does, the probe's
own clock reads included. Reported per side, over all measured iterations after a warmup: the median of the
process CPU time (the verdict: immune to preemption by other processes on a shared machine) and the 25th
percentile and median of wall-clock time (under load, wall-clock times are bimodal -- steps that were preempted
take several scheduler slices longer -- and the median can land on either mode).

    python benchmarks/step_overhead.py            # LeNet-300-100 (batch 60, Adam) and ResNet-20 (batch 128, SGD)
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

import _common
import lottery.training.loop as loop
from lottery.data import BatchStream, Splits
from lottery.models import Network
from lottery.models.lenet import LeNet
from lottery.models.resnet import ResNet
from lottery.pruning import Mask
from lottery.spec import TrainingSpec
from lottery.store import RunDir
from lottery.training import Job, Runtime, Schedule
from lottery.training.optimizer import make_optimizer

TARGET = 1.05


class PlainLoop:
    """The hand-written loop: one call = one step on the next batch of a per-epoch permutation."""

    def __init__(self, model: Network, x: Tensor, y: Tensor, batch_size: int, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.x, self.y, self.batch_size, self.optimizer = model, x, y, batch_size, optimizer
        self.per_epoch = len(x) // batch_size
        self.i = 0
        self.order = torch.randperm(len(x))
        model.train()

    def step(self) -> None:
        if self.i == self.per_epoch:
            self.order, self.i = torch.randperm(len(self.x)), 0
        idx = self.order[self.i * self.batch_size : (self.i + 1) * self.batch_size]
        self.i += 1
        x, y = self.x[idx], self.y[idx]
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


@dataclass
class Probe:
    """Per-iteration times of both sides; `stream()` is the BatchStream subclass that records them."""

    plain: PlainLoop
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    ours_cpu: list[float] = field(default_factory=list)
    theirs_cpu: list[float] = field(default_factory=list)
    last: tuple[float, float] | None = None

    def tick(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.plain.step()
        self.theirs.append(time.perf_counter() - wall)
        self.theirs_cpu.append(time.process_time() - cpu)
        if self.last is not None:
            self.ours.append(wall - self.last[0])
            self.ours_cpu.append(cpu - self.last[1])
        self.last = (time.perf_counter(), time.process_time())

    def stream(self) -> type[BatchStream]:
        probe = self

        class ProbedStream(BatchStream):
            def batch(self, iteration: int) -> tuple[Tensor, Tensor]:
                probe.tick()
                return super().batch(iteration)

        return ProbedStream


def mask_for(model: Network, density: float, output_density: float, seed: int = 0) -> Mask:
    """A random mask of the given density per layer (speed does not depend on which weights are kept)."""
    g = torch.Generator().manual_seed(seed)
    kinds = model.layer_kinds()
    return Mask(
        {
            name: torch.rand(m.shape, generator=g) < (output_density if kinds[name] == "output" else density)
            for name, m in Mask.ones(model).items()
        }
    )


def measure(
    name: str,
    build: Callable[[], Network],
    training: TrainingSpec,
    data: Splits,
    density: float,
    output_density: float,
    iterations: int,
    warmup: int,
) -> float:
    """Train `iterations` steps with both loops interleaved; print and return masked/plain (wall medians)."""
    model = build()
    plain_model = copy.deepcopy(model)
    plain = PlainLoop(
        plain_model, data.train_x, data.train_y, training.batch_size, make_optimizer(plain_model.parameters(), training)
    )
    probe = Probe(plain)
    mask = mask_for(model, density, output_density)
    schedule = Schedule(len(data.train_x) // training.batch_size, iterations, 0, [], iterations)
    job = Job(training=training, schedule=schedule, mask=mask)
    original = loop.BatchStream
    loop.BatchStream = probe.stream()  # type: ignore[misc]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loop.train(RunDir(tmp), model, _common.without_eval(data), job, Runtime(progress=False))
    finally:
        loop.BatchStream = original  # type: ignore[misc]
    n = len(probe.ours)
    ours, theirs = probe.ours[warmup:], probe.theirs[warmup + 1 : n + 1]
    ours_cpu, theirs_cpu = probe.ours_cpu[warmup:], probe.theirs_cpu[warmup + 1 : n + 1]
    q, ms = _common.quantile, _common.ms
    ratio = q(ours_cpu, 0.5) / q(theirs_cpu, 0.5)
    print(
        f"{name}: {len(ours)} interleaved steps after {warmup} warmup, mask density {mask.density:.3f}\n"
        f"  CPU time median   ours {ms(q(ours_cpu, 0.5))}  plain {ms(q(theirs_cpu, 0.5))}  ratio {ratio:.3f}\n"
        f"  wall p25          ours {ms(q(ours, 0.25))}  plain {ms(q(theirs, 0.25))}  "
        f"ratio {q(ours, 0.25) / q(theirs, 0.25):.3f}\n"
        f"  wall median       ours {ms(q(ours, 0.5))}  plain {ms(q(theirs, 0.5))}  "
        f"ratio {q(ours, 0.5) / q(theirs, 0.5):.3f}"
    )
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"{name}: masked/plain step = {ratio:.3f} (CPU-time medians; target <= {TARGET}: {verdict})")
    return ratio


def _init(model: Network, init: str) -> Network:
    model.initialize(init, torch.Generator().manual_seed(0))
    return model


def main() -> None:
    args = _common.arguments(__doc__.splitlines()[0], networks=(str, "lenet,resnet20", "comma-separated"))
    _common.header("masked training step vs plain PyTorch loop")
    if "lenet" in args.networks:
        data, source = _common.fashion_mnist()
        print(f"data: {source}, {len(data.train_x)} training examples")
        measure(
            "lenet_300_100 (batch 60, Adam)",
            lambda: _init(LeNet((1, 28, 28), 10), "glorot_normal"),
            TrainingSpec(optimizer="adam", lr=1.2e-3, batch_size=60, eval_every="1000000it"),
            data,
            density=0.2,
            output_density=0.5,
            iterations=300 if args.quick else 3000,
            warmup=50 if args.quick else 300,
        )
    if "resnet20" in args.networks:
        data = _common.cifar_like(n_train=4096)
        print("data: CIFAR-10-shaped synthetic, 4096 training examples (no augmentation on either side)")
        measure(
            "resnet20 (batch 128, SGD momentum 0.9, wd 1e-4)",
            lambda: _init(ResNet((3, 32, 32), 10, 20), "kaiming_normal"),
            TrainingSpec(
                optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, eval_every="1000000it"
            ),
            data,
            density=0.2,
            output_density=1.0,
            iterations=12 if args.quick else 60,
            warmup=3 if args.quick else 8,
        )


if __name__ == "__main__":
    main()
