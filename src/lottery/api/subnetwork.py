"""Masks that hold wherever the user trains: `masked(model, mask)` holds a mask in every optimizer that steps the
model while the block runs (the optimizer may be created inside, as a `train_fn` does), and `train_subnetwork`
trains a copy of a subnetwork with it in one line.

    with lottery.masked(model, mask):
        train_fn(model, mask, k, T)                     # any loop: pruned weights, grads and state stay zero
    copy = lottery.train_subnetwork(model, level.mask, train_fn, start=k, end=T, weights=level.start)
"""

from __future__ import annotations

import copy as copying
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import optimizer as optim_base

from lottery.errors import UserError
from lottery.pruning import Mask
from lottery.pruning.attachment import Attachment


class masked:  # noqa: N801  (used as a function: `with lottery.masked(model, mask):`)
    """While active, `mask` holds in every `torch.optim` optimizer that steps any of `model`'s masked parameters
    (through torch's global optimizer step hooks): the pruned weights are zeroed on entry, and their gradients,
    optimizer state and values stay exactly zero in every step, as with `lottery.attach`. `steps` counts the steps of
    the optimizers over the model's first masked parameter."""

    def __init__(self, model: nn.Module, mask: Mask) -> None:
        params = dict(model.named_parameters())
        missing = [name for name in mask if name not in params]
        if missing:
            raise UserError(f"masked: the mask names parameters the model does not have: {', '.join(missing[:5])}")
        self.model, self.mask = model, mask if isinstance(mask, Mask) else Mask(mask)
        self.reference = params[next(iter(mask))] if mask else next(model.parameters(), None)
        self.steps = 0
        self._attachments: dict[int, Attachment | None] = {}
        self._handles: list[Any] = []
        self._optimizers: list[torch.optim.Optimizer] = []  # kept alive: ids stay unique while active

    def attachment(self, optimizer: torch.optim.Optimizer) -> Attachment | None:
        """The mask attached to `optimizer` (the part of it over parameters the optimizer steps), made once."""
        key = id(optimizer)
        if key not in self._attachments:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            params = dict(self.model.named_parameters())
            mine = Mask({n: m for n, m in self.mask.items() if id(params[n]) in held})
            pruned = mine and not all(bool(m.all()) for m in mine.values())
            self._attachments[key] = Attachment(mine, optimizer, model=self.model, hooks=False) if pruned else None
            self._optimizers.append(optimizer)
        return self._attachments[key]

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        attachment = self.attachment(optimizer)
        if attachment is not None:
            attachment.before_step(optimizer)

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        attachment = self.attachment(optimizer)
        if attachment is not None:
            attachment.after_step(optimizer)
        if any(p is self.reference for group in optimizer.param_groups for p in group["params"]):
            self.steps += 1

    def __enter__(self) -> masked:
        self.mask.apply_(self.model)
        self._handles = [
            optim_base.register_optimizer_step_pre_hook(self._pre),
            optim_base.register_optimizer_step_post_hook(self._post),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._optimizers, self._attachments = [], [], {}


def train_subnetwork(
    model: nn.Module,
    mask: Mask,
    train_fn: Callable[[nn.Module, Mask, int, int], Any],
    *,
    start: int = 0,
    end: int,
    weights: Mapping[str, Tensor] | None = None,
) -> nn.Module:
    """Train a copy of the subnetwork `mask` ⊙ `weights` (default: `model`'s own weights) with
    `train_fn(copy, mask, start, end)`, the mask held in every optimizer that steps the copy (`masked`), and return
    the trained copy; `model` is not changed. E.g. a stability copy of an IMP level from its rewind point k:
    `lottery.train_subnetwork(model, level.mask, train_fn, start=k, end=T, weights=level.start)`."""
    if not 0 <= start <= end:
        raise UserError(f"train_subnetwork: need 0 <= start <= end, got start={start}, end={end}")
    trained = copying.deepcopy(model)
    if weights is not None:
        trained.load_state_dict(dict(weights))
    with masked(trained, mask):
        train_fn(trained, mask, start, end)
    return trained
