"""A RigL run in a user's own loop that checkpoints every 10 steps; run by tests/test_dynamic.py.

usage: dynamic_resume_script.py DIR full|kill|resume. `kill` sends itself SIGKILL after step 37 (its last checkpoint
is at step 30); `resume` continues from DIR/checkpoint.pt. Both write DIR/<mode>.pt at the end."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

import lottery
from lottery.seeding import generator

STEPS = 60
torch.set_num_threads(1)


def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator("data_order", 7, t)  # the batch of step t depends on t alone
    return torch.randn(32, 12, generator=g), torch.randint(0, 4, (32,), generator=g)


def main(directory: Path, mode: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    handle = lottery.dynamic(model, optimizer, "rigl", density=0.3, total_steps=STEPS, update_every=5, seed=3)
    start = 0
    checkpoint = directory / "checkpoint.pt"
    if mode == "resume":
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        handle.load_state_dict(state["dynamic"])
        start = state["step"]
    for t in range(start, STEPS):
        if t % 10 == 0 and mode != "full":
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "dynamic": handle.state_dict()}
            torch.save({**state, "step": t}, directory / "partial.pt")
            os.replace(directory / "partial.pt", checkpoint)
        x, y = batch(t)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if mode == "kill" and t == 37:
            os.kill(os.getpid(), signal.SIGKILL)
    out = {"model": model.state_dict(), "mask": dict(handle.mask), "history": handle.history, "step": handle.step}
    torch.save(out, directory / f"{mode}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
