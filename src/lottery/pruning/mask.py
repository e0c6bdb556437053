"""Masks: a 0/1 (bool) tensor per prunable parameter, keyed by its `state_dict` name."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Mask(dict[str, Tensor]):
    """Parameter name -> bool tensor of the parameter's shape (True = kept)."""

    @classmethod
    def ones(cls, model: nn.Module, names: list[str] | None = None) -> Mask:
        """All-kept mask over `names`, default: `lottery.prunable(model)`."""
        from lottery.pruning.prunable import prunable

        params = dict(model.named_parameters())
        names = list(names) if names is not None else list(prunable(model))
        return cls({name: torch.ones_like(params[name], dtype=torch.bool, device="cpu") for name in names})

    def kept(self) -> int:
        return sum(int(m.sum()) for m in self.values())

    def total(self) -> int:
        return sum(m.numel() for m in self.values())

    @property
    def density(self) -> float:
        """Fraction of the masked coordinates that are kept (1.0 for an empty mask)."""
        total = self.total()
        return self.kept() / total if total else 1.0

    def layer_densities(self) -> dict[str, float]:
        return {name: float(m.float().mean()) for name, m in self.items()}

    def report(self) -> dict[str, object]:
        """Sparsity per layer and in total, as written next to each saved mask."""
        layers = {
            name: {"kept": int(m.sum()), "total": m.numel(), "density": float(m.float().mean())}
            for name, m in self.items()
        }
        return {"kept": self.kept(), "total": self.total(), "density": self.density, "layers": layers}

    def is_subset_of(self, other: Mask) -> bool:
        return self.keys() == other.keys() and all(bool((self[k] & ~other[k]).sum() == 0) for k in self)

    def apply_to(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """A copy of `weights` with the masked coordinates set to exactly zero."""
        return {k: (v * self[k].to(v.device, v.dtype) if k in self else v.clone()) for k, v in weights.items()}

    def to_tensors(self) -> dict[str, Tensor]:
        return {k: v.to(torch.bool) for k, v in self.items()}


class MaskEnforcer:
    """Holds a mask on the training device and enforces it: gradients of pruned coordinates are zeroed
    before each optimizer step and the weights are re-masked after it. With zero gradient and zero
    weight, SGD momentum, weight decay and Adam moments at those coordinates stay exactly zero."""

    def __init__(self, model: nn.Module, mask: Mask) -> None:
        params = dict(model.named_parameters())
        self.params = [params[name] for name in mask]
        self.masks = [mask[name].to(params[name].device, params[name].dtype) for name in mask]

    @torch.no_grad()
    def mask_weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)

    @torch.no_grad()
    def mask_grads(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, [m for p, m in zip(self.params, self.masks) if p.grad is not None])

    @torch.no_grad()
    def mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero optimizer buffers at pruned coordinates (used when restoring state saved before pruning)."""
        for p, m in zip(self.params, self.masks):
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    value.mul_(m)
