"""ResNet-18/34/50 for ImageNet (He et al. 2016, Table 1), as torchvision's reference `resnet18/34/50`.

A 7x7 stride-2 conv (64) + BN + ReLU, a 3x3 stride-2 max pool, four stages (64, 128, 256, 512 filters; basic
blocks for 18/34, bottlenecks with 4x expansion for 50, the stride in the bottleneck's 3x3 conv as in
torchvision's "v1.5"), global average pooling and one linear output layer `fc`. Parameter names and shapes are
torchvision's, so `model.load_state_dict(torchvision_resnet.state_dict())` works (ResNet-50: 25,557,032
parameters for 1000 classes, the papers' 25.5M).
"""

from __future__ import annotations

from torch import Tensor, nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.plugins import register_model
from lottery.spec import ModelSpec

LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, planes * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ImageNetResNet(Network):
    def __init__(self, depth: int, num_classes: int = 1000, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        if depth not in LAYERS:
            raise UserError(f"ImageNet ResNet depth must be one of {sorted(LAYERS)}, got {depth}")
        kind, counts = LAYERS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        current = width
        for stage, count in enumerate(counts):
            planes, blocks = width * 2**stage, []
            for index in range(count):
                blocks.append(block(current, planes, 2 if stage > 0 and index == 0 else 1))
                current = planes * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(current, num_classes)
        self.output_layer = "fc"

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


@register_model("resnet50", pattern=r"resnet(18|34|50)")
def build_resnet_imagenet(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> ImageNetResNet:
    """'resnet50' -> depth 50; `model.width` is the first stage's width (default 64)."""
    if spec.dropout:
        raise UserError(f"model.dropout is not supported by {spec.name} (allowed: 0)")
    if len(input_shape) != 3:
        raise UserError(f"{spec.name} needs images (C, H, W), got input shape {input_shape}")
    return ImageNetResNet(int(spec.name[6:]), num_classes, input_shape[0], spec.width or 64)
