"""CIFAR crop-and-flip augmentation: a pure function of its seed, equal to per-example indexing, and it does augment."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lottery.data import BatchStream
from lottery.data.augment import crop_and_flip, crop_and_flip_one, draw_params

PAD = torch.tensor([-1.5, -2.5, -3.5])


def images(n: int = 64, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.rand((n, 3, h, w), generator=torch.Generator().manual_seed(0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_batch() -> None:
    x = images()
    a, b, c = crop_and_flip(x, gen(1), PAD), crop_and_flip(x, gen(1), PAD), crop_and_flip(x, gen(2), PAD)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


@pytest.mark.parametrize("padding", [0, 1, 4])
@pytest.mark.parametrize("h,w", [(32, 32), (8, 6)])
def test_batched_equals_per_example(padding: int, h: int, w: int) -> None:
    x = images(50, h, w)
    out = crop_and_flip(x, gen(7), PAD, padding)
    dy, dx, flip = draw_params(len(x), gen(7), padding)
    for i in range(len(x)):
        ref = crop_and_flip_one(x[i], int(dy[i]), int(dx[i]), bool(flip[i]), PAD, padding)
        assert torch.equal(out[i], ref), i


def test_reference_is_pad_slice_flip() -> None:
    image = torch.arange(3 * 4 * 5, dtype=torch.float32).view(3, 4, 5)
    assert torch.equal(crop_and_flip_one(image, 2, 2, False, PAD, 2), image)
    assert torch.equal(crop_and_flip_one(image, 2, 2, True, PAD, 2), image.flip(-1))
    shifted = crop_and_flip_one(image, 0, 3, False, PAD, 2)  # two rows of padding on top, one column moved left
    assert torch.equal(shifted[:, 2:, :4], image[:, :2, 1:])
    assert (shifted[:, :2] == PAD.view(3, 1, 1)).all() and (shifted[:, :, 4] == PAD.view(3, 1)).all()


def test_parameters_cover_every_offset_and_flip_half() -> None:
    dy, dx, flip = draw_params(4000, gen(0), 4)
    assert set(dy.tolist()) == set(range(9)) == set(dx.tolist())
    assert 0.45 < flip.float().mean().item() < 0.55
    assert not torch.equal(dy, dx)


def test_crops_and_flips_happen() -> None:
    x = images(256)
    out = crop_and_flip(x, gen(3), PAD)
    dy, dx, flip = draw_params(len(x), gen(3), 4)
    unchanged = (out == x).flatten(1).all(1)
    assert torch.equal(unchanged, (dy == 4) & (dx == 4) & ~flip)
    assert unchanged.sum() < 10
    flipped_only = (dy == 4) & (dx == 4) & flip
    assert flipped_only.any() and torch.equal(out[flipped_only], x[flipped_only].flip(-1))
    # Shifted crops bring in padding pixels: black after normalisation, per channel.
    top = dy == 0
    assert torch.equal(out[top][:, :, :4], PAD.view(1, 3, 1, 1).expand(int(top.sum()), 3, 4, 32))
    # Image values are in [0, 1) and the padding is negative: count the padding pixels each offset brings in.
    rows, cols = (dy - 4).abs(), (dx - 4).abs()
    assert torch.equal((out < 0).flatten(1).sum(1), 3 * (rows * 32 + cols * 32 - rows * cols))


def test_runs_on_the_batch_device_and_dtype() -> None:
    x = images(8).double()
    out = crop_and_flip(x, gen(0), PAD)
    assert out.dtype == torch.float64
    if torch.cuda.is_available():
        assert torch.equal(crop_and_flip(x.cuda(), gen(0), PAD.cuda()).cpu(), out)


def test_through_the_batch_stream() -> None:
    x, y = images(40), torch.arange(40)
    augment = partial(crop_and_flip, pad_value=PAD)
    first = BatchStream(x, y, 8, data_order_seed=1, augmentation_seed=5, augment=augment)
    again = BatchStream(x, y, 8, data_order_seed=1, augmentation_seed=5, augment=augment)
    other = BatchStream(x, y, 8, data_order_seed=1, augmentation_seed=6, augment=augment)
    plain = BatchStream(x, y, 8, data_order_seed=1)
    for t in (0, 3, 12):
        (a, ya), (b, yb), (c, yc), (d, yd) = first.batch(t), again.batch(t), other.batch(t), plain.batch(t)
        assert torch.equal(a, b) and torch.equal(ya, yb) and torch.equal(ya, yc) and torch.equal(ya, yd)
        assert not torch.equal(a, c) and not torch.equal(a, d)
        assert torch.equal(d, x[ya])
