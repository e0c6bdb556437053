"""Lottery tickets for a model lottery does not ship, through the Python API alone.

A small 1-D CNN (with BatchNorm) classifies synthetic sequences: does a motif occur anywhere in the sequence? The
script runs IMP with rewinding to iteration k and a random-pruning control (`lottery.imp`), then the data-order
stability and the linear-mode-connectivity barrier of the last IMP subnetwork and of its random-pruned control
(`lottery.distances`, `lottery.interpolate`, `lottery.barrier`). The training loop is ordinary PyTorch with AdamW;
its only lottery call is `lottery.attach`, and the script checks that every pruned weight is exactly zero after
training.

    python examples/sequence_tickets.py            # about 10 s on a laptop CPU
    python examples/sequence_tickets.py --quick    # a few seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lottery


class SequenceCNN(nn.Module):
    def __init__(self, channels: int = 4, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(channels, width, 5, padding=2),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 5, padding=2),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).amax(dim=2))  # max over positions: "the motif occurs somewhere"


def make_data(n: int, length: int = 32, seed: int = 0) -> TensorDataset:
    """Gaussian noise; label 1 sequences carry a fixed 4x6 motif at a random position."""
    g = torch.Generator().manual_seed(seed)
    motif = torch.randn(4, 6, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, 4, length, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    for i in torch.nonzero(y).flatten().tolist():
        p = int(torch.randint(0, length - 6, (1,), generator=g))
        x[i, :, p : p + 6] += 1.5 * motif
    return TensorDataset(x, y)


def trainer(data: TensorDataset, batch_size: int = 32, lr: float = 3e-3, data_seed: int = 0):
    """train_fn(model, mask, start, end) for lottery.imp: AdamW, the batch of iteration t a function of t and
    `data_seed` alone (a fresh permutation per epoch), so training resumed at k continues exactly."""
    x, y = data.tensors
    per_epoch = len(x) // batch_size

    def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(t, per_epoch)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(data_seed * 100_003 + epoch))
        idx = order[i * batch_size : (i + 1) * batch_size]
        return x[idx], y[idx]

    def train_fn(model: nn.Module, mask: lottery.Mask, start: int, end: int) -> float:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
        lottery.attach(mask, optimizer)  # the only lottery call: the mask holds in every step
        model.train()
        for t in range(start, end):
            inputs, targets = batch(t)
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    return train_fn


def assert_pruned_zero(model_or_weights, mask: lottery.Mask) -> None:
    weights = model_or_weights.state_dict() if isinstance(model_or_weights, nn.Module) else model_or_weights
    for name, m in mask.items():
        assert torch.equal(weights[name][~m], torch.zeros_like(weights[name][~m])), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer iterations")
    args = parser.parse_args()
    n, iterations, levels, rewind = (256, 60, 2, 10) if args.quick else (1024, 300, 4, 30)
    torch.manual_seed(0)
    train_data, test_data = make_data(n, seed=0), make_data(512, seed=1)
    evaluate = lottery.classification_metrics(DataLoader(test_data, batch_size=256))
    model = SequenceCNN()
    print("prunable:", lottery.prunable(model))

    levels_ = list(
        lottery.imp(
            model,
            trainer(train_data),
            levels=levels,
            iterations=iterations,
            rewind=rewind,
            fraction=0.4,
            scope="layerwise",
            rates={"output": 0.2},
            controls=["random_prune"],
        )
    )
    print(f"\n{'level':>5} {'density':>8} {'IMP error %':>12} {'random-pruned error %':>22}")
    for level in levels_:
        model.load_state_dict(level.final)
        imp_error = evaluate(model)["error"]
        control = level.controls.get("random_prune_seed0")
        random_error = ""
        if control is not None:
            model.load_state_dict(control.final)
            random_error = f"{evaluate(model)['error']:.1f}"
            assert_pruned_zero(control.final, control.mask)
        assert_pruned_zero(level.final, level.mask)
        print(f"{level.level:>5} {level.mask.density:>8.3f} {imp_error:>12.1f} {random_error:>22}")

    # Data-order stability and instability of the last level and of its random-pruned control: two copies of
    # m ⊙ W_k trained from k with different data orders.
    last = levels_[-1]
    bn_loader = DataLoader(train_data, batch_size=64)
    print(
        f"\nat {100 * last.mask.density:.1f}% remaining, copies trained from iteration {rewind} with two data orders:"
    )
    for name, run in (("IMP", last), ("random pruning", last.controls["random_prune_seed0"])):
        copies = []
        for seed in (1, 2):  # one line per copy: m ⊙ W_k trained from k with the mask held in every step
            copy = lottery.train_subnetwork(
                model, run.mask, trainer(train_data, data_seed=seed), start=rewind, end=iterations, weights=run.start
            )
            assert_pruned_zero(copy, run.mask)  # masks hold under AdamW
            copies.append(copy)
        d = lottery.distances(copies[0], copies[1], run.mask)
        curve = lottery.interpolate(
            copies[0], copies[1], evaluate, points=5 if args.quick else 11, batchnorm_loader=bn_loader
        )
        print(
            f"  {name:>14}: L2 distance {d['l2']:.3f}, angle {d['angle_degrees']:.1f} deg, "
            f"barrier {lottery.barrier(curve):.2f} points (errors along the path: "
            + ", ".join(f"{e:.1f}" for e in curve["error"])
            + ")"
        )


if __name__ == "__main__":
    main()
