"""The random controls that give a ticket meaning, for any model: random pruning and random reinitialization.

A tiny Transformer encoder (a model lottery does not ship); its mask comes from magnitude pruning.

    python examples/controls.py
"""

from __future__ import annotations

import torch
from torch import nn

import lottery


class TinyEncoder(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def main() -> None:
    torch.manual_seed(0)
    model = TinyEncoder()
    print(
        f"prunable: {len(lottery.prunable(model))} Linear weights, the last ({list(lottery.prunable(model))[-1]}) "
        "is the output layer"
    )
    mask = lottery.prune(model, fraction=0.7, scope="layerwise", rates={"output": 0.2})

    # Random pruning: the same number of kept weights per layer ('layerwise') or in total ('global'), at random.
    same_layers = lottery.random_mask_like(mask, seed=0)
    assert all(int(same_layers[n].sum()) == int(mask[n].sum()) for n in mask)
    anywhere = lottery.random_mask_like(mask, seed=0, scope="global")
    assert anywhere.kept() == mask.kept()
    print(
        f"IMP mask density {mask.density:.3f}; random masks {same_layers.density:.3f} (layerwise), "
        f"{anywhere.density:.3f} (global, per layer {min(anywhere.layer_densities().values()):.2f}.."
        f"{max(anywhere.layer_densities().values()):.2f})"
    )

    # Random reinitialization: fresh weights from a seed (each module's reset_parameters, under a forked RNG),
    # then the mask applied. The same seed gives the same weights; the global RNG is untouched.
    other = TinyEncoder()
    state = torch.random.get_rng_state()
    a = {k: v.clone() for k, v in lottery.reinitialize(model, mask, seed=7).state_dict().items()}
    b = lottery.reinitialize(other, mask, seed=7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(state, torch.random.get_rng_state())
    name = "encoder.layers.0.linear1.weight"
    print(f"reinitialized: {name} keeps {int((a[name] != 0).sum())} of {a[name].numel()} weights")


if __name__ == "__main__":
    main()
