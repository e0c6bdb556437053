"""What `lottery.attach` costs: a training step of a plain PyTorch loop with the mask attached vs the same step
without a mask, for the same optimizer.

Two copies of the network (the same masked start weights) are trained on the same batches by the same hand-written
loop (forward, cross-entropy, `zero_grad`, `backward`, `optimizer.step()`), one with `lottery.attach(mask,
optimizer)`, the other unmasked. Their steps are interleaved (the side that goes first alternates), and the ratio
of the medians of process CPU time per step is the verdict (immune to preemption on a shared machine); wall-clock
medians are printed too.

    python benchmarks/attach_overhead.py          # LeNet-300-100 (Adam, AdamW; batch 60), ResNet-20 (SGD; batch 128)
    python benchmarks/attach_overhead.py --fast-step 0 --networks lenet   # without attach's exact step
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import _common
import lottery
from lottery.models.lenet import LeNet
from lottery.models.resnet import ResNet

TARGET = 1.05


def step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """One step of the plain loop; (CPU seconds, wall seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(
    name: str,
    model: nn.Module,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    input_shape: tuple[int, ...],
    batch_size: int,
    iterations: int,
    warmup: int,
    fast_step: bool = True,
) -> float:
    g = torch.Generator().manual_seed(0)
    mask = lottery.prune(model, density=0.2, scope="layerwise", ignore=["output"])  # 20% of the hidden weights
    mask.apply_(model)
    plain = copy.deepcopy(model)
    masked_opt, plain_opt = make_optimizer(model), make_optimizer(plain)
    lottery.attach(mask, masked_opt, model=model, fast_step=fast_step)
    batches = [
        (torch.randn(batch_size, *input_shape, generator=g), torch.randint(0, 10, (batch_size,), generator=g))
        for _ in range(8)
    ]
    model.train()
    plain.train()
    times: dict[str, list[tuple[float, float]]] = {"masked": [], "plain": []}
    for i in range(warmup + iterations):
        x, y = batches[i % len(batches)]
        order = [("masked", model, masked_opt), ("plain", plain, plain_opt)]
        for side, net, opt in order if i % 2 == 0 else order[::-1]:
            t = step(net, opt, x, y)
            if i >= warmup:
                times[side].append(t)
    for name_, m in mask.items():  # the attached side kept its mask
        w = dict(model.named_parameters())[name_]
        assert torch.equal(w[~m], torch.zeros_like(w[~m]))
    q, ms = _common.quantile, _common.ms
    cpu = {side: q([c for c, _ in ts], 0.5) for side, ts in times.items()}
    wall = {side: q([w for _, w in ts], 0.5) for side, ts in times.items()}
    ratio = cpu["masked"] / cpu["plain"]
    print(
        f"{name}: {iterations} interleaved steps after {warmup} warmup, mask density {mask.density:.3f}\n"
        f"  CPU time median  attached {ms(cpu['masked'])}  plain {ms(cpu['plain'])}  ratio {ratio:.3f}\n"
        f"  wall median      attached {ms(wall['masked'])}  plain {ms(wall['plain'])}  "
        f"ratio {wall['masked'] / wall['plain']:.3f}"
    )
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"{name}: attached/plain step = {ratio:.3f} (CPU-time medians; target <= {TARGET}: {verdict})")
    return ratio


def main() -> None:
    args = _common.arguments(
        __doc__.splitlines()[0],
        networks=(str, "lenet,resnet20", "comma-separated"),
        fast_step=(int, 1, "1: attach's fast step (default); 0: the optimizer's own step (torch's)"),
    )
    _common.header("attached-mask step vs unmasked step of the same optimizer")
    torch.manual_seed(0)
    if "lenet" in args.networks:
        for label, make in (
            ("Adam", lambda m: torch.optim.Adam(m.parameters(), lr=1.2e-3)),
            ("AdamW", lambda m: torch.optim.AdamW(m.parameters(), lr=1.2e-3, weight_decay=1e-2)),
        ):
            measure(
                f"lenet_300_100 (batch 60, {label})",
                LeNet((1, 28, 28), 10),
                make,
                (1, 28, 28),
                60,
                iterations=300 if args.quick else 3000,
                warmup=50 if args.quick else 300,
                fast_step=bool(args.fast_step),
            )
    if "resnet20" in args.networks:
        measure(
            "resnet20 (batch 128, SGD momentum 0.9, wd 1e-4)",
            ResNet((3, 32, 32), 10, 20),
            lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4),
            (3, 32, 32),
            128,
            iterations=12 if args.quick else 60,
            warmup=3 if args.quick else 8,
            fast_step=bool(args.fast_step),
        )


if __name__ == "__main__":
    main()
