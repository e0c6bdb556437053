"""IMP with rewinding around your own training loop: a tabular TensorDataset, an MLP, a DataLoader and SGD.

`lottery.imp` trains the dense network once (saving W_k on the way), prunes, rewinds the survivors to W_k and
trains again, level after level, calling your `train_fn(model, mask, start, end)`. It holds each level's mask in
your optimizer for you. With `directory=` every run is stored (atomic, checksummed files) and a second call reads
the finished levels back instead of training them.

    python examples/imp_tabular.py
"""

from __future__ import annotations

import tempfile

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader, TensorDataset

import lottery

BATCH = 32


def make_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    y = (x[:, 0] * x[:, 1] + x[:, 2] > 0).long()
    return TensorDataset(x, y)


def train_fn(model: nn.Module, mask: lottery.Mask, start: int, end: int) -> dict:
    """Iterations start..end of SGD with momentum. The batches of iteration t depend on t alone (epoch e is
    shuffled by a generator seeded with e), so a run restarted at k continues the dense run's data order."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # imp attaches the mask to it
    per_epoch = len(TRAIN) // BATCH
    t = start
    while t < end:
        epoch, skip = divmod(t, per_epoch)
        order = torch.Generator().manual_seed(epoch)
        for i, (x, y) in enumerate(DataLoader(TRAIN, BATCH, shuffle=True, generator=order, drop_last=True)):
            if i < skip:
                continue
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            t += 1
            if t == end:
                break
    with torch.no_grad():
        x, y = TEST.tensors
        return {"test_accuracy": float((model(x).argmax(1) == y).float().mean()), "iterations": end - start}


TRAIN, TEST = make_data(1024, 0), make_data(1024, 1)


def make_model() -> nn.Module:
    torch.manual_seed(0)  # W_0: part of what identifies the experiment in the store
    return nn.Sequential(nn.Linear(12, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))


def main() -> None:
    settings = dict(levels=3, iterations="4ep", iterations_per_epoch=len(TRAIN) // BATCH, rewind=20, fraction=0.5)
    with tempfile.TemporaryDirectory() as store:
        for level in lottery.imp(make_model(), train_fn, directory=store, controls=["random_reinit"], **settings):
            control = level.controls.get("random_reinit_seed0")
            print(
                f"level {level.level}: density {level.mask.density:.3f}, test accuracy "
                f"{level.result['test_accuracy']:.3f}"
                + (f" (random reinit {control.result['test_accuracy']:.3f})" if control else "")
            )
        steps = []  # optimizer steps taken by the second call: none, every run is read back from the store
        hook = register_optimizer_step_post_hook(lambda *args: steps.append(1))
        again = list(lottery.imp(make_model(), train_fn, directory=store, controls=["random_reinit"], **settings))
        hook.remove()
        assert not steps
        print(f"second call: {len(again)} levels read back from {again[0].experiment}, none retrained")
        print(f"the same experiment for the CLI: lottery show {again[0].experiment}")


if __name__ == "__main__":
    main()
