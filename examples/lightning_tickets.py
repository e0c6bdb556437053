"""Lottery tickets through PyTorch Lightning's own Trainer (`pip install 'lottery[lightning]'`).

A LightningModule (an MLP on synthetic data) goes through `lottery.imp` with `lottery.integrations.lightning.
train_fn`: IMP with rewinding to iteration k and a random-pruning control, every run a `trainer.fit`. Then the
data-order stability of the last level and of its control: two copies of m ⊙ W_k trained from k by Lightning with
two data orders (`seed=`), their distance and the error barrier on the linear path between them. Every pruned
weight is checked to be exactly zero after every fit.

    python examples/lightning_tickets.py            # about a minute on a laptop CPU
    python examples/lightning_tickets.py --quick    # a few seconds per fit (the test suite runs this)
"""

from __future__ import annotations

import argparse
import logging
import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lottery
from lottery.integrations import lightning as lottery_lightning


class Classifier(pl.LightningModule):
    """An MLP; AdamW and a linear LR decay over `total` iterations, stepped per iteration (`interval: step`)."""

    def __init__(self, total: int, features: int = 16, width: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes)
        )
        self.total = total  # T: a schedule over the whole run, not over trainer.max_steps (= end - start)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):  # noqa: ANN201
        optimizer = torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=1e-2)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / (self.total + 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def make_data(n: int, seed: int) -> TensorDataset:
    """Gaussian inputs; the class is which of 4 fixed random directions the input points most along."""
    directions = torch.randn(16, 4, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x @ directions).argmax(1))


def assert_pruned_zero(weights: dict[str, torch.Tensor], mask: lottery.Mask) -> None:
    for name, m in mask.items():
        assert bool((weights[name][~m] == 0).all()), f"{name}: a pruned weight is not zero"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less data, fewer iterations and levels")
    args = parser.parse_args()
    n, iterations, levels, rewind = (256, 30, 1, 5) if args.quick else (2048, 400, 5, 40)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # Lightning's banner at every fit
    warnings.filterwarnings("ignore", module="lightning")
    train = DataLoader(make_data(n, 0), batch_size=32, shuffle=True)
    test = DataLoader(make_data(512, 1), batch_size=512)
    quiet = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False, "logger": False}

    torch.manual_seed(0)
    model = Classifier(iterations)
    print("prunable:", lottery.prunable(model))
    fn = lottery_lightning.train_fn(train, test, **quiet)
    found = []
    print(f"\n{'level':>5} {'density':>8} {'IMP accuracy':>13} {'random-pruned accuracy':>23}")
    for level in lottery.imp(
        model, fn, levels=levels, iterations=iterations, rewind=rewind, fraction=0.5, controls=["random_prune"]
    ):
        assert_pruned_zero(level.final, level.mask)
        control = level.controls.get("random_prune_seed0")
        random_acc = ""
        if control is not None:
            assert_pruned_zero(control.final, control.mask)
            random_acc = f"{control.result['val_acc']:.3f}"
        print(f"{level.level:>5} {level.density:>8.3f} {level.result['val_acc']:>13.3f} {random_acc:>23}")
        found.append(level)

    # Data-order stability of the last level and of its random-pruned control: two copies of m ⊙ W_k trained
    # from k by Lightning, with data orders from seeds 1 and 2.
    last = found[-1]
    x, y = test.dataset.tensors

    def evaluate(net: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"error": 100.0 * float((net(x).argmax(1) != y).float().mean())}

    print(
        f"\nat {100 * last.density:.1f}% of the weights, copies trained from iteration {rewind} with two data orders:"
    )
    for name, run in (("IMP", last), ("random pruning", last.controls["random_prune_seed0"])):
        copies = []
        for seed in (1, 2):
            copy = Classifier(iterations)
            copy.load_state_dict(run.start)
            lottery_lightning.train_fn(train, seed=seed, **quiet)(copy, run.mask, rewind, iterations)
            assert_pruned_zero(copy.state_dict(), run.mask)
            copies.append(copy)
        d = lottery.distances(copies[0], copies[1], run.mask)
        curve = lottery.interpolate(copies[0], copies[1], evaluate, points=5 if args.quick else 11)
        print(
            f"  {name:>14}: L2 distance {d['l2']:.3f}, barrier {lottery.barrier(curve):.2f} points "
            f"(errors along the path: {', '.join(f'{e:.1f}' for e in curve['error'])})"
        )


if __name__ == "__main__":
    main()
