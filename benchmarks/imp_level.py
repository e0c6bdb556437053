"""One IMP level end to end: ours (`lottery.experiments.imp.run_level`) vs the same level in the reference pipeline.

The level: LeNet-300-100 on Fashion-MNIST (the `lenet_300_100` preset: Adam 1.2e-3, batch 60, layerwise
pruning 20%, output 10%), rewinding to iteration 0, trained for --epochs epochs with evaluation on the
validation (5,000) and test (10,000) sets every 100 iterations. Ours runs `run_level` for level 1 after the
dense run exists (pruning, rewinding, training with the mask enforced, evaluation, every artifact written).
The reference does the same work the way the field's reference framework does: per-sample PIL images
through a `DataLoader` (see data_path.py) for training and evaluation (batch 60; mask enforced by masking
gradients and weights around each step), the same pruning function and rewound weights.

    python benchmarks/imp_level.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import _common
import data_path
from lottery.experiments import imp
from lottery.experiments.context import Context
from lottery.models.lenet import LeNet
from lottery.pruning import Mask, attach, prune
from lottery.spec import resolve
from lottery.store import RunDir, layout
from lottery.training import Runtime


def reference_level(
    ctx: Context, rdir: RunDir, loaders: tuple[DataLoader, DataLoader, DataLoader], epochs: int, eval_every: int = 100
) -> None:
    """Level 1 in the reference framework's style: prune, rewind, DataLoader-fed training and evaluation."""
    dense = layout.dense(rdir)
    final, start = dense.read_tensors("final.safetensors"), dense.read_tensors(layout.snapshot(0))
    mask = prune(final, Mask.ones(ctx.model(0)), ctx.layer_kinds, ctx.spec.pruning)
    model = LeNet((1, 28, 28), 10)
    model.load_state_dict(mask.apply_to(start))
    optimizer = torch.optim.Adam(model.parameters(), lr=ctx.spec.training.lr)
    attach(mask, optimizer, model=model, remask_weights=True)  # masked gradients before, weights after each step
    train_loader, val_loader, test_loader = loaders
    iteration = 0
    for _ in range(epochs):
        for x, y in train_loader:
            if iteration % eval_every == 0:
                data_path.dataloader_eval(model, val_loader)
                data_path.dataloader_eval(model, test_loader)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
    data_path.dataloader_eval(model, val_loader)
    data_path.dataloader_eval(model, test_loader)


def main() -> None:
    args = _common.arguments(__doc__.splitlines()[0], epochs=(int, 1, "training epochs per level"))
    _common.header("one IMP level end to end vs the reference pipeline")
    epochs = args.epochs
    spec, _ = resolve(
        preset="lenet_300_100",
        overrides=[f"training.training_steps={epochs}ep", "training.eval_every=100it", "imp.levels=1"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(spec, Runtime(progress=False))
        rdir = RunDir(Path(tmp) / "replicate_0")
        imp.train_dense(ctx, rdir, 0)  # level 0, once (not timed)
        print(f"data: {spec.dataset.name}, {len(ctx.data.train_x)} training examples; {ctx.schedule.end} iterations")

        train_u8, train_labels, test_u8, test_labels = data_path.fashion_mnist_uint8(ctx.data)
        mean, std = [float(train_u8.mean()) / 255], [float((train_u8 / 255.0).std())]
        batch = spec.training.batch_size
        loaders = (
            data_path.loader(data_path.PILDataset(train_u8, train_labels, mean, std, False), batch, True, 0),
            data_path.loader(
                data_path.PILDataset(
                    train_u8[: len(ctx.data.val_x)], train_labels[: len(ctx.data.val_x)], mean, std, False
                ),
                batch,
                False,
                0,
            ),
            data_path.loader(data_path.PILDataset(test_u8, test_labels, mean, std, False), batch, False, 0),
        )

        def ours() -> None:
            shutil.rmtree(layout.level(rdir, 0, 1).path, ignore_errors=True)
            imp.run_level(ctx, rdir, 0, 0, 1)

        times = _common.interleave(
            {"reference": lambda: reference_level(ctx, rdir, loaders, epochs), "ours": ours},
            1 if args.quick else 2,
            warmup=0,
        )
    ref, mine = times["reference"], times["ours"]
    print(
        f"one IMP level ({epochs} epoch(s), evaluation every 100 iterations), medians of {len(mine.cpu)}:\n"
        f"  CPU time  reference {ref.median():.2f} s  ours {mine.median():.2f} s  -> "
        f"{ref.median() / mine.median():.1f}x\n"
        f"  wall      reference {ref.median(False):.2f} s  ours {mine.median(False):.2f} s  -> "
        f"{ref.median(False) / mine.median(False):.1f}x"
    )


if __name__ == "__main__":
    main()
