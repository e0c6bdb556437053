"""Image-folder decoding: `lottery`'s streamed pipeline vs a torchvision-style per-sample DataLoader, images/second.

Data: generated JPEGs of ImageNet's typical size (500 x 375 and 375 x 500, quality 90, smooth content so the
files are photo-sized, ~20-40 KB), in train/<class>/ folders, written once to a temporary folder.

- ours: `FolderStream` (data/stream.py): per-example seeded RandomResizedCrop 224 + flip with Pillow in W worker
  processes (chunks of 16 images returned as uint8), batches converted to float and normalised once per batch.
- baseline: the field's default, torchvision's ImageFolder + transforms written with torch.utils.data and PIL
  only (no torchvision): `__getitem__` opens the file, converts to RGB, RandomResizedCrop (crop then bilinear
  resize), RandomHorizontalFlip, ToTensor (float CHW / 255), Normalize; `DataLoader(shuffle=True,
  num_workers=W, persistent_workers=True)` with the default collate.

Both produce the same batches' shape (B, 3, 224, 224) float32 in the training process; both sides are timed
over the same number of batches in steady state (after consuming, untimed, more batches than either decodes
ahead), alternating A B / B A, for each worker count W. images/s per
core = images/s / W (the workers decode; the training process only assembles batches).

    python benchmarks/image_pipeline.py                 # W = 1 and 2 (this machine has 2 cores)
    python benchmarks/image_pipeline.py --workers 1,2,4,8 --images 2000
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import _common
from lottery.data import folder, imaging
from lottery.data.jpegs import write_folder
from lottery.data.stream import FolderSplits, FolderStream

SIZE = 224


def write_images(root: Path, count: int, classes: int = 10, seed: int = 0, val_per_class: int = 0) -> None:
    """`count` photo-like JPEGs of ImageNet's typical size in `classes` train/ folders (500x375, 375x500)."""
    write_folder(root, classes, max(1, count // classes), val_per_class, (500, 375), seed, photo_like=True)


# --- the baseline: torchvision's ImageFolder and transforms (PIL paths) in plain torch + PIL --------------------
class RandomResizedCrop:
    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> None:  # noqa: ANN001
        self.size, self.scale, self.ratio = size, scale, ratio

    def get_params(self, width: int, height: int) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = torch.log(torch.tensor(self.ratio))
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
            aspect_ratio = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                i = torch.randint(0, height - h + 1, size=(1,)).item()
                j = torch.randint(0, width - w + 1, size=(1,)).item()
                return i, j, h, w
        return (height - min(height, width)) // 2, (width - min(height, width)) // 2, height, width

    def __call__(self, image: Image.Image) -> Image.Image:
        i, j, h, w = self.get_params(*image.size)
        return image.crop((j, i, j + w, i + h)).resize((self.size, self.size), Image.BILINEAR)


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.array(image, copy=True)
    tensor = torch.from_numpy(array).view(image.size[1], image.size[0], 3).permute(2, 0, 1).contiguous()
    return tensor.float().div(255)


class ImageFolderDataset(Dataset):
    def __init__(self, paths: tuple[str, ...], labels: list[int]) -> None:
        self.paths, self.labels = paths, labels
        self.crop = RandomResizedCrop(SIZE)
        self.mean = torch.tensor(imaging.MEAN).view(3, 1, 1)
        self.std = torch.tensor(imaging.STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with open(self.paths[index], "rb") as f:
            image = Image.open(f).convert("RGB")
        image = self.crop(image)
        if torch.rand(1) < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return (to_tensor(image) - self.mean) / self.std, self.labels[index]


def measure(
    data: FolderSplits, dataset: ImageFolderDataset, workers: int, batch: int, batches: int, repeats: int
) -> dict[str, float]:
    """Images/s (wall-clock median) of each side with `workers` worker processes."""
    stream = FolderStream(data, batch, 0, 0)
    loader = DataLoader(
        dataset,
        batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    state = {"t": 0, "it": iter(loader)}

    def ours(n: int) -> None:
        for _ in range(n):
            stream.batch(state["t"])
            state["t"] += 1

    def baseline(n: int) -> None:
        for _ in range(n):
            try:
                next(state["it"])
            except StopIteration:
                state["it"] = iter(loader)
                next(state["it"])

    # Steady state: each side first consumes more batches than either keeps decoded ahead (ours: 2 iterations;
    # the DataLoader: 2 per worker), untimed, then the timed batches; sides alternate A B / B A.
    skip = 2 * workers + 2
    sides = {"ours": ours, "DataLoader": baseline}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(repeats + 1):
        for name in list(sides) if round_ % 2 == 0 else list(sides)[::-1]:
            sides[name](skip)
            start = time.perf_counter()
            sides[name](batches)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: batch * batches / _common.median(t) for name, t in times.items()}


def main() -> None:
    args = _common.arguments(
        __doc__.splitlines()[0],
        threads=1,
        images=(int, 640, "JPEGs to generate"),
        batch=(int, 64, "batch size"),
        batches=(int, 8, "batches timed per repeat"),
        workers=(str, "1,2", "comma-separated worker counts"),
        repeats=(int, 3, "repeats of each side per worker count"),
    )
    _common.header("image-folder pipeline vs per-sample DataLoader (Pillow)")
    counts = [int(w) for w in args.workers.split(",")]
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root, args.images)
        sizes = [p.stat().st_size for p in root.rglob("*.JPEG")]
        print(f"data: {len(sizes)} JPEGs, 500x375 / 375x500, mean {np.mean(sizes) / 1024:.0f} KB")
        classes = folder.class_names(root, "bench")
        listing = folder.list_split(root, "train", classes, "bench")
        empty = listing.take(torch.arange(0))
        data = FolderSplits(listing, empty, empty, len(classes), SIZE, augment=True, normalize=True)
        dataset = ImageFolderDataset(listing.paths, listing.labels.tolist())
        print(f"timed: {args.batches} batches of {args.batch} per repeat, {repeats} repeat(s), medians")
        for workers in counts:
            rate = measure(data.with_workers(workers), dataset, workers, args.batch, args.batches, repeats)
            print(
                f"W={workers}: DataLoader {rate['DataLoader']:.0f} img/s ({rate['DataLoader'] / workers:.0f} per core)"
                f"  ours {rate['ours']:.0f} img/s ({rate['ours'] / workers:.0f} per core)"
                f"  -> ours {rate['ours'] / rate['DataLoader']:.2f}x"
            )
        start, n = time.perf_counter(), min(100, len(listing))
        for k in range(n):
            imaging.decode(imaging.Item(listing.paths[k], (0, 0, k)), SIZE)
        print(f"one image in this process: {1e3 * (time.perf_counter() - start) / n:.2f} ms (decode + crop + flip)")


if __name__ == "__main__":
    main()
