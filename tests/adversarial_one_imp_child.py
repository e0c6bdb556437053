"""A process of tests/test_adversarial_one_imp.py's two-process test: `lottery.imp(directory=STORE)` of a tiny MLP,
whose train_fn appends each run's (density, start) to $LOTTERY_TEST_CALLS and, with $LOTTERY_TEST_HOLD (a folder),
touches HOLD/started at its first run and waits until HOLD/go exists (so the other process starts while this one
holds the dense run's lock). Paths come from the environment, read at run time: the fingerprint is the same in both
processes."""

import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

import lottery

X = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(1))


def train_fn(model, mask, start, end):
    with open(os.environ["LOTTERY_TEST_CALLS"], "a") as f:
        f.write(f"{mask.density:.3f} {start}\n")
    hold = os.environ.get("LOTTERY_TEST_HOLD")
    if hold:
        Path(hold, "started").touch()
        for _ in range(600):  # bounded: 60 s
            if Path(hold, "go").exists():
                break
            time.sleep(0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(start, end):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()
    return {"accuracy": (model(X).argmax(1) == Y).float().mean().item()}


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
levels = list(lottery.imp(model, train_fn, levels=1, iterations=3, rewind=1, directory=sys.argv[1]))
print(" ".join(f"{level.final['2.weight'].sum().item():.6f}" for level in levels))
