"""Conv-2, Conv-4, Conv-6 of the LTH paper (Frankle & Carbin 2019, Figure 2): VGG-like nets scaled down for CIFAR.

Conv-N: N/2 blocks of two 3x3 'same' convolutions and a 2x2 max-pool (64, 128, 256 filters), then fully
connected 256-256-classes, ReLU everywhere. On 32x32 CIFAR-10 inputs this gives 4.30M / 2.43M / 2.26M
parameters. The paper's table says 4.3M / 2.4M / 1.7M: its Conv-6 figure does not follow from the architecture
it describes (the 4x4x256 -> 256 layer alone has 1.05M weights), so the architecture is what is kept here.
"""

from __future__ import annotations

import itertools
import math

from torch import Tensor, nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.plugins import register_model
from lottery.spec import ModelSpec

BLOCK_WIDTHS = (64, 128, 256)  # per block of two convs; Conv-N uses the first N/2
FC_WIDTHS = (256, 256)


class ConvNet(Network):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        block_widths: tuple[int, ...],
        fc_widths: tuple[int, ...] = FC_WIDTHS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape)
        convs = []
        for filters in block_widths:
            convs += [nn.Conv2d(channels, filters, 3, padding=1), nn.Conv2d(filters, filters, 3, padding=1)]
            channels = filters
        self.convs = nn.ModuleList(convs)
        self.pool = nn.MaxPool2d(2)
        pools = len(block_widths)
        flat = channels * (height >> pools) * (width >> pools)
        if flat == 0:
            raise UserError(f"input shape {tuple(input_shape)} is too small for {pools} 2x2 max-pools")
        sizes = [flat, *fc_widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.dropout = nn.Dropout(dropout)  # after each hidden fully connected layer, as in the LTH dropout runs
        self.out = nn.Linear(sizes[-1], num_classes)
        self.output_layer = "out"

    def forward(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x).relu()
            if i % 2 == 1:
                x = self.pool(x)
        x = x.flatten(1)
        for layer in self.hidden:
            x = self.dropout(layer(x).relu())
        return self.out(x)


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise UserError(f"convolutional networks need image inputs (C, H, W), got shape {tuple(input_shape)}")
    channels, height, width = (int(d) for d in input_shape)
    return channels, height, width


def scale(filters: int, base: int, width: int | None) -> int:
    """`filters` rescaled so that the family's first width `base` becomes `width` (unchanged when None)."""
    return filters if width is None else max(1, math.floor(filters * width / base + 0.5))


@register_model("conv6", pattern=r"conv(2|4|6)")
def build_conv(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    """'conv4' -> blocks (64, 128); `model.width` sets the first conv's width and scales every layer with it."""
    blocks = BLOCK_WIDTHS[: int(spec.name[4:]) // 2]
    blocks = tuple(scale(w, BLOCK_WIDTHS[0], spec.width) for w in blocks)
    fc = tuple(scale(w, BLOCK_WIDTHS[0], spec.width) for w in FC_WIDTHS)
    return ConvNet(input_shape, num_classes, blocks, fc, spec.dropout)
