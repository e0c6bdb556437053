"""The plain-PyTorch side of benchmarks/whole_run.py: IMP on LeNet-300-100 / Fashion-MNIST written the way one
would by hand (no `lottery` import), doing the work `lottery run` does for the same settings, network by network.

Data: the four IDX files read as uint8, the same 5,000-example validation split as lottery (randperm with seed 0,
sorted), each split converted to float32 / 255 and normalised in place with the training split's per-channel mean
and std. Networks: LeNet-300-100, Glorot-normal or Kaiming-normal weights from a seeded generator, zero biases.
Each epoch's order is lottery's (`lottery.seeding.derive("data_order", seed, epoch)`, re-derived here with NumPy's
SeedSequence as lottery does); the last partial batch is dropped. Every `--eval-every` iterations, and at the
start and the end, the validation and test sets are evaluated in batches of 2,000 under inference mode. IMP:
train the dense network (snapshot at the rewind iteration), then for each level prune (global or layerwise
magnitude over the surviving weights, `round(fraction * surviving)` removed, output layer at its own rate),
rewind to the snapshot and train the rest of the schedule with gradients and weights masked; controls of a level:
`random_reinit` (the level's mask on fresh random weights) and `random_prune` (random masks of the level's
per-layer counts on the rewound weights). Saves, per network: start weights, mask, final weights, metrics
(torch.save / json). Prints one JSON line of phase timings and peak RSS.

    python benchmarks/whole_run_plain.py --out /tmp/plain --optimizer sgd --lr 0.1 --batch 128 --epochs 2 \
        --levels 2 --eval-every epoch --strategy global
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

IMPORTED = time.perf_counter()
ROOT = Path("/usr/share/datasets/fashion-mnist")
PHASES: dict[str, float] = {"import": IMPORTED - START, "data": 0.0, "evaluate": 0.0, "save": 0.0}
WORK = {"steps": 0, "evaluated_examples": 0}  # what was computed (benchmarks/whole_run.py turns it into FLOPs)


def rss_mib(key: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def read_idx(name: str) -> torch.Tensor:
    with gzip.open(ROOT / f"{name}.gz", "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape.tolist()).copy())


def load(validation: int = 5000, subset: int | None = None) -> tuple[torch.Tensor, ...]:
    train_u8, train_y = read_idx("train-images-idx3-ubyte").unsqueeze(1), read_idx("train-labels-idx1-ubyte").long()
    test_u8, test_y = read_idx("t10k-images-idx3-ubyte").unsqueeze(1), read_idx("t10k-labels-idx1-ubyte").long()
    order = torch.randperm(len(train_u8), generator=torch.Generator().manual_seed(0))
    val_idx, train_idx = order[:validation].sort().values, order[validation:].sort().values[:subset]
    train_x, val_x, test_x = (x.float().div_(255) for x in (train_u8[train_idx], train_u8[val_idx], test_u8))
    mean, std = train_x.mean(dim=(0, 2, 3)).view(-1, 1, 1), train_x.std(dim=(0, 2, 3)).view(-1, 1, 1)
    for x in (train_x, val_x, test_x):
        x.sub_(mean).div_(std)
    return train_x, train_y[train_idx], val_x, train_y[val_idx], test_x, test_y


def derive(stream: int, *values: int) -> int:
    """lottery.seeding.derive, re-derived: NumPy's SeedSequence over (stream id, number of values, values)."""
    state = np.random.SeedSequence([stream, len(values), *values]).generate_state(2, np.uint32)
    return ((int(state[0]) << 31) ^ int(state[1])) % 2**63


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc2(self.fc1(x.flatten(1)).relu()).relu())


def build(seed: int, init: str) -> LeNet:
    model, generator = LeNet(), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (model.fc1, model.fc2, model.out):
            if init == "glorot_normal":
                nn.init.xavier_normal_(layer.weight, generator=generator)
            else:
                nn.init.kaiming_normal_(layer.weight, generator=generator)
            layer.bias.zero_()
    return model


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    began = time.perf_counter()
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), 2000):
        logits = model(x[i : i + 2000])
        loss += float(F.cross_entropy(logits, y[i : i + 2000], reduction="sum"))
        correct += int((logits.argmax(1) == y[i : i + 2000]).sum())
    model.train()
    PHASES["evaluate"] += time.perf_counter() - began
    WORK["evaluated_examples"] += len(x)
    return loss / len(x), correct / len(x)


def train(
    args: argparse.Namespace,
    data: tuple[torch.Tensor, ...],
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    seed: int,
    start: int,
    out: Path,
    snapshot: int | None = None,
) -> None:
    """Train from iteration `start` to the end with the weights masked; save start, mask, final, metrics."""
    train_x, train_y, val_x, val_y, test_x, test_y = data
    per_epoch = len(train_x) // args.batch
    end, every = args.epochs * per_epoch, per_epoch if args.eval_every == "epoch" else int(args.eval_every)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():
            params[name].mul_(m)
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    out.mkdir(parents=True)
    saving = time.perf_counter()
    torch.save(model.state_dict(), out / "start.pt")
    torch.save(masks, out / "mask.pt")
    metrics, order, epoch = [], None, -1
    PHASES["save"] += time.perf_counter() - saving
    for t in range(start, end + 1):
        if t == snapshot:
            saving = time.perf_counter()
            torch.save(model.state_dict(), out / f"snapshot_{t}.pt")
            PHASES["save"] += time.perf_counter() - saving
        if t % every == 0 or t in (start, end):
            val, test = evaluate(model, val_x, val_y), evaluate(model, test_x, test_y)
            metrics.append({"iteration": t, "val": val, "test": test})
        if t == end:
            break
        e, position = divmod(t, per_epoch)
        if e != epoch:
            generator = torch.Generator().manual_seed(derive(1, seed, e))
            order, epoch = torch.randperm(len(train_x), generator=generator).to(train_x.device), e
        index = order[position * args.batch : (position + 1) * args.batch]
        x, y = train_x.index_select(0, index), train_y.index_select(0, index)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for name, m in masks.items():
            params[name].grad.mul_(m)
        optimizer.step()
        WORK["steps"] += 1
        with torch.no_grad():
            for name, m in masks.items():
                params[name].mul_(m)
    saving = time.perf_counter()
    torch.save(model.state_dict(), out / "final.pt")
    (out / "metrics.json").write_text(json.dumps(metrics))
    PHASES["save"] += time.perf_counter() - saving


def prune(args: argparse.Namespace, weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict:
    """Remove round(fraction * surviving) surviving weights of smallest |w|: over all layers (global) or per layer
    (layerwise; the output layer at --output-fraction)."""
    if args.strategy == "global":
        groups = [(list(masks), args.fraction)]
    else:
        groups = [([n], args.output_fraction if n.startswith("out.") else args.fraction) for n in masks]
    new = {n: m.clone() for n, m in masks.items()}
    for names, fraction in groups:
        alive = torch.cat([masks[n].reshape(-1).bool() for n in names])
        values = torch.cat([weights[n].detach().reshape(-1).double().abs() for n in names])
        candidates = alive.nonzero().reshape(-1)
        count = int(np.floor(fraction * len(candidates) + 0.5))
        alive[candidates[torch.sort(values[candidates], stable=True).indices[:count]]] = False
        for n, part in zip(names, alive.split([masks[n].numel() for n in names]), strict=True):
            new[n] = part.reshape(masks[n].shape).float()
    return new


def random_masks(masks: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    generator, out = torch.Generator().manual_seed(seed), {}
    for name, m in masks.items():
        keep = torch.randperm(m.numel(), generator=generator)[: int(m.sum())]
        out[name] = torch.zeros(m.numel()).index_fill_(0, keep, 1.0).reshape(m.shape).to(m.device)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--eval-every", default="epoch", help="iterations, or 'epoch'")
    parser.add_argument("--strategy", choices=("global", "layerwise"), default="global")
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--output-fraction", type=float, default=0.1)
    parser.add_argument("--rewind", type=int, default=0, help="rewind iteration")
    parser.add_argument("--init", default="kaiming_normal", choices=("kaiming_normal", "glorot_normal"))
    parser.add_argument("--replicates", type=int, default=1)
    parser.add_argument("--controls", default="", help="comma-separated: random_reinit,random_prune")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training examples")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rss_import = rss_mib()
    began = time.perf_counter()
    device = torch.device(args.device)
    data = tuple(t.to(device) for t in load(subset=args.subset))
    PHASES["data"] = time.perf_counter() - began
    rss_data = rss_mib()
    controls = [c for c in args.controls.split(",") if c]
    for r in range(args.replicates):
        model = build(r, args.init).to(device)
        masks = {n: torch.ones_like(p) for n, p in model.named_parameters() if n.endswith("weight")}
        root = args.out / f"replicate_{r}"
        train(args, data, model, masks, r, 0, root / "level_0", snapshot=args.rewind)
        rewound = torch.load(root / "level_0" / f"snapshot_{args.rewind}.pt", map_location=device)
        for level in range(1, args.levels + 1):
            masks = prune(args, dict(model.named_parameters()), masks)
            model = build(r, args.init).to(device)
            model.load_state_dict(rewound)
            train(args, data, model, masks, r, args.rewind, root / f"level_{level}")
            for control in controls:
                if control == "random_reinit":
                    other = build(derive(20, 0, r, r, level), args.init).to(device)
                    control_masks = masks
                else:
                    other = build(r, args.init).to(device)
                    other.load_state_dict(rewound)
                    control_masks = random_masks(masks, derive(21, 0, r, r, level))
                train(args, data, other, control_masks, r, args.rewind, root / f"level_{level}_{control}")
    total = time.perf_counter() - START
    PHASES["train"] = total - sum(PHASES.values())  # the rest: training steps, pruning, model building
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss = {"after_import": rss_import, "after_data": rss_data, "peak": peak}
    if device.type == "cuda":
        rss["cuda_peak_allocated"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps({"phases_s": {**PHASES, "total": total}, "rss_mib": rss, "work": {**WORK, "batch": args.batch}}))


if __name__ == "__main__":
    main()
