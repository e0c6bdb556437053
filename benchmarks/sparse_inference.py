"""Batch inference of IMP tickets as they leave `lottery export`: masked dense, torch.sparse CSR and compact (channel
tickets), against the dense network, on this CPU, for LeNet-300-100 and ResNet-20 (docs/performance.md, "Inference
of tickets").

Tickets: level L of IMP at 20% per level, from the network's initial weights (inference time does not depend on
the values, only on which weights are kept): unstructured (global magnitude, density 0.8^L) run as
- `masked`: the dense network with zeros, what a ticket is today (the same kernels as dense);
- `csr`: every pruned Linear/Conv2d weight as a torch.sparse CSR matrix (`weight.flatten(1)`), a convolution as
  im2col (`F.unfold`) times the CSR matrix: what `--format sparse` can be turned into with torch alone;
and channel tickets (`pruning.structure = "channel"`, `layerwise_magnitude`: 20% of every layer's channels per level) as
- `compact`: the physically smaller network of `--format compact`.
FLOPs: `torch.utils.flop_counter.FlopCounterMode` of one batch (dense kernels: the compact network's own).

All sides of a model are timed in one interleaved run (A B C D, D C B A, ...; `_common.interleave`) and reported as
ratios of median CPU times to the dense network's, so that load from other processes hits all sides alike: the
machine is shared. First, per model, dense against the compact tickets alone (and, for ResNet-20, the same family
built uniformly narrower: what the CPU's convolution kernels give for the same FLOPs); then every side together.
One intra-op thread by default.

    python benchmarks/sparse_inference.py --repeats 11
    python benchmarks/sparse_inference.py --compact-only 1 --repeats 11   # the compact-only runs alone
    python benchmarks/sparse_inference.py --quick
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import _common
import lottery
from lottery.export import compact
from lottery.models import registry
from lottery.pruning import Mask
from lottery.spec import ModelSpec

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

MODELS = {  # name -> (input shape, batch, levels)
    "lenet_300_100": ((1, 28, 28), 256, (0, 2, 4, 7, 10, 15, 20)),
    "resnet20": ((3, 32, 32), 64, (0, 1, 2, 4, 7, 10)),
}


class CSRLinear(nn.Module):
    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight = layer.weight.detach().to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        out = (self.weight @ x.t()).t()
        return out if self.bias is None else out + self.bias


class CSRConv(nn.Module):
    """A convolution as im2col times a CSR weight matrix."""

    def __init__(self, layer: nn.Conv2d) -> None:
        super().__init__()
        self.weight = layer.weight.detach().flatten(1).to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()
        self.out_channels, self.kernel = layer.out_channels, layer.kernel_size
        self.stride, self.padding = layer.stride, layer.padding

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        cols = F.unfold(x, self.kernel, padding=self.padding, stride=self.stride)  # [n, c*kh*kw, L]
        out = self.weight @ cols.transpose(0, 1).reshape(cols.shape[1], -1)  # [out, n*L]
        oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        out = out.reshape(self.out_channels, n, oh, ow).transpose(0, 1)
        return out if self.bias is None else out + self.bias[:, None, None]


def csr_model(model: nn.Module) -> nn.Module:
    """A copy whose every Linear/Conv2d computes with a CSR weight."""
    import copy

    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            model.set_submodule(name, CSRLinear(module))
        elif isinstance(module, nn.Conv2d):
            model.set_submodule(name, CSRConv(module))
    return model.eval()


def flops(model: nn.Module, x: Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def tickets(name: str, shape: tuple[int, ...], levels: tuple[int, ...]) -> tuple[nn.Module, dict[int, dict]]:
    """The dense network and, per level, its unstructured ticket (masked) and channel ticket (compact)."""
    dense = registry.build(ModelSpec(name=name), shape, 10, 0).eval()
    out: dict[int, dict] = {}
    unstructured, channel = Mask.ones(dense), Mask.ones(dense)
    for level in range(max(levels) + 1):
        if level:
            unstructured = lottery.prune(dense, unstructured, fraction=0.2)
            channel = lottery.prune(dense, channel, fraction=0.2, scope="layerwise", structure="channel")
        if level not in levels:
            continue
        masked = registry.build(ModelSpec(name=name), shape, 10, 0).eval()
        unstructured.apply_(masked)
        state = {k: v.detach() for k, v in dense.state_dict().items()}
        ordered = Mask({n: channel[n] for n in channel})
        small = compact.compact_state(Mask(ordered).apply_to(state), ordered)
        smaller = compact.shrink(registry.build(ModelSpec(name=name), shape, 10, 0), small).eval()
        out[level] = {
            "masked": masked,
            "density": unstructured.density,
            "compact": smaller,
            "channel_density": channel.density,
        }
    return dense, out


def compact_only(name: str, shape: tuple[int, ...], batch: int, levels: tuple[int, ...], repeats: int) -> None:
    """Dense against the compact channel tickets alone (no CSR side between them), and, for reference, the family
    built narrower from the start (uniform `model.width`): what the CPU's kernels give for the same FLOPs."""
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    dense, by_level = tickets(name, shape, levels)
    sides: dict[str, Callable[[], object]] = {"dense": lambda m=dense, x=x: m(x)}
    models: dict[str, nn.Module] = {}
    for level, t in by_level.items():
        if level:
            models[f"compact L{level}"] = t["compact"]
    if name.startswith("resnet"):
        for width in (13, 10, 7):
            models[f"uniform width {width}"] = registry.build(ModelSpec(name=name, width=width), shape, 10, 0).eval()
    for label, model in models.items():
        sides[label] = lambda m=model, x=x: m(x)
    with torch.no_grad():
        times = _common.interleave(sides, repeats)
    base, dense_flops = times["dense"].median(), flops(dense, x)
    print(f"\n### {name}, compact only, batch {batch}, {repeats} interleaved rounds; dense: {1e3 * base:.1f} ms CPU")
    print("| network | time / dense | FLOPs / dense | speed-up | FLOP reduction | speed-up / FLOP reduction |")
    print("|---|---|---|---|---|---|")
    for label, model in models.items():
        ratio, flop_ratio = times[label].median() / base, flops(model, x) / dense_flops
        print(
            f"| {label} | {ratio:.3f} | {flop_ratio:.3f} | {1 / ratio:.2f}× | {1 / flop_ratio:.2f}× | "
            f"{flop_ratio / ratio:.2f} |"
        )


def main() -> None:
    args = _common.arguments(
        __doc__.splitlines()[0],
        repeats=(int, 7, "timed rounds per side (default 7)"),
        compact_only=(int, 0, "1: only the compact-only runs (dense vs compact tickets vs uniformly narrow networks)"),
    )
    _common.header("Inference of IMP tickets: masked dense, torch.sparse CSR, compact (channel) vs dense")
    repeats = 2 if args.quick else args.repeats
    for name, (shape, batch, levels) in MODELS.items():
        compact_only(name, shape, batch, levels[:3] if args.quick else levels, repeats)
    if args.compact_only:
        return
    for name, (shape, batch, levels) in MODELS.items():
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
        dense, by_level = tickets(name, shape, levels[:3] if args.quick else levels)
        dense_flops = flops(dense, x)
        sides: dict[str, Callable[[], object]] = {"dense": lambda m=dense, x=x: m(x)}
        for level, t in by_level.items():
            if level == 0:
                continue
            csr = csr_model(t["masked"])
            sides[f"masked L{level}"] = lambda m=t["masked"], x=x: m(x)
            sides[f"csr L{level}"] = lambda m=csr, x=x: m(x)
            sides[f"compact L{level}"] = lambda m=t["compact"], x=x: m(x)
        with torch.no_grad():
            times = _common.interleave(sides, repeats)
        base = times["dense"].median()
        print(f"\n### {name}, batch {batch}, {repeats} interleaved rounds; dense: {1e3 * base:.1f} ms CPU per batch")
        print(
            "| level | unstructured density | masked / dense | CSR / dense | channel ticket density | "
            "compact / dense | compact FLOPs / dense | speed-up / FLOP reduction |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for level, t in by_level.items():
            if level == 0:
                continue
            masked, csr, small = (times[f"{kind} L{level}"].median() / base for kind in ("masked", "csr", "compact"))
            flop_ratio = flops(t["compact"], x) / dense_flops
            print(
                f"| {level} | {t['density']:.3f} | {masked:.2f} | {csr:.2f} | {t['channel_density']:.3f} | "
                f"{small:.3f} | {flop_ratio:.3f} | {(1 / small) / (1 / flop_ratio):.2f} |"
            )


if __name__ == "__main__":
    main()
