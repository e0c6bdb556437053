"""Load an exported ticket (any format of `lottery export`) into a user's own model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from lottery.errors import UserError
from lottery.pruning import Mask
from lottery.store import atomic


def _read(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return atomic.tensors_from_bytes(path.read_bytes())
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state_dict")
    return state


def _files(path: Path) -> tuple[Path, Path | None]:
    """(weights file, mask file or None) of an export directory or a weights file."""
    if path.is_dir():
        for weights, mask in (("model.safetensors", "mask.safetensors"), ("model.pt", "mask.pt")):
            if (path / weights).exists():
                return path / weights, (path / mask) if (path / mask).exists() else None
        raise UserError(f"{path} holds no exported ticket (model.safetensors or model.pt)")
    if not path.exists():
        raise UserError(f"{path} does not exist")
    return path, None


def load_ticket(path: Path | str, model: nn.Module, strict: bool = True) -> Mask:
    """Load the exported ticket at `path` (an export directory, or its weights file) into `model`; the mask.

    Files in `torch.nn.utils.prune`'s convention (`<name>_orig` + `<name>_mask`) are loaded by applying
    `prune.custom_from_mask` to each such parameter first (it stays pruned: `prune.remove` makes it permanent);
    the others are loaded with `model.load_state_dict(state, strict)`. The mask is read from the export (the
    `_mask` entries, or `mask.*` next to the weights), else it is where the weights are nonzero."""
    weights_file, mask_file = _files(Path(path))
    state = _read(weights_file)
    pruned = [k[: -len("_mask")] for k in state if k.endswith("_mask") and f"{k[: -len('_mask')]}_orig" in state]
    if pruned:
        for name in pruned:
            module_name, _, param = name.rpartition(".")
            module = model.get_submodule(module_name)
            if not hasattr(module, f"{param}_orig"):
                prune.custom_from_mask(module, param, state[f"{name}_mask"].to(getattr(module, param).device))
        mask = Mask({name: state[f"{name}_mask"].to(torch.bool) for name in pruned})
    else:
        mask = Mask({k: v.to(torch.bool) for k, v in _read(mask_file).items()}) if mask_file else None
    model.load_state_dict(state, strict=strict)
    if mask is None:
        from lottery.pruning.prunable import prunable

        params = dict(model.named_parameters())
        mask = Mask({name: params[name].detach().cpu() != 0 for name in prunable(model)})
    return mask
