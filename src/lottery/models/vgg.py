"""VGG-11/13/16/19 for CIFAR with BatchNorm, as in open_lth and the "Stabilizing" / LMC papers.

3x3 conv (with bias) + BatchNorm + ReLU modules and four 2x2 max-pools, then a global average pool and one
linear output layer (512 -> classes). On 32x32 inputs the last feature map is 2x2, so the global average pool
is exactly open_lth's AvgPool2d(2); on 28x28 inputs (Fashion-MNIST) it is 1x1 and the pool is the identity.
VGG-19 for CIFAR-10 has 20.04M parameters.
"""

from __future__ import annotations

from torch import Tensor, nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.models.conv import image_shape, scale
from lottery.plugins import register_model
from lottery.spec import ModelSpec

POOL = "M"
PLANS: dict[int, tuple[int | str, ...]] = {
    11: (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512),
    13: (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512),
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512),
    19: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512),
}


class ConvBN(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x)).relu()


class VGG(Network):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, plan: tuple[int | str, ...]) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape)
        layers: list[nn.Module] = []
        for item in plan:
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            else:
                layers.append(ConvBN(channels, int(item)))
                channels = int(item)
        if height == 0 or width == 0:
            raise UserError(f"input shape {tuple(input_shape)} is too small for VGG's {plan.count(POOL)} max-pools")
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.output_layer = "fc"

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(x)).flatten(1))


@register_model("vgg19", pattern=r"vgg(11|13|16|19)")
def build_vgg(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """`model.width` replaces the first conv's 64 filters; 128, 256, 512 become 2W, 4W, 8W."""
    if spec.dropout:
        raise UserError(f"model.dropout is not supported by {spec.name} (allowed: 0)")
    plan = tuple(w if w == POOL else scale(int(w), 64, spec.width) for w in PLANS[int(spec.name[3:])])
    return VGG(input_shape, num_classes, plan)
