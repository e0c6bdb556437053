"""The peer figure: open_lth (the field's reference implementation) vs `lottery run` on the 2-level IMP workload.

Both are whole processes, interleaved A B / B A over --repeats rounds, each in fresh output folders; wall, CPU
and peak RSS from `os.wait4` (benchmarks/whole_run.py). The work: LeNet-300-100 on Fashion-MNIST, SGD 0.1, batch
128, global magnitude pruning 20% per level, 2 levels after the dense network, 2 epochs per level, test evaluation
every epoch. open_lth: `open_lth.py lottery --default_hparams=mnist_lenet_300_100 --levels=2
--training_steps=2ep` (its defaults otherwise: Kaiming-normal init, `sparse_global` 20%, the output layer
`fc.weight` not pruned, per-sample PIL `DataLoader`, `num_workers` 0). lottery: whole_run.py's `imp2` command.

open_lth imports torchvision, which has no CPU build here: this script writes a minimal stand-in package
`torchvision` into a temporary folder on open_lth's PYTHONPATH (nothing else), with torchvision's own code for
what open_lth's LeNet/MNIST path runs (`transforms.Compose`, `ToTensor`, `Normalize`, as in benchmarks/data_path.py)
and `datasets.MNIST` reading the Fashion-MNIST IDX files (the same 60,000 + 10,000 images lottery trains on);
classes open_lth only names at import (CIFAR-10, ImageNet ResNets) are empty stand-ins. open_lth itself is not
part of this repository: give a checkout of it (e.g. `git clone https://github.com/facebookresearch/open_lth`).
The script runs a temporary copy of it with two edits for today's torch and NumPy (`COMPATIBILITY`, printed):
its unused `DistributedDataParallel` wrapper no longer has a consistent MRO under torch 2, and NumPy 2 removed
`np.product` (its learning-rate schedule's product of factors; `np.prod` is the same function).

    python benchmarks/open_lth_peer.py --open-lth /tmp/open_lth --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import _common
import whole_run

SHIM = {
    "__init__.py": "from . import datasets, models, transforms  # noqa: F401\n__version__ = '0.0-shim'\n",
    "transforms.py": '''
import numpy as np
import torch
from PIL import Image


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToTensor:
    """torchvision.transforms.functional.to_tensor for PIL images (its code path for mode 'L')."""

    def __call__(self, pic):
        mode_to_nptype = {"I": np.int32, "I;16": np.int16, "F": np.float32}
        img = torch.from_numpy(np.array(pic, mode_to_nptype.get(pic.mode, np.uint8), copy=True))
        if pic.mode == "1":
            img = 255 * img
        img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
        img = img.permute((2, 0, 1)).contiguous()
        return img.to(dtype=torch.get_default_dtype()).div(255) if isinstance(img, torch.ByteTensor) else img


class Normalize(torch.nn.Module):
    """torchvision.transforms.Normalize (not in place: the tensor is cloned, as torchvision does)."""

    def __init__(self, mean, std, inplace=False):
        super().__init__()
        self.mean, self.std, self.inplace = list(mean), list(std), inplace

    def forward(self, tensor):
        if not self.inplace:
            tensor = tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        if mean.ndim == 1:
            mean = mean.view(-1, 1, 1)
        if std.ndim == 1:
            std = std.view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)


class _NotInThisShim:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} is not part of this torchvision stand-in")


class RandomHorizontalFlip(_NotInThisShim): pass
class RandomCrop(_NotInThisShim): pass
class RandomResizedCrop(_NotInThisShim): pass
class Resize(_NotInThisShim): pass
class CenterCrop(_NotInThisShim): pass
class RandomRotation(_NotInThisShim): pass
''',
    "datasets.py": '''
import gzip
import os

import numpy as np
import torch

ROOT = os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


def _idx(stem):
    with gzip.open(os.path.join(ROOT, stem + ".gz"), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).tolist()
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy())


class MNIST:
    """torchvision.datasets.MNIST's .data (uint8 N x 28 x 28) and .targets (int64), from Fashion-MNIST's IDX files."""

    def __init__(self, root, train=True, download=False, **kwargs):
        prefix = "train" if train else "t10k"
        self.data = _idx(f"{prefix}-images-idx3-ubyte")
        self.targets = _idx(f"{prefix}-labels-idx1-ubyte").long()


class CIFAR10:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("CIFAR10 is not part of this torchvision stand-in")
''',
    "models/__init__.py": '''
import torch

from . import resnet  # noqa: F401


class ResNet(torch.nn.Module):
    """Named by open_lth's ImageNet ResNets at import; not used by the LeNet / MNIST path."""
''',
    "models/resnet.py": "class BasicBlock: pass\nclass Bottleneck: pass\n",
}


OPEN_LTH_ARGS = ["lottery", "--default_hparams=mnist_lenet_300_100", "--levels=2", "--training_steps=2ep"]
COMPATIBILITY = {  # file -> (text, replacement) in the temporary copy of open_lth
    "models/base.py": (
        "class DistributedDataParallel(Model, torch.nn.parallel.DistributedDataParallel):",
        "class DistributedDataParallel(DataParallel):  # benchmark copy: torch 2 MRO (unused on one CPU)",
    ),
    "training/optimizers.py": ("np.product(", "np.prod("),
}


def compatible_copy(checkout: Path, target: Path) -> Path:
    """A copy of open_lth (without .git) with the `COMPATIBILITY` edits, each checked to apply."""
    shutil.copytree(checkout, target, ignore=shutil.ignore_patterns(".git"))
    for name, (text, replacement) in COMPATIBILITY.items():
        path = target / name
        source = path.read_text()
        if text not in source:
            raise SystemExit(f"open_lth's {name} no longer contains {text!r}: update COMPATIBILITY")
        path.write_text(source.replace(text, replacement))
        print(f"open_lth copy: {name}: {text!r} -> {replacement!r}")
    return target


def write_shim(root: Path) -> Path:
    for name, text in SHIM.items():
        path = root / "torchvision" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open-lth", type=Path, required=True, help="a checkout of facebookresearch/open_lth")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both (default 1; 0: all cores)")
    args = parser.parse_args()
    checkout = args.open_lth.resolve()
    if not (checkout / "open_lth.py").is_file():
        raise SystemExit(f"{checkout} holds no open_lth.py (give a checkout of facebookresearch/open_lth)")
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOTTERY_")}
    if args.threads:
        base["OMP_NUM_THREADS"] = base["MKL_NUM_THREADS"] = str(args.threads)
    _common.header("open_lth vs lottery run: 2-level IMP, LeNet-300-100 / Fashion-MNIST")
    print(
        f"open_lth: {checkout} (commit {_commit(checkout)}); threads per process: {args.threads or 'default'}; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    results: dict[str, list[dict]] = {"open_lth": [], "lottery": []}
    with tempfile.TemporaryDirectory(prefix="open_lth_shim_") as shim:
        write_shim(Path(shim))
        checkout = compatible_copy(checkout, Path(shim) / "open_lth")
        for round_ in range(args.repeats):
            order = ["open_lth", "lottery"] if round_ % 2 == 0 else ["lottery", "open_lth"]
            for side in order:
                with tempfile.TemporaryDirectory(prefix="peer_") as tmp:
                    if side == "lottery":
                        env = {**base, "PYTHONPATH": str(whole_run.SRC)}
                        command = whole_run.commands("imp2", False, Path(tmp), "cpu", [])["lottery"]
                        result = whole_run.run(command, env)
                    else:
                        env = {**base, "PYTHONPATH": f"{shim}{os.pathsep}{checkout}", "HOME": tmp}
                        command = [sys.executable, str(checkout / "open_lth.py"), *OPEN_LTH_ARGS]
                        result = whole_run.run(command, env)
                results[side].append(result)
                print(
                    f"  round {round_ + 1} {side:8s} wall {result['wall']:7.2f} s  CPU {result['cpu']:7.2f} s  "
                    f"peak RSS {result['rss']:6.0f} MiB",
                    flush=True,
                )
    print(f"open_lth / lottery, medians of {args.repeats} interleaved rounds (range of per-round ratios):")
    for key, label, unit in (("wall", "wall", "s"), ("cpu", "CPU", "s"), ("rss", "peak RSS", "MiB")):
        theirs = [float(r[key]) for r in results["open_lth"]]
        ours = [float(r[key]) for r in results["lottery"]]
        ratios = [a / b for a, b in zip(theirs, ours, strict=True)]
        a, b = statistics.median(theirs), statistics.median(ours)
        print(
            f"  {label:9s} open_lth {a:8.2f} {unit:3s} lottery {b:8.2f} {unit:3s} open_lth/lottery {a / b:.2f} "
            f"({whole_run.spread(ratios)})"
        )
    print(f"load average at end {os.getloadavg()[0]:.1f}")


def _commit(checkout: Path) -> str:
    head = checkout / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (checkout / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
