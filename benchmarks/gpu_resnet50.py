"""ResNet-50 training images/second on one GPU (bf16 autocast, channels_last): `lottery`'s loop vs a plain PyTorch
loop, on synthetic tensors already on the GPU and on the image-folder pipeline (generated JPEGs decoded by
worker processes). Started by benchmarks/gpu.sh, which runs the CUDA checks first. `--model resnet20`: CIFAR's
ResNet-20 on 32x32 synthetic tensors (10 classes) instead, no image folder.

- plain: the hand-written loop: `model(x)` under `torch.autocast(bfloat16)`, cross-entropy, `zero_grad`,
  `backward`, `torch.optim.SGD(momentum 0.9, weight decay 1e-4).step()`; channels_last model and inputs.
- ours: `lottery.training.train` with the same model, optimizer and batches, a 30%-density mask (the one-shot
  density of `resnet50_imagenet`: masked gradients and weights every step), no evaluation, no checkpoint.

Per-iteration wall times after `sync()`, medians after a warmup; images/s = batch / median.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import _common
from image_pipeline import write_images
from lottery.data import Splits, load
from lottery.data.stream import FolderStream
from lottery.models import Network
from lottery.models.resnet import ResNet
from lottery.models.resnet_imagenet import ImageNetResNet
from lottery.pruning import Mask
from lottery.spec import DatasetSpec, TrainingSpec
from lottery.store import RunDir
from lottery.training import Job, Runtime, Schedule, loop
from lottery.training.optimizer import make_optimizer

DEVICE = [torch.device("cuda")]  # --device cpu: a smoke run of this script on a machine without a GPU


def sync() -> None:
    if DEVICE[0].type == "cuda":
        torch.cuda.synchronize()


def masked(model: Network, density: float) -> Mask:
    g = torch.Generator().manual_seed(0)
    kinds = model.layer_kinds()
    return Mask(
        {n: (torch.rand(m.shape, generator=g) < density) | (kinds[n] == "output") for n, m in Mask.ones(model).items()}
    )


Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def plain_rate(model: torch.nn.Module, batches: Batches, training: TrainingSpec, steps: int, warmup: int) -> float:
    """Images/s of the hand-written loop (median per-iteration wall time after `warmup` iterations)."""
    device = DEVICE[0]
    model = model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model.parameters(), training)
    times = []
    sync()
    last = time.perf_counter()
    for t in range(warmup + steps):
        x, y = batches(t)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return training.batch_size / _common.median(times[warmup:])


@contextmanager
def ticking(cls: type, times: list[float]) -> Iterator[None]:
    """Record the wall time between successive `cls.batch` calls (after synchronizing the GPU)."""
    original = cls.batch
    last: list[float] = []

    def batch(self: Any, iteration: int) -> Any:
        sync()
        now = time.perf_counter()
        if last:
            times.append(now - last[0])
        last[:] = [now]
        return original(self, iteration)

    cls.batch = batch
    try:
        yield
    finally:
        cls.batch = original


def ours_rate(model: Network, data: Any, training: TrainingSpec, steps: int, warmup: int) -> float:
    """Images/s of `lottery.training.train` (30%-density mask, no evaluation, no checkpoint)."""
    end = warmup + steps + 1
    schedule = Schedule(max(1, data.train_size // training.batch_size), end, 0, [], end)
    job = Job(training=training, schedule=schedule, mask=masked(model, 0.3))
    runtime = Runtime(device=DEVICE[0], progress=False, checkpoint_seconds=1e9, data_workers=None)
    times: list[float] = []
    cls = loop.BatchStream if isinstance(data, Splits) else FolderStream
    with ticking(cls, times), tempfile.TemporaryDirectory() as tmp:
        loop.train(RunDir(tmp), model, data, job, runtime)
    return training.batch_size / _common.median(times[warmup:])


def synthetic_figures(
    template: Network, training: TrainingSpec, args: argparse.Namespace, size: int = 224, classes: int = 1000
) -> None:
    """Both loops on 4 batches of random tensors held on the GPU."""
    n = args.batch * 4
    device = DEVICE[0]
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, 3, size, size, device=device, generator=g)
    y = torch.randint(0, classes, (n,), device=device, generator=g)
    empty_x, empty_y = x[:0], y[:0]
    splits = Splits(x, y, empty_x, empty_y, empty_x, empty_y, classes, torch.zeros(3, device=device))

    def synthetic(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = (t % 4) * args.batch
        return x[i : i + args.batch], y[i : i + args.batch]

    plain = plain_rate(copy.deepcopy(template), synthetic, training, args.steps, args.warmup)
    ours = ours_rate(copy.deepcopy(template), splits, training, args.steps, args.warmup)
    print(
        f"{args.model}: synthetic tensors on {device.type}, batch {args.batch}: plain {plain:.0f} img/s, "
        f"lottery {ours:.0f} img/s (masked, 30% density) -> lottery/plain {ours / plain:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=min(16, multiprocessing.cpu_count()))
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu for a smoke run of the script only")
    parser.add_argument("--model", choices=("resnet50", "resnet20"), default="resnet50")
    args = parser.parse_args()
    DEVICE[0] = torch.device(args.device)
    _common.header(f"{args.model} training on one GPU: lottery vs plain PyTorch (bf16, channels_last)")
    torch.backends.cudnn.benchmark = True
    training = TrainingSpec(lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=args.batch, precision="bf16")
    if args.model == "resnet20":
        template: Network = ResNet((3, 32, 32), 10, 20)
        template.initialize("kaiming_normal", torch.Generator().manual_seed(0))
        synthetic_figures(template, training, args, size=32, classes=10)
        return
    template = ImageNetResNet(50, 1000)
    template.initialize("kaiming_normal", torch.Generator().manual_seed(0))

    synthetic_figures(template, training, args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chunks = [(root / f"part{seed}", args.images // args.workers, 64, seed, 1) for seed in range(args.workers)]
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            pool.starmap(write_images, chunks)  # the same 64 classes in every part, merged below
        _merge_parts(root, args.workers)
        spec = DatasetSpec(name="imagefolder", root=str(root), validation_size=0, augment=True).validate()
        data = load(spec).with_workers(args.workers).to(DEVICE[0])
        data = dataclasses.replace(data, test=data.test.take(torch.arange(0)))  # no evaluation
        stream = data.stream(args.batch, 0, 0)
        print(f"image folder: {data.train_size} JPEGs 500x375/375x500, {args.workers} decoding processes")
        plain = plain_rate(copy.deepcopy(template), stream.batch, training, args.steps, args.warmup)
        ours = ours_rate(copy.deepcopy(template), data, training, args.steps, args.warmup)
        print(
            f"image folder, batch {args.batch}: plain loop on FolderStream {plain:.0f} img/s, lottery {ours:.0f} "
            f"img/s -> lottery/plain {ours / plain:.3f}"
        )


def _merge_parts(root: Path, parts: int) -> None:
    """root/part<i>/{train,val}/<class>/* -> root/{train,val}/<class>/<i>_*."""
    for i in range(parts):
        for split in ("train", "val"):
            for folder in (root / f"part{i}" / split).iterdir():
                target = root / split / folder.name
                target.mkdir(parents=True, exist_ok=True)
                for file in folder.iterdir():
                    file.rename(target / f"{i}_{file.name}")


if __name__ == "__main__":
    main()
