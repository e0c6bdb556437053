"""Masks: a 0/1 (bool) tensor per prunable parameter, keyed by its `state_dict` name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ORDER_KEY = "lottery.order"  # safetensors keeps no key order; the mask's order decides ties and random masks


class Mask(dict[str, Tensor]):
    """Parameter name -> bool tensor of the parameter's shape (True = kept), in the model's parameter order.

    `metadata` holds what `Mask.load` read next to the tensors (empty otherwise)."""

    metadata: dict[str, str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metadata = {}

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
        """Density of every layer: {parameter name: fraction kept}."""
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

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero `model`'s pruned weights in place; returns the model. (To keep them zero while training, use
        `lottery.attach(mask, optimizer)`.)"""
        params = dict(model.named_parameters())
        missing = [name for name in self if name not in params]
        if missing:
            from lottery.errors import UserError

            raise UserError(f"mask names parameters {type(model).__name__} does not have: {', '.join(missing[:5])}")
        for name, m in self.items():
            params[name].mul_(m.to(params[name].device, params[name].dtype))
        return model

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
        """Write the mask as a safetensors file (atomically), keyed by `state_dict` names, with `metadata`
        (str values as they are, anything else as JSON) and the key order."""
        from lottery.store import atomic

        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
        meta[ORDER_KEY] = json.dumps(list(self))
        tensors = {k: v.detach().cpu().to(torch.bool) for k, v in self.items()}
        atomic.write_bytes(Path(path), atomic.tensors_to_bytes(tensors, meta))  # metadata in sorted order: same bytes

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        """A mask written by `save` (or any safetensors file of bool tensors); `.metadata` holds its metadata."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            names = json.loads(meta.pop(ORDER_KEY)) if ORDER_KEY in meta else sorted(f.keys())
            mask = cls({name: f.get_tensor(name).to(torch.bool) for name in names})
        mask.metadata = meta
        return mask
