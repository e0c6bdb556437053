"""Holding a mask inside a framework's trainer: the part the Lightning and Hugging Face callbacks share.

A trainer builds its optimizers itself, clips gradients, accumulates them over micro-batches and may wrap the model
for data parallelism, all between the backward pass and `optimizer.step()`. So the mask is held at both ends:

- a gradient hook on every pruned parameter multiplies its gradient by the mask as backward computes it, so the
  pruned coordinates' gradients are exactly zero before accumulation, clipping (the norm is the subnetwork's) and
  data-parallel averaging;
- `lottery.attach` on every optimizer the trainer steps (found again at each step, so an optimizer the trainer
  re-creates is attached too): pruned weights and optimizer state stay exactly zero.

Under `torch.distributed` the mask is rank 0's on every rank (`lottery.training.distributed.broadcast_mask`), so
every rank trains the same subnetwork.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from lottery.errors import UserError
from lottery.pruning import Mask
from lottery.pruning.attachment import Attachment


class MaskHolder:
    """`mask` held in a model and every optimizer given to `attach` until `release()`."""

    def __init__(self, mask: Mask) -> None:
        if not isinstance(mask, Mask):
            mask = Mask(mask)
        self.mask = mask
        self.model: nn.Module | None = None
        self._hooks: list[Any] = []
        self._attached: weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[tuple[int, ...], Attachment | None]]
        self._attached = weakref.WeakKeyDictionary()

    def bind(self, model: nn.Module) -> None:
        """Take rank 0's mask (data parallel), zero `model`'s pruned weights and hook their gradients."""
        from lottery.training.distributed import broadcast_mask

        self.release()
        params = dict(model.named_parameters())
        missing = [name for name in self.mask if name not in params]
        if missing:
            raise UserError(
                f"LotteryCallback: the mask names parameters {type(model).__name__} does not have: "
                f"{', '.join(missing[:5])} (mask names are the model's parameter names)"
            )
        self.mask = broadcast_mask(self.mask)
        self.model = model
        self.mask.apply_(model)
        for name, keep in self.mask.items():
            if bool(keep.all()):
                continue
            self._hooks.append(params[name].register_hook(_GradientMask(keep)))

    def attach(self, optimizer: torch.optim.Optimizer) -> Attachment | None:
        """Attach the mask to `optimizer` (the part of it over the parameters the optimizer steps), once; again if
        its parameters changed (e.g. a parameter group was added)."""
        if self.model is None:
            raise RuntimeError("MaskHolder.attach before bind")
        held = tuple(id(p) for group in optimizer.param_groups for p in group["params"])
        known = self._attached.get(optimizer)
        if known is not None and known[0] == held:
            return known[1]
        if known is not None and known[1] is not None:
            known[1].remove()
        params = dict(self.model.named_parameters())
        ids = set(held)
        mine = Mask({name: m for name, m in self.mask.items() if id(params[name]) in ids})
        attachment = Attachment(mine, optimizer, model=self.model) if mine and mine.density < 1 else None
        self._attached[optimizer] = (held, attachment)
        return attachment

    def release(self) -> None:
        """Remove the gradient hooks and detach from every optimizer."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        for _, attachment in list(self._attached.values()):
            if attachment is not None:
                attachment.remove()
        self._attached = weakref.WeakKeyDictionary()

    def check(self, model: nn.Module) -> None:
        """Raise unless every pruned weight of `model` is exactly zero."""
        params = dict(model.named_parameters())
        for name, keep in self.mask.items():
            pruned = params[name].detach()[~keep.to(params[name].device)]
            if bool(pruned.ne(0).any()):
                raise RuntimeError(f"LotteryCallback: pruned weights of {name} are not zero")


class _GradientMask:
    """A gradient hook: the gradient times the mask, in the gradient's device and dtype (the trainer may move or
    cast the model after the hook is registered)."""

    def __init__(self, keep: Tensor) -> None:
        self.keep = keep.to(torch.bool)
        self.factor = self.keep.float()

    def __call__(self, grad: Tensor) -> Tensor:
        if self.factor.device != grad.device or self.factor.dtype != grad.dtype:
            self.factor = self.keep.to(grad.device, grad.dtype)
        return grad * self.factor
