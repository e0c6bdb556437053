"""CIFAR augmentation on a batch already on the training device: random crop after padding, random horizontal flip.

The random parameters are drawn with a CPU generator and then moved to the batch's device, so a seed gives
the same augmented batch on any device. The padding takes, per channel, the value of a black pixel after
normalisation (`Splits.pad_value`): the same as padding the raw image with zeros before normalising.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lottery.data.batches import Augment


def draw_params(n: int, generator: torch.Generator, padding: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example crop offsets dy, dx in [0, 2 * padding] (int64) and flip bits (bool), on the CPU."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    return dy, dx, flip


def _pad(x: Tensor, pad_value: Tensor, padding: int) -> Tensor:
    n, c, h, w = x.shape
    padded = x.new_empty(n, c, h + 2 * padding, w + 2 * padding)
    padded[:] = pad_value.to(x).view(1, c, 1, 1)
    padded[:, :, padding : padding + h, padding : padding + w] = x
    return padded


def crop_and_flip(x: Tensor, generator: torch.Generator, pad_value: Tensor, padding: int = 4) -> Tensor:
    """Each image of `x` (N, C, H, W) padded by `padding` pixels of `pad_value` (C,), cropped back to H x W at a
    random offset and flipped left-right with probability 1/2; one gather, no per-example loop."""
    n, c, h, w = x.shape
    dy, dx, flip = (t.to(x.device) for t in draw_params(n, generator, padding))
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    padded = _pad(x, pad_value, padding)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def crop_and_flip_one(image: Tensor, dy: int, dx: int, flip: bool, pad_value: Tensor, padding: int = 4) -> Tensor:
    """Reference for one image (C, H, W): pad each channel with its value, slice the crop, flip it."""
    _, h, w = image.shape
    channels = [
        torch.nn.functional.pad(image[i], (padding, padding, padding, padding), value=float(pad_value[i]))
        for i in range(image.shape[0])
    ]
    crop = torch.stack(channels)[:, dy : dy + h, dx : dx + w]
    return crop.flip(-1) if flip else crop


def cifar_augment(pad_value: Tensor, padding: int = 4) -> Augment:
    """`crop_and_flip` with its padding fixed, in the form BatchStream's `augment` takes."""

    def augment(x: Tensor, generator: torch.Generator) -> Tensor:
        return crop_and_flip(x, generator, pad_value, padding)

    return augment
