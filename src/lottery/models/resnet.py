"""ResNet-20/32/44/56/110 for CIFAR (He et al. 2016, §4.2), as used by the LTH papers (which call ResNet-20
"Resnet-18") and open_lth.

A 3x3 conv (W filters) + BN, then three stages of (depth - 2) / 6 basic blocks with W, 2W, 4W filters (the
first block of stages 2 and 3 halves the resolution), a global average pool and one linear output layer.
Convolutions have no bias (BatchNorm follows each). Downsampling shortcuts:
- 'projection' (default): 1x1 stride-2 conv + BN, He et al.'s option B, as in open_lth and the LTH papers'
  ResNet-20 (272,474 parameters for CIFAR-10);
- 'padding': He et al.'s option A, the stride-2 subsampled identity padded with zero channels (no
  parameters; 269,722 parameters for CIFAR-10).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.models.conv import image_shape
from lottery.plugins import register_model
from lottery.spec import ModelSpec

DEFAULT_WIDTH = 16


class PadShortcut(nn.Module):
    """Option A: take every other pixel and append zero channels up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.extra))


class Block(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, downsample: bool, shortcut: str) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if not downsample and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "projection":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.shortcut = PadShortcut(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class ResNet(Network):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        depth: int,
        width: int = DEFAULT_WIDTH,
        shortcut: str = "projection",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise UserError(f"ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        if shortcut not in ("projection", "padding"):
            raise UserError(f"unknown ResNet shortcut '{shortcut}' (allowed: projection, padding)")
        channels = image_shape(input_shape)[0]
        self.conv = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, current = [], width
        for stage, filters in enumerate((width, 2 * width, 4 * width)):
            for index in range((depth - 2) // 6):
                blocks.append(Block(current, filters, stage > 0 and index == 0, shortcut))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(current, num_classes)
        self.output_layer = "fc"

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.bn(self.conv(x)).relu())
        return self.fc(self.pool(x).flatten(1))


@register_model("resnet20", pattern=r"resnet(20|32|44|56|110)")
def build_resnet(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """'resnet56' -> depth 56; `model.width` is W (stage widths W, 2W, 4W); `model.shortcut` picks the shortcut."""
    if spec.dropout:
        raise UserError(f"model.dropout is not supported by {spec.name} (allowed: 0)")
    width = DEFAULT_WIDTH if spec.width is None else spec.width
    return ResNet(input_shape, num_classes, int(spec.name[6:]), width, spec.shortcut)
