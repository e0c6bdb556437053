"""Small generated datasets for tests: learnable class prototypes plus noise, fixed seed."""

from __future__ import annotations

import torch

from lottery.data.base import ImageData
from lottery.plugins import register_dataset

SHAPES = {
    "synthetic": ((1, 28, 28), 10),
    "synthetic_cifar10": ((3, 32, 32), 10),
    "synthetic_cifar100": ((3, 32, 32), 100),
}
TRAIN, TEST = 2000, 500


def make(shape: tuple[int, ...], num_classes: int, train: int = TRAIN, test: int = TEST, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand((num_classes, *shape), generator=g)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        x = (0.6 * prototypes[y] + 0.4 * torch.rand((n, *shape), generator=g)).clamp(0, 1)
        return x, y

    train_x, train_y = sample(train)
    test_x, test_y = sample(test)
    return ImageData(train_x, train_y, test_x, test_y, num_classes)


def _register(name: str) -> None:
    shape, classes = SHAPES[name]
    register_dataset(name)(lambda spec: make(shape, classes))


for _name in SHAPES:
    _register(_name)
