"""Masks that hold wherever the user trains: `masked(model, mask)` holds a mask in every optimizer that steps the
model while the block runs (the optimizer may be created inside, as a `train_fn` does), and `train_subnetwork`
trains a copy of a subnetwork with it in one line.

    with lottery.masked(model, mask):
        train_fn(model, mask, k, T)                     # any loop: pruned weights, grads and state stay zero
    copy = lottery.train_subnetwork(model, level.mask, train_fn, start=k, end=T, weights=level.start)
"""

from __future__ import annotations

import copy as copying
import weakref
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
    the optimizers over the model's first masked parameter (`reference_name`), `other_steps` those of optimizers
    over the model's other parameters only. `lottery.imp` watches its `train_fn` with it (api/imp.py)."""

    hold = True  # hold the mask in the optimizers (lottery.imp(attach=False): only count the steps)
    zero_on_entry = True  # zero the pruned weights on entry (lottery.imp loads weights already masked)

    def __init__(self, model: nn.Module, mask: Mask) -> None:
        params = dict(model.named_parameters())
        missing = [name for name in mask if name not in params]
        if missing:
            raise UserError(f"masked: the mask names parameters the model does not have: {', '.join(missing[:5])}")
        self.model, self.mask = model, mask if isinstance(mask, Mask) else Mask(mask)
        self.reference_name = next(iter(mask)) if mask else next(iter(params), None)
        self.reference = params.get(self.reference_name) if self.reference_name is not None else None
        self.param_ids = {id(p) for p in params.values()}
        self.steps = self.other_steps = 0
        # by the optimizer itself, held weakly: an entry goes with its optimizer, so a loop that makes a new one
        # (over other parameters) never meets the entry of an old one whose id it took over
        self.attachments: weakref.WeakKeyDictionary[torch.optim.Optimizer, Attachment | None] = (
            weakref.WeakKeyDictionary()
        )
        self._handles: list[Any] = []

    def attachment(self, optimizer: torch.optim.Optimizer) -> Attachment | None:
        """The mask attached to `optimizer` (the part of it over parameters the optimizer steps), made once; None
        where that part prunes nothing (or the mask is not held)."""
        if optimizer not in self.attachments:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            params = dict(self.model.named_parameters())
            mine = Mask({n: m for n, m in self.mask.items() if id(params[n]) in held})
            pruned = self.hold and mine and not all(bool(m.all()) for m in mine.values())
            self.attachments[optimizer] = Attachment(mine, optimizer, model=self.model, hooks=False) if pruned else None
        return self.attachments[optimizer]

    def stepped(self) -> None:
        """Called after each step counted in `steps` (lottery.imp snapshots W_k here)."""

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        attachment = self.attachment(optimizer)
        if attachment is not None:
            attachment.before_step(optimizer)

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        attachment = self.attachment(optimizer)
        if attachment is not None:
            attachment.after_step(optimizer)
        held = [p for group in optimizer.param_groups for p in group["params"]]
        if any(p is self.reference for p in held):
            self.steps += 1
            self.stepped()
        elif any(id(p) in self.param_ids for p in held):
            self.other_steps += 1

    def __enter__(self) -> masked:
        if self.hold and self.zero_on_entry:
            self.mask.apply_(self.model)
        self._handles = [
            optim_base.register_optimizer_step_pre_hook(self._pre),
            optim_base.register_optimizer_step_post_hook(self._post),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.attachments = weakref.WeakKeyDictionary()


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
