"""A plugin module: a model, a dataset and a loss of your own, by name in lottery's specs.

lottery run --import examples/plugins/tabular_plugin.py examples/plugins/tabular.toml
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from lottery.plugins import register_dataset, register_loss, register_model


@register_model("tabular_mlp")
def tabular_mlp(input_shape, num_classes, hidden=64, depth=2):
    """Any nn.Module: Linear and Conv weights are prunable, the last Linear is the output layer."""
    layers, width = [], input_shape[0]
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


@register_dataset("two_moons_table")
def two_moons_table(rows=2000, noise=0.2, extra_features=6, seed=0):
    """Two interleaved half-moons plus noise features: tensors on the CPU; lottery normalises them per feature,
    holds out dataset.validation_size rows for validation and moves everything to the device."""
    g = torch.Generator().manual_seed(seed)

    def sample(n):
        y = torch.randint(2, (n,), generator=g)
        angle = torch.rand(n, generator=g) * torch.pi
        x = torch.stack([torch.cos(angle) + y * 1.0, torch.sin(angle) * (1 - 2 * y) + y * 0.5], 1)
        x = x + noise * torch.randn(n, 2, generator=g)
        return torch.cat([x, torch.randn(n, extra_features, generator=g)], 1), y

    return {"train": TensorDataset(*sample(rows)), "test": TensorDataset(*sample(rows // 4)), "num_classes": 2}


@register_loss("focal")
def focal(output, target, reduction="mean", gamma=2.0):
    """Focal loss; like torch.nn.functional losses, reduction is 'mean', 'sum' or 'none' (one per example)."""
    log_p = F.log_softmax(output, 1).gather(1, target[:, None])[:, 0]
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()
