"""K copies trained together (`lottery.training.train_together`) vs the same K copies trained one after another.

Each copy has its own start weights, mask (density 0.2) and data order, as in a stability analysis or a
replicate set. Baseline: K runs of the real training loop (`lottery.training.train`), one after another.
Together: `train_together` with batching forced on (one `Stacked` model: parameters stacked, `torch.func.vmap` +
`functional_call` -- batched matmuls, grouped convolutions -- one backward, one fused optimizer step over the
stacked tensors). Fixed per-run costs (writing artifacts, evaluation) are excluded on both sides: an iteration's
time is measured between consecutive batch requests of one copy (together: of its first copy, one request per
copy and iteration) and reported as the median over iterations; for the one-copy-at-a-time side the time for K
copies is K times the median. Printed: separate / together (> 1: together is faster), and what `should_batch`
decides (the rule `lottery run` follows with --batch-copies auto).

    python benchmarks/batched_copies.py                 # K = 8 LeNet-300-100 (Adam, 60), ResNet-20 (SGD, 128), Conv-2
    python benchmarks/batched_copies.py --device cuda   # the same on a GPU (times synchronized per iteration)
    python benchmarks/batched_copies.py --compile 1     # also K separate runs with --compile (torch.compile)
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import _common
import lottery.training.loop as loop
from lottery.data import Splits
from lottery.data.augment import cifar_augment
from lottery.data.batches import Augment
from lottery.models import Network
from lottery.models.conv import ConvNet
from lottery.models.lenet import LeNet
from lottery.models.resnet import ResNet
from lottery.pruning import Mask
from lottery.spec import TrainingSpec
from lottery.store import RunDir
from lottery.training import Job, Runtime, Schedule, should_batch, train_together


def copies(build: Callable[[int], Network], k: int, density: float) -> tuple[list[Network], list[Mask]]:
    models, masks = [], []
    for i in range(k):
        model = build(i)
        g = torch.Generator().manual_seed(100 + i)
        kinds = model.layer_kinds()
        masks.append(
            Mask(
                {
                    n: torch.rand(m.shape, generator=g) < (1.0 if kinds[n] == "output" else density)
                    for n, m in Mask.ones(model).items()
                }
            )
        )
        models.append(model)
    return models, masks


def measure(
    name: str,
    build: Callable[[int], Network],
    training: TrainingSpec,
    data: Splits,
    augment: Augment | None,
    k: int,
    iterations: int,
    rounds: int,
    device: torch.device,
    compiled: bool = False,
) -> dict[str, float]:
    models, masks = copies(build, k, 0.2)
    models = [m.to(device) for m in models]
    data = data.to(device)
    if augment is not None:
        augment = cifar_augment(data.pad_value)
    trainings = [dataclasses.replace(training, data_order_seed=i, augmentation_seed=i) for i in range(k)]
    schedule = Schedule(len(data.train_x) // training.batch_size, iterations, 0, [], iterations)
    no_eval = _common.without_eval(data)
    clocks = {side: _common.Clock(device) for side in ("separate", "together", "compiled")}
    first: list[float] = []  # wall time of each compiled run's first iteration (compilation included)

    def separate(side: str = "separate") -> None:
        clock = clocks[side]
        with _common.watched(loop, clock, first_only=False):
            for model, mask, t in zip(models, masks, trainings):
                clock.restart()
                seen = len(clock.wall)
                with tempfile.TemporaryDirectory() as tmp:
                    job = Job(training=t, schedule=schedule, mask=mask, augment=augment)
                    runtime = Runtime(device=device, progress=False, compile=side == "compiled")
                    loop.train(RunDir(tmp), model, no_eval, job, runtime)
                if side == "compiled" and len(clock.wall) > seen:
                    first.append(clock.wall[seen])
                    del clock.wall[seen], clock.cpu[seen]  # steady state only; the compile cost is reported apart

    def together() -> None:
        clock = clocks["together"]
        clock.restart()
        with _common.watched(loop, clock, first_only=True), tempfile.TemporaryDirectory() as tmp:
            runs = [RunDir(Path(tmp) / f"copy{i}") for i in range(k)]
            jobs = [Job(training=t, schedule=schedule, mask=m, augment=augment) for t, m in zip(trainings, masks)]
            runtime = Runtime(device=device, progress=False, batch_copies=True)
            train_together(runs, models, no_eval, jobs, runtime)

    sides = {"separate": separate, "together": together}
    if compiled:
        sides["compiled"] = lambda: separate("compiled")
    _common.interleave(sides, rounds, warmup=0)

    def per_iteration(side: str) -> tuple[float, float]:
        factor = 1 if side == "together" else k  # the one-copy-at-a-time side: K x one copy's iteration
        return factor * _common.median(clocks[side].cpu), factor * _common.quantile(clocks[side].wall, 0.25)

    base_cpu, base_wall = per_iteration("separate")
    cpu, wall = per_iteration("together")
    print(f"{name}, K = {k}: one iteration of all K copies (CPU-time median, wall-clock 25th percentile)")
    print(f"  K separate runs (train)   CPU {_common.ms(base_cpu)}  wall p25 {_common.ms(base_wall)}")
    print(
        f"  together (train_together) CPU {_common.ms(cpu)}  wall p25 {_common.ms(wall)}  "
        f"-> separate / together = {base_cpu / cpu:.2f} (CPU), {base_wall / wall:.2f} (wall)"
    )
    if compiled:
        c_cpu, c_wall = per_iteration("compiled")
        print(
            f"  K separate runs, --compile  CPU {_common.ms(c_cpu)}  wall p25 {_common.ms(c_wall)}  -> separate / "
            f"compiled = {base_cpu / c_cpu:.2f} (CPU), {base_wall / c_wall:.2f} (wall); first iteration of a "
            f"compiled run (compilation) median {_common.median(first):.2f} s, max {max(first):.2f} s"
        )
    auto = should_batch(models[0], Runtime(device=device), k)
    chosen = base_cpu / cpu if auto else 1.0
    print(f"  on {device.type}: should_batch(K={k}) = {auto} -> stability copies run at {chosen:.2f}x separate runs")
    return {"together": base_cpu / cpu}


def main() -> None:
    args = _common.arguments(
        __doc__.splitlines()[0],
        k=(int, 8, "copies"),
        networks=(str, "lenet,resnet20,conv2", "comma-separated"),
        device=(str, "cpu", "training device (cuda: the GPU measurement)"),
        compile=(int, 0, "1: also K separate runs with --compile (torch.compile; its first iteration apart)"),
    )
    device = torch.device(args.device)
    _common.header("K batched copies vs K sequential runs")
    if "lenet" in args.networks:
        data, source = _common.fashion_mnist()
        print(f"data: {source}")

        def lenet(seed: int) -> Network:
            model = LeNet((1, 28, 28), 10)
            model.initialize("glorot_normal", torch.Generator().manual_seed(seed))
            return model

        measure(
            "lenet_300_100 (batch 60, Adam)",
            lenet,
            TrainingSpec(optimizer="adam", lr=1.2e-3, batch_size=60, eval_every="1000000it"),
            data,
            None,
            args.k,
            iterations=40 if args.quick else 150,
            rounds=1 if args.quick else 3,
            device=device,
            compiled=bool(args.compile),
        )
    if "resnet20" in args.networks:
        data = _common.cifar_like(n_train=2048)
        print("data: CIFAR-10-shaped synthetic, with crop-and-flip augmentation")

        def resnet(seed: int) -> Network:
            model = ResNet((3, 32, 32), 10, 20)
            model.initialize("kaiming_normal", torch.Generator().manual_seed(seed))
            return model

        measure(
            "resnet20 (batch 128, SGD momentum 0.9, wd 1e-4)",
            resnet,
            TrainingSpec(
                optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, eval_every="1000000it"
            ),
            data,
            cifar_augment(data.pad_value),
            args.k,
            iterations=2 if args.quick else 4,
            rounds=1 if args.quick else 2,
            device=device,
            compiled=bool(args.compile),
        )
    if "conv2" in args.networks:
        data = _common.cifar_like(n_train=2048)
        print("data: CIFAR-10-shaped synthetic, no augmentation")

        def conv2(seed: int) -> Network:
            model = ConvNet((3, 32, 32), 10, (64,))
            model.initialize("glorot_normal", torch.Generator().manual_seed(seed))
            return model

        measure(
            "conv2 (batch 60, Adam)",
            conv2,
            TrainingSpec(optimizer="adam", lr=2e-4, batch_size=60, eval_every="1000000it"),
            data,
            None,
            args.k,
            iterations=10 if args.quick else 40,
            rounds=1 if args.quick else 2,
            device=device,
            compiled=bool(args.compile),
        )


if __name__ == "__main__":
    main()
