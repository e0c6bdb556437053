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
) -> Path:
    """Write class-coloured noisy images (width, height = `size`, varying aspect by class) as JPEGs; `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            width, height = (size[0], size[1]) if c % 2 == 0 else (size[1], size[0])
            base = rng.integers(0, 256, 3)
            for i in range(count):
                noise = rng.integers(-60, 60, (height, width, 3))
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{split}_{c}_{i}.JPEG", quality=90)
    return root
