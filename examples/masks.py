"""Masks for your own model: which weights are prunable, pruning, masks that hold in your optimizer, saving.

A two-layer MLP on a tabular TensorDataset, trained by a plain AdamW loop.

    python examples/masks.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lottery


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 20)
    y = (x[:, :5].sum(1) > 0).long()  # tabular: 20 features, 2 classes
    data = TensorDataset(x, y)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))

    print(lottery.prunable(model))  # {'0.weight': 'fc', '2.weight': 'output'}: biases never
    print(lottery.prunable(model, kinds=["fc"]))  # overridable by kinds, names, exclude= or where=

    mask = lottery.Mask.ones(model)
    mask = lottery.prune(model, mask, fraction=0.5, scope="global")  # drop the smallest half
    mask = lottery.prune(model, mask, fraction=0.2, scope="layerwise", rates={"output": 0.1})
    print(f"density {mask.density:.3f}, per layer {mask.layer_densities()}")
    mask.apply_(model)  # zero the pruned weights now

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    handle = lottery.attach(mask, optimizer, model=model)  # ...and after every step, whatever the optimizer
    for epoch in range(3):
        for inputs, targets in DataLoader(data, batch_size=64, shuffle=True):
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}")
    weights = model.state_dict()
    for name, m in mask.items():
        assert torch.equal(weights[name][~m], torch.zeros_like(weights[name][~m]))  # exactly zero
        state = optimizer.state[dict(model.named_parameters())[name]]
        assert all(torch.equal(v[~m], torch.zeros_like(v[~m])) for k, v in state.items() if k != "step")
    handle.remove()  # detach (attach also works as a context manager)

    one_shot = lottery.prune(model.state_dict(), mask, density=0.1)  # a state dict works too; straight to 10%
    print(f"one shot to density {one_shot.density:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mask.safetensors"
        mask.save(path, metadata={"note": "MLP, two levels"})  # keyed by state_dict names
        again = lottery.Mask.load(path)
        assert list(again) == list(mask) and all(torch.equal(again[n], mask[n]) for n in mask)
        print("saved and loaded:", again.metadata["note"])


if __name__ == "__main__":
    main()
