"""K copies of one architecture as one model: parameters, buffers, masks and optimizer state stacked along a new
leading dimension.

One forward of the stacked model is `torch.func.functional_call` under `torch.func.vmap` (batched matmuls,
grouped convolutions, BatchNorm with per-copy batch and running statistics; for LeNet the same computation
written as batched matmuls in a layout that suits their backward, `_lenet_forward`); then one backward and one
fused optimizer step over the stacked tensors: an elementwise step over a stacked tensor is each copy's step, so
copy i follows the training loop's arithmetic up to rounding (batched kernels and the fused step sum in another
order).
`write_back` copies one copy's weights, buffers and optimizer state into a separate run's model and optimizer,
in the training loop's formats, so that run can be evaluated, checkpointed and resumed like any other.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lottery.models.lenet import LeNet
from lottery.pruning import Mask, attach
from lottery.spec import TrainingSpec
from lottery.training import losses
from lottery.training.optimizer import make_optimizer


def _lenet_forward(hidden: int, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """K copies of `LeNet.forward` at once: `params` stacked along a new leading dimension, x of shape (K, batch, ...)
    -> logits (K, batch, classes). Activations are kept feature-major (K, features, batch), so each weight's gradient
    comes out of one batched matmul already in the weight's layout (vmap's generic form materializes a transposed
    copy of every weight gradient, which costs more than the matmuls of LeNet on a CPU)."""
    h = x.flatten(2).transpose(1, 2)
    layers = [f"hidden.{i}" for i in range(hidden)] + ["out"]
    for i, name in enumerate(layers):
        h = torch.baddbmm(params[f"{name}.bias"].unsqueeze(2), params[f"{name}.weight"], h)
        if i < len(layers) - 1:
            h = h.relu()
    return h.transpose(1, 2)


def unsupported(model: nn.Module) -> str | None:
    """Why copies of `model` cannot be stacked, or None. Dropout draws from the global RNG in the order of a
    single run, which copies trained together cannot reproduce; a cumulative-average BatchNorm (momentum None)
    keeps a step count that vmap cannot update per copy."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{name or type(model).__name__} is an active dropout layer (p = {module.p})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is None:
            return f"{name} is a BatchNorm layer with a cumulative average (momentum None)"
    return None


def optimizer_signature(optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> tuple[Any, ...]:
    """What copies stacked into one optimizer must share: which parameters have state, and the step counts."""
    signature = []
    for p in params:
        state = optimizer.state.get(p, {})
        signature.append(tuple(sorted((k, float(v) if k == "step" else None) for k, v in state.items())))
    return tuple(signature)


ALIGN = 64  # elements: each copy's slice of a stacked tensor starts at a multiple of this, see `_stack`


def _stack(tensors: Sequence[Tensor], like: Tensor | None = None) -> Tensor:
    """K tensors of one shape as one (K, n) tensor whose rows are zero-padded to a multiple of ALIGN elements.

    Vectorized CPU kernels (torch's fused optimizers among them) treat the last elements of a tensor that do not
    fill a vector differently, and which elements those are depends on the tensor's length. With every copy's
    row aligned and a whole number of vectors long, every element goes through the same code whatever K is, on
    one thread. With several threads, kernels split a tensor between threads by its size (and small batched
    matmuls pick another kernel for K = 1), so a copy's bits then depend on K and on its position -- never on
    the other copies' values: `train_together` therefore always trains a copy at its position in a stack of
    its group's size.
    """
    like = tensors[0] if like is None else like  # the dtype and device of the result
    n = tensors[0].numel()
    padded = torch.zeros(len(tensors), -(-n // ALIGN) * ALIGN, dtype=like.dtype, device=like.device)
    padded[:, :n] = torch.stack([t.detach().reshape(-1).to(padded.device, padded.dtype) for t in tensors])
    return padded


class Stacked:
    """Copies i = 0..K-1 of `models`, each with `masks[i]` attached to the stacked optimizer (`lottery.attach`)
    and the state of `optimizers[i]` (the copies' optimizer states must have the same signature)."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        masks: Sequence[Mask],
        optimizers: Sequence[torch.optim.Optimizer],
        training: TrainingSpec,
    ) -> None:
        reason = unsupported(models[0])
        if reason is not None:
            raise ValueError(f"cannot stack copies: {reason}")
        self.k = len(models)
        per_copy = [dict(m.named_parameters()) for m in models]
        self.shapes = {n: p.shape for n, p in per_copy[0].items()}
        if any({n: p.shape for n, p in params.items()} != self.shapes for params in per_copy):
            raise ValueError("cannot stack copies of different architectures")
        with torch.no_grad():
            self.leaves = {n: _stack([p[n] for p in per_copy]).requires_grad_(True) for n in self.shapes}
            self.buffers = {
                n: torch.stack([dict(m.named_buffers())[n] for m in models]) for n, _ in models[0].named_buffers()
            }
        masked = [n for n in self.shapes if any(n in m and not bool(m[n].all()) for m in masks)]
        ones = {n: torch.ones(self.shapes[n], dtype=torch.bool) for n in masked}
        stacked_mask = Mask({n: _stack([m.get(n, ones[n]) for m in masks]).to(torch.bool) for n in masked})
        self.optimizer = make_optimizer(list(self.leaves.values()), training, fused=True)
        self.loss = losses.make(training)
        self._load_optimizer_states(models, optimizers)
        attach(stacked_mask, self.optimizer, model=self.leaves)  # the copies' masks hold in every step
        base = copy.deepcopy(models[0]).to("meta")
        if type(base) is LeNet and not self.buffers:
            self._forward = lambda p, b, x: _lenet_forward(len(base.hidden), p, x)
        else:
            self._forward = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))

    def params(self) -> dict[str, Tensor]:
        """The stacked parameters, (K, *shape) views of the padded leaves the optimizer steps."""
        return {
            n: leaf[:, : math.prod(self.shapes[n])].view(self.k, *self.shapes[n]) for n, leaf in self.leaves.items()
        }

    def _load_optimizer_states(self, models: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        signatures = {optimizer_signature(o, list(m.parameters())) for m, o in zip(models, optimizers)}
        if len(signatures) != 1:
            raise ValueError("cannot stack copies whose optimizer states differ in step count or kind")
        params = [list(m.parameters()) for m in models]
        for j, leaf in enumerate(self.leaves.values()):
            states = [o.state.get(p[j], {}) for o, p in zip(optimizers, params)]
            if not states[0]:
                continue
            merged: dict[str, Any] = {}
            for key, first in states[0].items():
                if key == "step" and self.optimizer.defaults.get("fused"):  # a fused one keeps it on the device
                    merged[key] = first.detach().to(leaf.device, torch.float32).clone()
                elif isinstance(first, Tensor) and first.dim() == 0:  # a step or NAdam's mu_product: one for all
                    merged[key] = first.detach().clone()
                elif first is None:
                    merged[key] = None
                else:
                    merged[key] = _stack([s[key] for s in states], leaf)
            self.optimizer.state[leaf] = merged

    def step(self, x: Tensor, y: Tensor, lr: float, autocast: torch.autocast) -> Tensor:
        """One training step of every copy on its own batch (x: K batches stacked, y: their labels); the K
        mean losses."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            logits = self._forward(self.params(), self.buffers, x)
            per_example = self.loss(logits.flatten(0, 1), y.flatten(0, 1), reduction="none")
            copy_losses = per_example.view(self.k, -1).mean(1)
        self.optimizer.zero_grad(set_to_none=True)
        copy_losses.sum().backward()  # copy i's parameters get the gradient of copy i's loss alone
        self.optimizer.step()
        return copy_losses.detach()

    @torch.no_grad()
    def write_back(self, i: int, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Copy i's weights and buffers into `model`, and its optimizer state into `optimizer` (the format of a
        separate run's optimizer: its step count a CPU scalar, as torch's default implementation keeps it)."""
        for name, p in model.named_parameters():
            p.copy_(self.leaves[name][i, : p.numel()].view(p.shape))
        for name, b in model.named_buffers():
            b.copy_(self.buffers[name][i])
        if optimizer is None:
            return
        for group in optimizer.param_groups:  # the learning rate of the last step, as a separate run's optimizer has
            group["lr"] = self.optimizer.param_groups[0]["lr"]
        for p, leaf in zip(model.parameters(), self.leaves.values()):
            state = self.optimizer.state.get(leaf)
            if not state:
                continue
            optimizer.state[p] = {
                key: (
                    value.detach().to("cpu", torch.float32).clone()
                    if value is not None and value.dim() == 0
                    else None
                    if value is None
                    else value[i, : p.numel()].view(p.shape).clone()
                )
                for key, value in state.items()
            }
