"""Small image folders of real JPEGs for tests and benchmarks: `root/train/<class>/*.JPEG`, `root/val/...`."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_folder(
    root: Path,
    classes: int = 3,
    train_per_class: int = 8,
    val_per_class: int = 3,
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
    photo_like: bool = False,
) -> Path:
    """Write JPEGs (quality 90; width, height = `size`, transposed for odd classes) and return `root`: class-
    coloured noise, or with `photo_like` smooth random content (an upscaled 1/25-size random image plus mild
    noise) whose file size and decode cost resemble a photograph's (ImageNet: `size=(500, 375)`)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            width, height = (size[0], size[1]) if c % 2 == 0 else (size[1], size[0])
            base = rng.integers(0, 256, 3)
            for i in range(count):
                if photo_like:
                    small = rng.integers(0, 256, (max(1, height // 25), max(1, width // 25), 3), dtype=np.uint8)
                    smooth = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.int16)
                    pixels = np.clip(smooth + rng.integers(-8, 9, smooth.shape), 0, 255).astype(np.uint8)
                else:
                    pixels = np.clip(base + rng.integers(-60, 60, (height, width, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{split}_{c}_{i}.JPEG", quality=90)
    return root
