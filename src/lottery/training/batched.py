"""K copies of one architecture trained together.

A stability analysis trains several copies of the same subnetwork that differ only in their SGD noise
(data order, augmentation); a replicate set or a group of controls differs in start weights and masks too.
`train_copies` trains K such copies in one loop: each copy keeps its own start weights, mask, data order and
augmentation (exactly the batches `BatchStream` gives a separate run), while the hyperparameters and the
schedule are shared. Two ways to run the copies:

- 'vmap': parameters and buffers stacked along a new leading dimension, one forward of the stacked model via
  `torch.func.functional_call` under `torch.func.vmap` (batched matmuls, grouped convolutions, BatchNorm with
  per-copy running statistics), one backward, one optimizer step over the stacked tensors. Few, large
  kernels: what a GPU wants. Per-copy results equal separate runs within float tolerance (batched kernels sum
  in another order).
- 'sequential': the copies one after another, each trained from `start` to the end with exactly the steps of the
  training loop, so the weights are bit for bit those of separate `lottery.training.train` runs. This is the
  CPU form: on a CPU neither batching is faster (measured in benchmarks/batched_copies.py): one batched matmul
  or grouped convolution costs what K small ones cost, and interleaving the copies -- one graph for all of
  them, or their steps in turn within each iteration -- makes every step touch all K copies' weights,
  gradients and optimizer state, which falls out of cache and measured 20-25% slower for LeNet-300-100.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lottery.data import BatchStream, Splits
from lottery.data.batches import Augment
from lottery.errors import UserError
from lottery.pruning import Mask
from lottery.spec import TrainingSpec
from lottery.training.optimizer import exact_step, make_optimizer
from lottery.training.schedule import lr_at

if TYPE_CHECKING:
    from lottery.training.loop import Schedule

SEED_FIELDS = ("init_seed", "data_order_seed", "augmentation_seed")
MODES = ("vmap", "sequential")


# ---------------------------------------------------------------------------------------------------------------
# K copies
# ---------------------------------------------------------------------------------------------------------------


def unsupported(model: nn.Module) -> str | None:
    """Why `model` cannot be trained as batched copies, or None. Dropout draws from the global RNG in the
    order of a single run, which copies trained together cannot reproduce."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{name or type(model).__name__} is an active dropout layer (p = {module.p})"
    return None


def default_mode(device: torch.device | str) -> str:
    """'vmap' on accelerators, 'sequential' on the CPU (see the module docstring)."""
    return "sequential" if torch.device(device).type == "cpu" else "vmap"


def should_batch(model: nn.Module, device: torch.device | str, k: int) -> bool:
    """Whether K copies of `model` should be trained with `train_copies` rather than by K separate runs.

    The rule, from `benchmarks/batched_copies.py` (figures in docs/performance.md): yes on an accelerator for
    k >= 2 -- K small networks as one vmapped model launch K times fewer, larger kernels, where the GPU is
    otherwise idle between small ones (not yet measured here: no GPU was available). No on the CPU: there the
    measured step time of K copies trained together ('vmap', or interleaved steps) is never below that of K
    separate runs ('sequential' is the same computation as separate runs), and separate runs keep per-run
    checkpoints, metrics and resumption. Never for a model with active dropout (see `unsupported`).
    """
    return k >= 2 and unsupported(model) is None and torch.device(device).type != "cpu"


def _check(models: Sequence[nn.Module], masks: Sequence[Mask | None], trainings: Sequence[TrainingSpec]) -> None:
    k = len(models)
    if k == 0 or len(masks) != k or len(trainings) != k:
        raise UserError(
            f"train_copies needs as many masks and trainings as models (got {k}, {len(masks)}, {len(trainings)})"
        )
    reason = unsupported(models[0])
    if reason is not None:
        raise UserError(f"cannot train copies together: {reason}")
    shapes = {n: (v.shape, v.dtype) for n, v in models[0].state_dict().items()}
    neutral = dataclasses.replace(trainings[0], **{f: 0 for f in SEED_FIELDS})
    for model, training in zip(models, trainings):
        same = type(model) is type(models[0])
        if not same or {n: (v.shape, v.dtype) for n, v in model.state_dict().items()} != shapes:
            raise UserError("train_copies needs copies of one architecture (same parameter names and shapes)")
        if dataclasses.replace(training, **{f: 0 for f in SEED_FIELDS}) != neutral:
            raise UserError("train_copies needs one set of hyperparameters: the trainings may differ in seeds only")


@torch.no_grad()
def _mul(tensors: list[Tensor | None], masks: list[Tensor]) -> None:
    pairs = [(t, m) for t, m in zip(tensors, masks) if t is not None]
    if pairs:
        torch._foreach_mul_([t for t, _ in pairs], [m for _, m in pairs])


@dataclass
class _Unit:
    """What takes one optimizer step: one copy ('sequential') or all of them stacked ('vmap')."""

    copies: list[int]
    forward: Callable[[list[Tensor]], list[Tensor]]  # the inputs of its copies -> their logits
    optimizer: torch.optim.Optimizer
    masked: list[Tensor]  # the parameters that have a mask that prunes something
    masks: list[Tensor]

    @torch.no_grad()
    def mask_state(self) -> None:
        """As MaskEnforcer.mask_optimizer_state: zero restored optimizer buffers at pruned coordinates."""
        for p, m in zip(self.masked, self.masks):
            for value in self.optimizer.state.get(p, {}).values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    value.mul_(m)

    def step(self, batches: list[tuple[Tensor, Tensor]], lr: float, autocast: torch.autocast) -> None:
        """The training loop's step: lr, forward, loss, backward, masked gradients, step, masked weights."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            outputs = self.forward([x for x, _ in batches])
            loss = sum(F.cross_entropy(out, y) for out, (_, y) in zip(outputs, batches))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        _mul([p.grad for p in self.masked], self.masks)
        if not exact_step(self.optimizer):  # exact_step leaves pruned weights at zero (see loop.py)
            self.optimizer.step()
            _mul(list(self.masked), self.masks)


def _float_masks(model: nn.Module, mask: Mask | None) -> dict[str, Tensor]:
    """Parameter name -> float mask, for the layers the mask prunes (multiplying by 1 is the identity)."""
    if mask is None:
        return {}
    params = dict(model.named_parameters())
    return {name: m.to(params[name].device, params[name].dtype) for name, m in mask.items() if not bool(m.all())}


def _sequential_units(
    copies: list[nn.Module], masks: list[dict[str, Tensor]], training: TrainingSpec, states: list[dict] | None
) -> list[_Unit]:
    units = []
    for i, (model, mask) in enumerate(zip(copies, masks)):
        optimizer = make_optimizer(model.parameters(), training)
        params = dict(model.named_parameters())
        unit = _Unit([i], lambda xs, m=model: [m(xs[0])], optimizer, [params[n] for n in mask], list(mask.values()))
        _mul(list(unit.masked), unit.masks)
        if states is not None:
            optimizer.load_state_dict(copy.deepcopy(states[i]))  # load_state_dict would alias the caller's tensors
            unit.mask_state()
        units.append(unit)
    return units


def _vmap_unit(
    copies: list[nn.Module], masks: list[dict[str, Tensor]], training: TrainingSpec, states: list[dict] | None
) -> tuple[_Unit, dict[str, Tensor], dict[str, Tensor]]:
    for module in copies[0].modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training and module.momentum is None:
            raise UserError("train_copies mode 'vmap' needs a BatchNorm momentum (not a cumulative average)")
    names = [n for n, _ in copies[0].named_parameters()]
    params = {n: torch.stack([dict(c.named_parameters())[n].detach() for c in copies]) for n in names}
    buffers = {n: torch.stack([dict(c.named_buffers())[n] for c in copies]) for n, _ in copies[0].named_buffers()}
    for p in params.values():
        p.requires_grad_(True)
    masked_names = [n for n in names if any(n in m for m in masks)]
    stacked_masks = [
        torch.stack([m[n] if n in m else torch.ones_like(params[n][0]) for m in masks]) for n in masked_names
    ]
    base = copy.deepcopy(copies[0]).to("meta")
    batched = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))

    def forward(xs: list[Tensor]) -> list[Tensor]:
        return list(batched(params, buffers, torch.stack(xs)).unbind(0))

    leaves = list(params.values())
    optimizer = make_optimizer(leaves, training)
    unit = _Unit(list(range(len(copies))), forward, optimizer, [params[n] for n in masked_names], stacked_masks)
    _mul(list(unit.masked), unit.masks)
    if states is not None:
        for i, leaf in enumerate(leaves):
            per_copy = [s["state"].get(i, {}) for s in states]
            if not per_copy[0]:
                continue
            merged: dict[str, Any] = {}
            for key, first in per_copy[0].items():
                values = [s[key] for s in per_copy]
                if key == "step":
                    if any(float(v) != float(first) for v in values):
                        raise UserError("train_copies: restored optimizer states must share their step count")
                    merged[key] = first.clone()
                else:
                    merged[key] = torch.stack([v.to(leaf.device, leaf.dtype) for v in values])
            optimizer.state[leaf] = merged
        unit.mask_state()
    return unit, params, buffers


def train_copies(
    models: Sequence[nn.Module],
    masks: Sequence[Mask | None],
    trainings: Sequence[TrainingSpec],
    schedule: Schedule,
    data: Splits,
    start: int = 0,
    augment: Augment | None = None,
    device: torch.device | str | None = None,
    optimizer_states: Sequence[dict[str, Any] | None] | None = None,
    mode: str | None = None,
) -> list[dict[str, Tensor]]:
    """Train K copies of one architecture from iteration `start` to `schedule.end`; their final state dicts.

    Copy i starts from `models[i]`'s weights (which are not modified), keeps `masks[i]` (None: dense) enforced
    as the training loop does (weights masked at the start, gradients before each step, weights after it) and
    sees the batches of `BatchStream(data.train_x, data.train_y, batch_size, trainings[i].data_order_seed,
    trainings[i].augmentation_seed, augment)`, i.e. exactly the data of a separate `lottery.training.train` run
    with `trainings[i]`. The trainings may differ in their seeds only. `optimizer_states[i]`, if given, is a
    separate run's `optimizer.state_dict()` restored at `start` (IMP's 'rewind' option) and masked as the loop
    masks it. `mode`: 'vmap' or 'sequential' (None: `default_mode(device)`). No evaluation, no checkpoints and
    no early stop: the caller evaluates and stores the returned weights (a copy whose loss diverges is trained to
    the end and returns non-finite weights, where a separate run stops at its next evaluation).
    """
    _check(models, masks, trainings)
    device = torch.device(device) if device is not None else next(models[0].parameters()).device
    mode = mode or default_mode(device)
    if mode not in MODES:
        raise UserError(f"unknown train_copies mode '{mode}' (allowed: {', '.join(MODES)})")
    states = None
    if optimizer_states is not None and any(s is not None for s in optimizer_states):
        if any(s is None for s in optimizer_states):
            raise UserError("train_copies: give an optimizer state for every copy or for none")
        states = list(optimizer_states)
    training = trainings[0]
    streams = [
        BatchStream(data.train_x, data.train_y, training.batch_size, t.data_order_seed, t.augmentation_seed, augment)
        for t in trainings
    ]
    copies = [copy.deepcopy(m).to(device).train() for m in models]
    float_masks = [_float_masks(c, m) for c, m in zip(copies, masks)]
    if mode == "sequential":
        units = _sequential_units(copies, float_masks, training, states)  # type: ignore[arg-type]
    else:
        unit, params, buffers = _vmap_unit(copies, float_masks, training, states)  # type: ignore[arg-type]
        units = [unit]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=training.precision == "bf16")
    for unit in units:  # each unit to the end before the next: its weights and optimizer state stay in cache
        for t in range(start, schedule.end):
            lr = lr_at(t, training.lr, schedule.warmup, schedule.milestones, gamma=training.gamma)
            unit.step([streams[i].batch(t) for i in unit.copies], lr, autocast)
    if mode == "sequential":
        return [{n: v.detach().clone() for n, v in c.state_dict().items()} for c in copies]
    merged = {**params, **buffers}
    return [{n: merged[n][i].detach().clone() for n in copies[0].state_dict()} for i in range(len(copies))]
