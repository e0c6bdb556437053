"""SqueezeNet 1.1 (Iandola et al. 2016; the 1.1 variant of the SqueezeNet repository), as torchvision's
reference `squeezenet1_1`: same module names and shapes, so torchvision weights load. 1,235,496 parameters
for 1000 classes (the papers' 1.24M). The output layer is the 1x1 conv `classifier.1` (then ReLU and a global
average pool); `model.dropout` is the dropout before it (torchvision: 0.5, set by the preset).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.plugins import register_model
from lottery.spec import ModelSpec


class Fire(nn.Module):
    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet(Network):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64, 64),
            Fire(128, 16, 64, 64),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 32, 128, 128),
            Fire(256, 32, 128, 128),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            Fire(512, 64, 256, 256),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Conv2d(512, num_classes, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)
        )
        self.output_layer = "classifier.1"

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x)).flatten(1)


@register_model("squeezenet1_1")
def build_squeezenet(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> SqueezeNet:
    if len(input_shape) != 3:
        raise UserError(f"{spec.name} needs images (C, H, W), got input shape {input_shape}")
    if spec.width is not None:
        raise UserError(f"model.width is not supported by {spec.name}")
    return SqueezeNet(num_classes, input_shape[0], spec.dropout)
