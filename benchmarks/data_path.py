"""Our data path (tensors in memory, batches gathered by index, batched augmentation) vs a per-sample DataLoader.

The baseline is the pipeline of the field's reference framework (open_lth), written with torch and Pillow only
(torchvision is not installed and not used): open_lth's `ImageDataset` (images in a uint8 tensor, labels in a
numpy array; `__getitem__` converts one image with `Image.fromarray(example.numpy(), mode)` and runs
`Compose([..., ToTensor(), Normalize(mean, std)])` on it), with torchvision's transforms re-implemented op for
op from their source (PIL paths, argument checks and API-usage logging included), and a
`torch.utils.data.DataLoader` (shuffled, default collate, `num_workers` 0 as in open_lth's default platform;
see --workers) that stacks the examples. The training loop fed by it is the plain one: the same model, batch,
optimizer and steps as ours, so the difference is the data path.

Printed, each a ratio of medians over interleaved repeats:
1. one epoch of LeNet-300-100 training on Fashion-MNIST (batch 128, SGD): the DataLoader-fed loop vs
   `lottery.training.train` (target: ours >= 5x faster);
2. one pass over the 10,000 test images (loss and accuracy): DataLoader at batch 128 under `no_grad` vs
   `lottery.training.evaluate` (target: >= 10x);
3. CIFAR-style augmentation alone (random 4-pixel-padded crop + horizontal flip, 32x32 RGB): batches of 128 per
   second, per-sample PIL transforms vs `crop_and_flip` on the batch (no target; informational).

Threads: torch's default (all cores), as both pipelines run in practice -- the training of either uses every
core, the per-sample pipeline's data work (num_workers 0) one. The verdict is then by wall-clock medians (CPU
time adds up the threads); with --threads 1 it is by CPU-time medians.

    python benchmarks/data_path.py               # all cores (the recorded figures)
    python benchmarks/data_path.py --threads 1   # one core
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FunctionType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

import _common
from lottery.data import BatchStream, Splits
from lottery.data.augment import cifar_augment
from lottery.models.lenet import LeNet
from lottery.spec import TrainingSpec
from lottery.store import RunDir
from lottery.training import Job, Runtime, Schedule, evaluate, train

EPOCH_TARGET, EVAL_TARGET = 5.0, 10.0


# --- the per-sample pipeline: torchvision's transforms (v0.15+, PIL paths) re-implemented op for op with torch and
# Pillow, and open_lth's ImageDataset -------------------------------------------------------------------------


def _log_api_usage_once(obj: Any) -> None:
    """torchvision.utils._log_api_usage_once, which every torchvision transform calls."""
    module = obj.__module__
    if not module.startswith("torchvision"):
        module = f"torchvision.internal.{module}"
    name = obj.__name__ if isinstance(obj, FunctionType) else obj.__class__.__name__
    torch._C._log_api_usage_once(f"{module}.{name}")


def _is_pil_image(img: Any) -> bool:
    return isinstance(img, Image.Image)


def _get_dimensions(img: Image.Image) -> list[int]:
    """torchvision.transforms.functional.get_dimensions for a PIL image: [channels, height, width]."""
    channels = len(img.getbands()) if hasattr(img, "getbands") else img.channels  # type: ignore[attr-defined]
    width, height = img.size
    return [channels, height, width]


def to_tensor(pic: Image.Image) -> Tensor:
    """torchvision.transforms.functional.to_tensor, PIL path: HWC uint8 -> CHW float in [0, 1]."""
    if not torch.jit.is_scripting() and not torch.jit.is_tracing():
        _log_api_usage_once(to_tensor)
    if not (_is_pil_image(pic) or isinstance(pic, np.ndarray)):
        raise TypeError(f"pic should be PIL Image or ndarray. Got {type(pic)}")
    default_float_dtype = torch.get_default_dtype()
    mode_to_nptype = {"I": np.int32, "I;16" if sys.byteorder == "little" else "I;16B": np.int16, "F": np.float32}
    img = torch.from_numpy(np.array(pic, mode_to_nptype.get(pic.mode, np.uint8), copy=True))
    if pic.mode == "1":
        img = 255 * img
    img = img.view(pic.size[1], pic.size[0], _get_dimensions(pic)[0])
    img = img.permute((2, 0, 1)).contiguous()
    if isinstance(img, torch.ByteTensor):
        return img.to(dtype=default_float_dtype).div(255)
    return img


def normalize(tensor: Tensor, mean: list[float], std: list[float], inplace: bool = False) -> Tensor:
    """torchvision.transforms.functional.normalize (and its tensor implementation)."""
    if not torch.jit.is_scripting() and not torch.jit.is_tracing():
        _log_api_usage_once(normalize)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"img should be Tensor Image. Got {type(tensor)}")
    if not tensor.ndim >= 2:
        raise TypeError("Tensor is not a torch image.")
    if not tensor.is_floating_point():
        raise TypeError(f"Input tensor should be a float tensor. Got {tensor.dtype}.")
    if tensor.ndim < 3:
        raise ValueError(f"Expected tensor to be a tensor image of size (..., C, H, W). Got {tensor.size()}.")
    if not inplace:
        tensor = tensor.clone()
    dtype = tensor.dtype
    mean_t = torch.as_tensor(mean, dtype=dtype, device=tensor.device)
    std_t = torch.as_tensor(std, dtype=dtype, device=tensor.device)
    if (std_t == 0).any():
        raise ValueError(f"std evaluated to zero after conversion to {dtype}, leading to division by zero.")
    if mean_t.ndim == 1:
        mean_t = mean_t.view(-1, 1, 1)
    if std_t.ndim == 1:
        std_t = std_t.view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


class Compose:
    """torchvision.transforms.Compose."""

    def __init__(self, transforms: list[Callable[[Any], Any]]) -> None:
        _log_api_usage_once(self)
        self.transforms = transforms

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img


class ToTensor:
    """torchvision.transforms.ToTensor."""

    def __init__(self) -> None:
        _log_api_usage_once(self)

    def __call__(self, pic: Image.Image) -> Tensor:
        return to_tensor(pic)


class Normalize(nn.Module):
    """torchvision.transforms.Normalize (an nn.Module, as there)."""

    def __init__(self, mean: list[float], std: list[float], inplace: bool = False) -> None:
        super().__init__()
        _log_api_usage_once(self)
        self.mean, self.std, self.inplace = mean, std, inplace

    def forward(self, tensor: Tensor) -> Tensor:
        return normalize(tensor, self.mean, self.std, self.inplace)


class RandomCrop(nn.Module):
    """torchvision.transforms.RandomCrop(size, padding) on PIL images (constant zero padding)."""

    def __init__(self, size: int, padding: int) -> None:
        super().__init__()
        _log_api_usage_once(self)
        self.size, self.padding = (size, size), padding

    def forward(self, img: Image.Image) -> Image.Image:
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            _log_api_usage_once(RandomCrop.forward)
        img = ImageOps.expand(img, border=self.padding, fill=0)  # F.pad -> F_pil.pad, constant mode
        _, height, width = _get_dimensions(img)
        th, tw = self.size
        i = torch.randint(0, height - th + 1, size=(1,)).item()
        j = torch.randint(0, width - tw + 1, size=(1,)).item()
        return img.crop((j, i, j + tw, i + th))  # F.crop -> F_pil.crop


class RandomHorizontalFlip(nn.Module):
    """torchvision.transforms.RandomHorizontalFlip(p=0.5) on PIL images."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        _log_api_usage_once(self)
        self.p = p

    def forward(self, img: Image.Image) -> Image.Image:
        if torch.rand(1) < self.p:
            return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # F.hflip -> F_pil.hflip
        return img


class PILDataset(Dataset):
    """open_lth's ImageDataset: images in a uint8 tensor, labels in a numpy array; each access converts one image
    to PIL (`Image.fromarray(example.numpy(), mode)`) and runs the composed transforms on it alone."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: list[float], std: list[float], augment: bool):
        self._examples, self._labels = torch.from_numpy(np.array(images)), np.asarray(labels)
        self.mode = "L" if images.ndim == 3 else "RGB"
        side = images.shape[1]
        image_transforms: list[Callable[[Any], Any]] = [RandomCrop(side, 4), RandomHorizontalFlip()] if augment else []
        self._composed = Compose([*image_transforms, ToTensor(), Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self._labels)

    def example_to_image(self, example: Tensor) -> Image.Image:
        return Image.fromarray(example.numpy(), mode=self.mode)

    def __getitem__(self, index: int) -> tuple[Tensor, np.integer]:
        example, label = self._examples[index], self._labels[index]
        return self._composed(self.example_to_image(example)), label


def loader(dataset: PILDataset, batch_size: int, shuffle: bool, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )


def dataloader_epoch(model: LeNet, batches: DataLoader, lr: float) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def dataloader_eval(model: LeNet, batches: DataLoader) -> tuple[float, float]:
    model.eval()
    loss, correct, n = 0.0, 0, 0
    for x, y in batches:
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    model.train()
    return loss / n, correct / n


# --- data ------------------------------------------------------------------------------------------------------


def fashion_mnist_uint8(splits: Splits) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The raw uint8 images behind `splits` (same sizes), for the PIL pipeline."""
    from lottery.data.idx import FILES, read_idx

    root = "/usr/share/datasets/fashion-mnist"
    try:
        images = {k: read_idx(_path(root, FILES[k])) for k in ("train_x", "train_y", "test_x", "test_y")}
        n = len(splits.train_x)
        return images["train_x"][:n], images["train_y"][:n], images["test_x"], images["test_y"]
    except Exception:  # not installed: the synthetic stand-in, quantised

        def raw(x: Tensor) -> np.ndarray:
            return (x - x.min()).div(x.max() - x.min()).mul(255).round().to(torch.uint8).squeeze(1).numpy()

        return raw(splits.train_x), splits.train_y.numpy(), raw(splits.test_x), splits.test_y.numpy()


def _path(root: str, stem: str) -> Path:
    for candidate in (Path(root) / stem, Path(root) / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(stem)


# --- measurements ----------------------------------------------------------------------------------------------


def lenet(seed: int = 0) -> LeNet:
    model = LeNet((1, 28, 28), 10)
    model.initialize("kaiming_normal", torch.Generator().manual_seed(seed))
    return model


def report(name: str, times: dict[str, _common.Times], target: float | None, cpu_verdict: bool = True) -> float:
    """Print DataLoader / ours for CPU time and wall-clock medians; return the ratio the verdict uses."""
    base, ours = times["DataLoader"], times["ours"]
    cpu, wall = base.median() / ours.median(), base.median(False) / ours.median(False)
    base_wall, ours_wall = base.median(False), ours.median(False)
    ratio = cpu if cpu_verdict else wall
    verdict = "" if target is None else f"; target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}"
    print(
        f"{name}, medians of {len(ours.cpu)}:\n"
        f"  CPU time  DataLoader {base.median():.3f} s  ours {ours.median():.3f} s  -> ours {cpu:.1f}x faster\n"
        f"  wall      DataLoader {base_wall:.3f} s  ours {ours_wall:.3f} s  -> ours {wall:.1f}x faster"
        f"\n  ratio {ratio:.1f}x ({'CPU time' if cpu_verdict else 'wall-clock'}{verdict})"
    )
    return ratio


def main() -> None:
    args = _common.arguments(
        __doc__.splitlines()[0],
        threads=0,
        workers=(int, 0, "DataLoader worker processes of the baseline (open_lth: 0)"),
    )
    _common.header("data path: in-memory tensors vs per-sample PIL DataLoader")
    splits, source = _common.fashion_mnist()
    train_u8, train_labels, test_u8, test_labels = fashion_mnist_uint8(splits)
    mean, std = [float(train_u8.mean()) / 255], [float((train_u8 / 255.0).std())]
    print(f"data: {source}: {len(train_u8)} training, {len(test_u8)} test images; DataLoader workers {args.workers}")
    repeats = 1 if args.quick else 3
    training = TrainingSpec(optimizer="sgd", lr=0.05, batch_size=128, eval_every="1000000it")
    per_epoch = len(splits.train_x) // training.batch_size
    train_loader = loader(PILDataset(train_u8, train_labels, mean, std, False), 128, True, args.workers)
    test_loader = loader(PILDataset(test_u8, test_labels, mean, std, False), 128, False, args.workers)
    no_eval = _common.without_eval(splits)

    def ours_epoch() -> None:
        job = Job(training=training, schedule=Schedule(per_epoch, per_epoch, 0, [], per_epoch))
        with tempfile.TemporaryDirectory() as tmp:
            train(RunDir(tmp), lenet(), no_eval, job, Runtime(progress=False, label="epoch"))

    times = _common.interleave(
        {"DataLoader": lambda: dataloader_epoch(lenet(), train_loader, training.lr), "ours": ours_epoch},
        repeats,
        warmup=0 if args.quick else 1,
    )
    # CPU time is the robust measure on a shared machine, but only for one thread in one process (worker
    # processes' CPU time is not counted; several intra-op threads add up): otherwise judge by wall-clock.
    workers = args.workers == 0 and torch.get_num_threads() == 1
    epoch_ratio = report(f"training epoch ({per_epoch} steps of 128)", times, EPOCH_TARGET, workers)

    model = lenet()
    times = _common.interleave(
        {
            "DataLoader": lambda: dataloader_eval(model, test_loader),
            "ours": lambda: evaluate(model, splits.test_x, splits.test_y),
        },
        3 if args.quick else 7,
    )
    eval_ratio = report(f"test-set pass ({len(test_u8)} images)", times, EVAL_TARGET, workers)

    augment_ratio = augmentation(args.quick, args.workers)
    print(
        f"summary: epoch {epoch_ratio:.1f}x (target {EPOCH_TARGET:g}x), evaluation {eval_ratio:.1f}x "
        f"(target {EVAL_TARGET:g}x), augmented batches {augment_ratio:.1f}x"
    )


def augmentation(quick: bool, workers: int) -> float:
    """Batches of 128 augmented 32x32 RGB images per second: per-sample PIL vs batched crop_and_flip."""
    n, batches = 10240, 20 if quick else 60
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    x = images.permute(0, 3, 1, 2).float().div(255)
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    x = ((x - mean[:, None, None]) / std[:, None, None]).contiguous()
    dataset = PILDataset(images.numpy(), labels.numpy(), mean.tolist(), std.tolist(), augment=True)
    stream = BatchStream(x, labels, 128, 0, 0, cifar_augment(-mean / std))

    def pil() -> None:
        for i, _ in enumerate(loader(dataset, 128, True, workers)):
            if i + 1 == batches:
                break

    def ours() -> None:
        for t in range(batches):
            stream.batch(t)

    times = _common.interleave({"DataLoader": pil, "ours": ours}, 3 if quick else 5)
    cpu_verdict = workers == 0 and torch.get_num_threads() == 1
    return report(f"augmented CIFAR-shaped batches ({batches} of 128)", times, None, cpu_verdict)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.1f} s")
