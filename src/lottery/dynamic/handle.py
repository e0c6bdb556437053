"""`lottery.dynamic(model, optimizer, ...)`: dynamic sparsity (RigL, SET, GMP) in the user's own training loop.

The handle registers one optimizer step pre-hook, ahead of a mask attachment (`lottery.attach`'s, over every
layer of the mask): before optimizer step t (0-based, counted by the handle) where the schedule says so, it reads the
weights and the dense gradients, computes the new mask (`lottery.dynamic.config.next_mask`) and hands it to the
attachment, which zeroes the dropped weights, their gradients and their optimizer state; the step then runs under the
new mask. Grown weights were inactive, so they start at zero with zero optimizer state. (RigL's TensorFlow code skips
the weight update on an update iteration; here the step runs, so a grown weight takes its first step at once.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from lottery.dynamic.config import Config, next_mask
from lottery.dynamic.distribution import initial_mask
from lottery.errors import UserError
from lottery.pruning.attachment import Attachment
from lottery.pruning.mask import Mask


class _Attachment(Attachment):
    """`lottery.attach` over every layer of the mask (all-kept ones too: they may lose weights later), with a mask
    that `set_mask` replaces in place (no hook is added or removed while the optimizer runs its hooks)."""

    def __init__(self, mask: Mask, optimizer: torch.optim.Optimizer, params: Mapping[str, nn.Parameter]) -> None:
        super().__init__(mask, optimizer, model=params, hooks=False)
        self.params = [params[name] for name in mask]
        self._names = list(mask)
        self._bool = [mask[name].to(torch.bool).clone() for name in mask]
        self._masks = []
        self._install_fast_step()
        self._handles = [
            optimizer.register_step_pre_hook(self.before_step),
            optimizer.register_step_post_hook(self.after_step),
        ]
        self.apply()

    def set_mask(self, mask: Mask) -> None:
        """Enforce `mask` from now on; the weights, gradients and state it drops are zeroed at once."""
        self._bool = [mask[name].to(torch.bool).clone() for name in self._names]
        self._masks = []
        self.apply()


class DynamicSparsity:
    """The handle `lottery.dynamic` returns: `.mask`, `.history`, `.step`, `.remove()`, `state_dict()`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: Config,
        names: Iterable[str],
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """`state`: a `state_dict()` to continue from (its mask is enforced at once; the initial mask is never
        applied), as `load_state_dict` after construction would, without zeroing the initial mask's weights."""
        params = dict(model.named_parameters())
        names = list(names)
        missing = [name for name in names if name not in params]
        if missing:
            raise UserError(f"dynamic: {type(model).__name__} has no parameter {', '.join(missing[:5])}")
        if not names:
            raise UserError(
                "dynamic: no layer to make sparse (pass names=[...] or use a model with Linear/Conv layers)"
            )
        self.config = config
        self._params = {name: params[name] for name in names}
        self._mask = self.initial(config, {name: tuple(p.shape) for name, p in self._params.items()})
        self.step = 0  # optimizer steps taken under the handle
        self.history: list[dict[str, Any]] = []
        if state is not None:
            self._restore(state)
        self._hook = optimizer.register_step_pre_hook(self._before_step)  # first: it sees the dense gradients
        self._attachment = _Attachment(self._mask, optimizer, self._params)

    @staticmethod
    def initial(config: Config, shapes: Mapping[str, tuple[int, ...]]) -> Mask:
        """The mask training starts from: all kept (gmp), else random at the density (`initial_mask`)."""
        if config.method == "gmp":
            return Mask({name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()})
        return initial_mask(shapes, config.density, config.distribution, config.seed)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer the handle steps with, held weakly (by its attachment), as the hooks on it must not lead back
        to it: RuntimeError once it no longer exists."""
        return self._attachment.optimizer

    @property
    def mask(self) -> Mask:
        """The current mask (a copy)."""
        return Mask({name: m.clone() for name, m in self._mask.items()})

    @torch.no_grad()
    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any = (), kwargs: Any = None) -> None:
        if self.config.is_update_step(self.step):
            self._update(self.step)
        self.step += 1

    def _update(self, step: int) -> None:
        weights = {name: p.detach() for name, p in self._params.items()}
        grads = {name: None if p.grad is None else p.grad.detach() for name, p in self._params.items()}
        old = self._mask
        new, used = next_mask(self.config, weights, grads, old, step)
        dropped = {name: int((old[name] & ~new[name]).sum()) for name in old}
        grown = {name: int((new[name] & ~old[name]).sum()) for name in old}
        self.history.append(
            {
                "step": step,
                **used,
                "kept": new.kept(),
                "dropped": dropped,
                "grown": grown,
                "density": new.layer_densities(),
                # the fraction of the active weights the update changed: grown (RigL, SET), pruned (GMP)
                "moved": max(sum(grown.values()), sum(dropped.values())) / max(1, old.kept()),
            }
        )
        self._mask = new
        self._attachment.set_mask(new)

    def remove(self) -> None:
        """Detach: the mask no longer changes nor holds in later steps."""
        self._hook.remove()
        self._attachment.remove()

    def __enter__(self) -> DynamicSparsity:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs besides the model's and the optimizer's states (`torch.save`-able, and
        loadable with `torch.load(..., weights_only=True)`)."""
        return {
            "config": asdict(self.config),
            "step": self.step,
            "names": list(self._mask),
            "mask": {name: m.clone() for name, m in self._mask.items()},
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()`: the mask, the step count and the history. Create the handle first (it zeroes
        the weights its initial mask leaves out), then load the model's and the optimizer's states, then this; or
        pass `state=` to `lottery.dynamic` after loading them."""
        self._restore(state)
        self._attachment.set_mask(self._mask)

    def _restore(self, state: Mapping[str, Any]) -> None:
        if state.get("config") != asdict(self.config):
            raise UserError("dynamic: this state was saved by a run with other settings (method, density, schedule)")
        if list(state["names"]) != list(self._mask):
            raise UserError("dynamic: this state masks other parameters than this handle")
        mask: dict[str, Tensor] = state["mask"]
        for name in state["names"]:
            if tuple(mask[name].shape) != tuple(self._mask[name].shape):
                raise UserError(f"dynamic: the saved mask of {name} has shape {tuple(mask[name].shape)}")
        self._mask = Mask({name: mask[name].to("cpu", torch.bool).clone() for name in state["names"]})
        self.step = int(state["step"])
        self.history = copy.deepcopy(list(state["history"]))


def dynamic(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    method: str = "rigl",
    *,
    density: float,
    total_steps: int,
    names: Iterable[str] | None = None,
    steps_per_epoch: int | None = None,
    state: Mapping[str, Any] | None = None,
    **options: Any,
) -> DynamicSparsity:
    """Train `model` sparse with `method` ('rigl', 'set' or 'gmp') in your own loop: keep calling
    `loss.backward(); optimizer.step()` with any `torch.optim` optimizer. `density`: the fraction of the masked
    weights kept (GMP: at the end). `total_steps`: optimizer steps in training. `names`: the parameters made
    sparse (default `lottery.prunable(model)`). `options`: `update_every`, `drop_fraction`, `drop_schedule`,
    `stop` (rigl, set), `start`, `end`, `every` (gmp), `distribution`, `seed`; steps as iterations, step
    strings ('500it'; '2ep' with `steps_per_epoch`) or percentages of training ('75%'). `state`: a handle's
    `state_dict()` to resume from (load the model's and the optimizer's states first). See docs/dynamic.md."""
    from lottery.pruning.prunable import prunable

    config = Config.resolve(method, density, total_steps, options, steps_per_epoch=steps_per_epoch)
    return DynamicSparsity(model, optimizer, config, prunable(model) if names is None else names, state=state)
