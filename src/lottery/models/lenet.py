"""LeNet: a fully connected ReLU network of any widths (LeNet-300-100 by default)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.models.registry import register
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

    def forward_stacked(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """K copies at once (`lottery.training.stacked`): `params` stacked along a new leading dimension, x of
        shape (K, batch, ...) -> logits (K, batch, classes). Activations are kept feature-major (K, features,
        batch), so each weight's gradient comes out of one batched matmul already in the weight's layout (vmap's
        generic form materializes a transposed copy of every weight gradient, which costs more than the matmuls
        of LeNet on a CPU)."""
        h = x.flatten(2).transpose(1, 2)
        layers = [f"hidden.{i}" for i in range(len(self.hidden))] + ["out"]
        for i, name in enumerate(layers):
            h = torch.baddbmm(params[f"{name}.bias"].unsqueeze(2), params[f"{name}.weight"], h)
            if i < len(layers) - 1:
                h = h.relu()
        return h.transpose(1, 2)


@register(r"lenet(_[0-9]+)+", "lenet_300_100")
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
