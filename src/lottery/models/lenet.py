"""LeNet: a fully connected ReLU network of any widths (LeNet-300-100 by default)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.plugins import register_model
from lottery.spec import ModelSpec


class LeNet(Network):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: tuple[int, ...] = (300, 100)) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.out = nn.Linear(sizes[-1], num_classes)
        self.output_layer = "out"

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = layer(x).relu()
        return self.out(x)


@register_model("lenet_300_100", pattern=r"lenet(_[0-9]+)+")
def build_lenet(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> LeNet:
    """'lenet_300_100' -> hidden widths (300, 100); `model.width` rescales them from the first."""
    widths = tuple(int(w) for w in spec.name.split("_")[1:])
    if min(widths) < 1:
        raise UserError(f"model.name {spec.name!r}: every layer width must be at least 1")
    if spec.width is not None:
        widths = tuple(max(1, round(w * spec.width / widths[0])) for w in widths)
    if spec.dropout:
        raise UserError("model.dropout is not supported by lenet (allowed: 0)")
    return LeNet(input_shape, num_classes, widths)
