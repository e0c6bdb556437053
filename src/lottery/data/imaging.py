"""Decoding one image file with Pillow and the standard ImageNet transforms, in plain Python and numpy.

Train: RandomResizedCrop (scale 0.08-1, aspect ratio 3/4-4/3, as torchvision's `get_params`) to S x S and a
horizontal flip with probability 1/2. Eval: resize the shorter side to round(S * 256 / 224) (256 for S = 224),
then a center crop of S x S. Bilinear resampling as Pillow does it (antialiased), as torchvision's PIL path;
a JPEG much larger than the output is first decoded at 1/2, 1/4 or 1/8 scale by libjpeg (never below the
output's resolution).

The random crop and flip of an example are drawn from its own seed, `seeding.derive("augmentation", augmentation_seed,
iteration, position in the global batch)`, so they depend on neither the worker that decodes it nor the rank
that trains on it. Worker processes run only this module's code (no torch calls).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lottery.errors import UserError
from lottery.seeding import derive

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
MEAN = (0.485, 0.456, 0.406)  # ImageNet channel statistics of images in [0, 1] (torchvision's reference scripts)
STD = (0.229, 0.224, 0.225)


def resize_size(image_size: int) -> int:
    """The eval resize of the shorter side: 256 for 224, in the same proportion for other sizes."""
    return round(image_size * 256 / 224)


def crop_params(rng: random.Random, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop box: torchvision's algorithm (10 tries, then the central crop
    of the allowed aspect ratio), with `rng` in place of torch's RNG."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class Item:
    """One example to decode: its file and, for training augmentation, the seed parts of its crop and flip."""

    path: str
    seed: tuple[int, ...] | None = None  # None: the eval transform


def pillow():  # noqa: ANN201
    """Pillow's Image module and its decode error, or a UserError saying how to install it."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UserError("image-folder datasets need Pillow: pip install 'lottery[images]'") from None
    return Image, UnidentifiedImageError


def _open(path: str, target: Callable[[int, int], tuple[int, int]]):  # noqa: ANN202  (a PIL image, scale)
    """The image at `path` in RGB, and its scale relative to the stored size. A JPEG is decoded straight at the
    smallest of 1, 1/2, 1/4, 1/8 of its size that is still at least `target(width, height)` (libjpeg's DCT-domain
    scaling: a large photo is not decoded at full size only to be shrunk)."""
    Image, UnidentifiedImageError = pillow()
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.draft("RGB", target(width, height))
            rgb = image.convert("RGB")
    except Image.DecompressionBombError as error:  # its header claims more pixels than Pillow's limit allows
        raise UserError(f"cannot decode image {path}: refused as a decompression bomb ({error})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise UserError(f"cannot decode image {path}: {error}") from None
    return rgb, (width, height)


def decode(item: Item, size: int) -> np.ndarray:
    """The transformed image as uint8 (size, size, 3)."""
    Image, _ = pillow()

    crop: list[tuple[int, int, int, int]] = []
    rng = random.Random(derive("augmentation", *item.seed)) if item.seed is not None else None
    short = resize_size(size)

    def target(width: int, height: int) -> tuple[int, int]:
        if rng is None:  # eval: the shorter side must stay >= the resize
            factor = short / min(width, height)
            return math.ceil(width * factor), math.ceil(height * factor)
        crop.append(crop_params(rng, height, width))  # drawn from the stored size, whatever the decoded scale
        _, _, h, w = crop[0]
        return math.ceil(width * size / w), math.ceil(height * size / h)

    image, (width, height) = _open(item.path, target)
    sx, sy = image.width / width, image.height / height
    if rng is not None:
        top, left, h, w = crop[0]
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        image = image.resize((size, size), Image.BILINEAR, box=box)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
    else:
        if width <= height:
            new_w, new_h = short, int(short * height / width)
        else:
            new_w, new_h = int(short * width / height), short
        image = image.resize((new_w, new_h), Image.BILINEAR)
        top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def decode_many(items: list[Item], size: int) -> np.ndarray:
    """Several images as one uint8 array (n, size, size, 3): one task of a worker process."""
    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        out[i] = decode(item, size)
    return out
