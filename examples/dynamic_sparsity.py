"""Dynamic sparsity in your own loop: RigL, SET and GMP on a small MLP, with any torch.optim optimizer.

`lottery.dynamic(model, optimizer, ...)` returns a handle; the loop stays `loss.backward(); optimizer.step()`.
The run is checkpointed halfway and resumed into a fresh model, optimizer and handle: it ends bit-identical.

    python examples/dynamic_sparsity.py
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

import lottery

STEPS = 200


def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch t of a synthetic 3-class problem (a function of t alone, so a resumed run sees the same data)."""
    g = torch.Generator().manual_seed(t)
    x = torch.randn(64, 20, generator=g)
    return x, (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()


def build() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, start: int, end: int) -> float:
    for t in range(start, end):
        x, y = batch(t)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = batch(10_000)
    return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    options = {
        "rigl": {"update_every": 20, "drop_fraction": 0.3, "stop": "75%"},
        "set": {"update_every": 20, "seed": 1},
        "gmp": {"start": "10%", "end": "70%", "every": 20},
    }
    for method, extra in options.items():
        model, optimizer = build()
        handle = lottery.dynamic(model, optimizer, method, density=0.1, total_steps=STEPS, **extra)
        accuracy = train(model, optimizer, 0, STEPS)
        moved = [round(u.get("moved", 0.0), 3) for u in handle.history[:3]]
        print(
            f"{method}: {len(handle.history)} updates, density {handle.mask.density:.3f}, "
            f"first moves {moved}, accuracy {accuracy:.3f}"
        )
        assert handle.mask.kept() == round(0.1 * handle.mask.total())  # exact, at every step
        handle.remove()

    # Kill-and-resume: checkpoint the model, the optimizer and the handle at step 100, continue elsewhere.
    model, optimizer = build()
    handle = lottery.dynamic(model, optimizer, "rigl", density=0.1, total_steps=STEPS, update_every=20)
    train(model, optimizer, 0, 100)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "dynamic": handle.state_dict()}
    checkpoint = copy.deepcopy(state)  # (state_dict()s share the live tensors; torch.save to a file also copies)
    train(model, optimizer, 100, STEPS)
    resumed_model, resumed_optimizer = build()
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed = lottery.dynamic(
        resumed_model,
        resumed_optimizer,
        "rigl",
        density=0.1,
        total_steps=STEPS,
        update_every=20,
        state=checkpoint["dynamic"],  # after loading the model's and optimizer's states
    )
    train(resumed_model, resumed_optimizer, 100, STEPS)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values()))
    print(f"resumed run bit-identical: {same}")
    assert same and resumed.history == handle.history


if __name__ == "__main__":
    main()
