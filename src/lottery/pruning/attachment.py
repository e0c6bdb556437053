"""Masks that hold in any `torch.optim` optimizer: `attach(mask, optimizer)`, through the optimizer's step hooks.

Before every step the gradients of pruned coordinates are zeroed. With a zero gradient, a zero weight and zero
optimizer state at a coordinate, every elementwise optimizer of `torch.optim` (SGD with momentum, Nesterov or
weight decay; Adam, AdamW, RAdam, NAdam, RMSprop, Adadelta, Adagrad) leaves that weight and that state exactly
zero: each update there is a product with, or a quotient of, zeros. Re-masking the weights after such a step would
be the identity (multiplying a zero by 0 keeps its sign), so it is skipped. Adamax (whose infinity norm becomes
eps), Adagrad with a non-zero `initial_accumulator_value`, and any optimizer not known here get their state (and,
for unknown ones, their weights) re-masked after every step. `attach` also zeroes the pruned weights and state at
once, and again at the first step (state created lazily by the optimizer), so nothing else is needed in the loop.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lottery.errors import UserError
from lottery.exact_step import exact_step
from lottery.pruning.mask import Mask

# Optimizers whose step, given zero gradient, weight and state at a coordinate, leaves weight and state zero there.
ZERO_PRESERVING = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RAdam,
    torch.optim.NAdam,
    torch.optim.RMSprop,
    torch.optim.Adadelta,
    torch.optim.Adagrad,
)
# ...and those whose step keeps pruned weights at zero but may write non-zero state there.
ZERO_WEIGHTS = (*ZERO_PRESERVING, torch.optim.Adamax)


def _parameters(mask: Mask, optimizer: torch.optim.Optimizer, model: nn.Module | Mapping[str, Tensor] | None):
    """The optimizer's parameter for every name in the mask."""
    if model is not None:
        named = dict(model.named_parameters()) if isinstance(model, nn.Module) else dict(model)
    elif all("param_names" in group for group in optimizer.param_groups):
        named = {}
        for group in optimizer.param_groups:
            named.update(zip(group["param_names"], group["params"]))
    else:
        named = match_by_shape(mask, [p for group in optimizer.param_groups for p in group["params"]])
    missing = [name for name in mask if name not in named]
    if missing:
        raise UserError(f"attach: the mask names parameters the model does not have: {', '.join(missing[:5])}")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    outside = [name for name in mask if id(named[name]) not in held]
    if outside:
        raise UserError(f"attach: the optimizer does not step these masked parameters: {', '.join(outside[:5])}")
    for name in mask:
        if tuple(mask[name].shape) != tuple(named[name].shape):
            raise UserError(
                f"attach: mask '{name}' has shape {tuple(mask[name].shape)}, the parameter {tuple(named[name].shape)}"
            )
    return [named[name] for name in mask]


def match_by_shape(mask: Mask, params: list[Tensor]) -> dict[str, Tensor]:
    """The optimizer's parameter for every name of `mask`, found without the model: the mask's names are in the
    model's parameter order (`Mask.ones`, `prune` and `Mask.load` keep it) and `model.parameters()` lists them in the
    same order, so the masked parameters are the one order-preserving choice of parameters of the masks' shapes.
    Refused in one line when there is none, or more than one (e.g. an unmasked layer of a masked layer's shape)."""
    names = list(mask)
    shapes = [tuple(mask[name].shape) for name in names]
    held = [tuple(p.shape) for p in params]
    # ways[i][j]: the number (capped at 2) of ways to place names[i:] among params[j:] in order, shapes equal.
    ways = [[0] * (len(held) + 1) for _ in range(len(names) + 1)]
    ways[len(names)] = [1] * (len(held) + 1)
    for i in range(len(names) - 1, -1, -1):
        for j in range(len(held) - 1, -1, -1):
            here = ways[i + 1][j + 1] if held[j] == shapes[i] else 0
            ways[i][j] = min(2, ways[i][j + 1] + here)
    if names and ways[0][0] == 0:
        have = sorted({str(s) for s in held})
        raise UserError(
            "attach: the optimizer does not step parameters of the mask's shapes in the mask's order "
            f"(mask: {', '.join(f'{n} {s}' for n, s in list(zip(names, shapes))[:5])}; optimizer: "
            f"{', '.join(have[:8])}); build it from this model's parameters, or pass model=your_model"
        )
    if names and ways[0][0] > 1:
        raise UserError(
            "attach: cannot tell which of the optimizer's parameters the mask names (several parameters have the "
            "shapes of masked ones); pass model=your_model, or build the optimizer from model.named_parameters()"
        )
    found, j = {}, 0
    for i, name in enumerate(names):  # the unique placement: the first position with a way to place the rest
        while not (held[j] == shapes[i] and ways[i + 1][j + 1] > 0):
            j += 1
        found[name] = params[j]
        j += 1
    return found


class Attachment:
    """A mask attached to an optimizer (see `attach`); `remove()` detaches it.

    It holds its optimizer by a weak reference, and the hooks and the step it installs on the optimizer hold
    nothing that leads back to the optimizer (as torch's LR schedulers wrap `step`): no reference cycle, so a
    finished network's weights, gradients and optimizer state are freed the moment the training drops the
    optimizer, not at Python's next full garbage collection (docs/performance.md, the whole demo's memory)."""

    def __init__(
        self,
        mask: Mask,
        optimizer: torch.optim.Optimizer,
        model: nn.Module | Mapping[str, Tensor] | None = None,
        remask_weights: bool | None = None,
        hooks: bool = True,
        fast_step: bool = True,
    ) -> None:
        """`hooks`: register the step hooks (False: the caller runs `before_step` / `after_step` itself).
        `fast_step`: see `attach`."""
        self._optimizer = weakref.ref(optimizer)
        params = _parameters(mask, optimizer, model)
        pruned = [i for i, name in enumerate(mask) if not bool(mask[name].all())]  # all-kept layers cost nothing
        names = list(mask)
        self.params = [params[i] for i in pruned]
        self._bool = [mask[names[i]].to(torch.bool) for i in pruned]
        self._masks: list[Tensor] = []
        kind = type(optimizer)
        self.remask_weights = kind not in ZERO_WEIGHTS if remask_weights is None else remask_weights
        initial = any(g.get("initial_accumulator_value", 0) for g in optimizer.param_groups)
        self.remask_state = kind not in ZERO_PRESERVING or (kind is torch.optim.Adagrad and initial)
        self._fresh = True  # mask the state after the first step: optimizers create it lazily
        self._handles = []
        self._step: Any = None
        if self.params and hooks and fast_step:
            self._install_fast_step()
        if self.params and hooks:
            self._handles = [
                optimizer.register_step_pre_hook(self.before_step),
                optimizer.register_step_post_hook(self.after_step),
            ]
        self.apply()

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer the mask is attached to (RuntimeError once it no longer exists)."""
        optimizer = self._optimizer()
        if optimizer is None:
            raise RuntimeError("attach: the optimizer this mask was attached to no longer exists")
        return optimizer

    def masks(self) -> list[Tensor]:
        """The masks in the parameters' dtype and device (recast if the model moved)."""
        if not self._masks or self._masks[0].device != self.params[0].device:
            self._masks = [m.to(p.device, p.dtype) for m, p in zip(self._bool, self.params)]
        return self._masks

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights, gradients and optimizer state now (e.g. after loading an optimizer state)."""
        if not self.params:
            return
        masks = self.masks()
        torch._foreach_mul_(self.params, masks)
        self._mask_grads(masks)
        self._mask_state(masks, self.optimizer)

    def _mask_grads(self, masks: list[Tensor]) -> None:
        pairs = [(p.grad, m) for p, m in zip(self.params, masks) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    def _mask_state(self, masks: list[Tensor], optimizer: torch.optim.Optimizer) -> None:
        state = optimizer.state
        for p, m in zip(self.params, masks):
            for value in state.get(p, {}).values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    value.mul_(m)

    @torch.no_grad()
    def before_step(self, optimizer: torch.optim.Optimizer, args: Any = (), kwargs: Any = None) -> None:
        """The step pre-hook: zero the pruned gradients."""
        if self.params:
            self._mask_grads(self.masks())

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer, args: Any = (), kwargs: Any = None) -> None:
        """The step post-hook: re-zero what the step may have written at pruned coordinates."""
        if not self.params:
            return
        masks = self.masks()
        if self.remask_weights:
            torch._foreach_mul_(self.params, masks)
        if self.remask_state or self._fresh:
            self._mask_state(masks, optimizer)
            self._fresh = False

    def _install_fast_step(self) -> None:
        """Route `optimizer.step()` through `exact_step` (lottery/exact_step.py): torch's own step bit for bit, hooks
        included, without the slow path PyTorch's CPU Adam takes on the exactly-zero second moments of pruned
        coordinates; where it does not apply, the optimizer's own step runs. An instance attribute, as torch's LR
        schedulers install theirs (a function holding the optimizer by a weak reference, as theirs: a bound method
        would be a reference cycle); `remove()` takes it away."""
        owner = self.optimizer
        previous = owner.__dict__.get("step")  # e.g. an LR scheduler's wrapper; None: the class's step
        reference = weakref.ref(owner)

        def step(closure: Any = None) -> Any:
            optimizer = reference()
            optimizer._opt_called = True  # what an LR scheduler's wrapper of step() records
            if closure is None and exact_step(optimizer):
                return None
            return previous(closure) if previous is not None else type(optimizer).step(optimizer, closure)

        step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]  (it records the call itself: see above)
        self._step, self._previous_step = step, previous
        owner.step = step

    def remove(self) -> None:
        """Detach: later steps no longer enforce the mask."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        optimizer = self._optimizer()
        if self._step is not None and optimizer is not None and optimizer.__dict__.get("step") is self._step:
            if self._previous_step is None:
                del optimizer.step
            else:
                optimizer.step = self._previous_step
        self._step = None

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def attach(
    mask: Mask,
    optimizer: torch.optim.Optimizer,
    *,
    model: nn.Module | Mapping[str, Tensor] | None = None,
    remask_weights: bool | None = None,
    fast_step: bool = True,
) -> Attachment:
    """Make `mask` hold in every later `optimizer.step()`: pruned weights, their gradients and their optimizer
    state stay exactly zero, with no other call in the training loop. Returns a handle; `.remove()` detaches
    (it is also a context manager).

    The mask's names are `model`'s parameter names (`model`: an `nn.Module` or a {name: parameter} mapping). Without
    `model`, an optimizer built from `model.named_parameters()` names them; one built from `model.parameters()` of
    the model the mask was made from is matched through the mask's order and shapes (`match_by_shape`), refused
    in one line only when that is ambiguous. The pruned weights, gradients and
    state are zeroed at once. `remask_weights`: also re-zero the pruned weights after every step (default: only
    for optimizers not known to keep them zero; see the module docstring). `fast_step`: where it applies (CPU Adam,
    AdamW and SGD with default flags), `optimizer.step()` becomes lottery's exact step: the same result bit for bit,
    without PyTorch's slow CPU path on the zero state of pruned coordinates (docs/performance.md).
    """
    if not isinstance(mask, Mask):
        mask = Mask(mask)
    return Attachment(mask, optimizer, model=model, remask_weights=remask_weights, fast_step=fast_step)
