"""Load an exported ticket (any format of `lottery export`) into a user's own model, or, for a compact export, as
the ready smaller model."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from lottery.errors import UserError
from lottery.pruning import Mask
from lottery.store import atomic

WEIGHT_FILES = (  # (weights file, mask file) of each format, in the order an export directory is searched
    ("model.safetensors", "mask.safetensors"),
    ("model.pt", "mask.pt"),
    ("sparse.safetensors", None),
    ("compact.safetensors", "compact.json"),
)


def _read(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors or `torch.save` file; one line (UserError) for anything else: an empty or cut-off
    file, a pickle that is not a plain state_dict (never unpickled unsafely), a missing file."""
    try:
        if path.suffix == ".safetensors":
            return atomic.tensors_from_bytes(path.read_bytes())
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: the one line says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{path} is a pickle of objects other than tensors: refused (load_ticket reads weights only, never "
            "arbitrary pickled code)"
        ) from None
    except Exception as error:  # safetensors, zip and OS errors alike: the file is not a readable export
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        kind = "safetensors" if path.suffix == ".safetensors" else "torch.save (weights only)"
        size = path.stat().st_size if path.is_file() else 0
        raise UserError(f"cannot read {path} ({size} bytes) as a {kind} file: {detail}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state_dict (name -> tensor)")
    return state


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as error:
        raise UserError(f"cannot read {path} as a safetensors file: {error}") from None


def _files(path: Path) -> tuple[Path, Path | None]:
    """(weights file, mask file or None) of an export directory or a weights file."""
    if path.is_dir():
        for weights, mask in WEIGHT_FILES:
            if (path / weights).exists():
                return path / weights, (path / mask) if mask and (path / mask).exists() else None
        names = ", ".join(w for w, _ in WEIGHT_FILES)
        raise UserError(f"{path} holds no exported ticket (one of {names})")
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.name == "compact.safetensors":
        return path, path.with_name("compact.json")
    return path, None


def _compact(weights_file: Path, info_file: Path | None) -> nn.Module:
    from lottery.export import compact

    if info_file is None or not info_file.is_file():
        raise UserError(f"{weights_file} needs its compact.json beside it (how to build the network)")
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {info_file}: {error}") from None
    return compact.build(info, _read(weights_file))


def _load_state(model: nn.Module, state: dict[str, Tensor], strict: bool, path: Path) -> None:
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise UserError(f"{path} does not fit {type(model).__name__}: {detail}") from None


def load_ticket(path: Path | str, model: nn.Module | None = None, strict: bool = True) -> Mask | nn.Module:
    """Load the exported ticket at `path` (an export directory, or its weights file) into `model`; the mask.

    Files in `torch.nn.utils.prune`'s convention (`<name>_orig` + `<name>_mask`) are loaded by applying
    `prune.custom_from_mask` to each such parameter first (it stays pruned: `prune.remove` makes it permanent);
    the others are loaded with `model.load_state_dict(state, strict)`. The mask is read from the export (the
    `_mask` entries, `mask.*` next to the weights, or the sparse file's own), else it is where the weights are
    nonzero. A compact export (`--format compact`) is a smaller network of its own: `load_ticket(path)` returns it,
    ready (eval mode); give no model. A file that is not a readable export is refused in one line (UserError)."""
    weights_file, mask_file = _files(Path(path))
    if weights_file.name == "compact.safetensors":
        if model is not None:
            raise UserError(f"{path} is a compact ticket, a smaller network of its own: call load_ticket(path)")
        return _compact(weights_file, mask_file)
    if model is None:
        raise UserError(f"load_ticket({str(path)!r}) needs the model to load the ticket into")
    state = _read(weights_file)
    mask: Mask | None = None
    if weights_file.name == "sparse.safetensors":
        from lottery.export import sparse

        state, tensors = sparse.decode(state, _metadata(weights_file))
        mask = Mask(tensors)
    pruned = [k[: -len("_mask")] for k in state if k.endswith("_mask") and f"{k[: -len('_mask')]}_orig" in state]
    if pruned:
        for name in pruned:
            module_name, _, param = name.rpartition(".")
            module = model.get_submodule(module_name)
            if not hasattr(module, f"{param}_orig"):
                prune.custom_from_mask(module, param, state[f"{name}_mask"].to(getattr(module, param).device))
        mask = Mask({name: state[f"{name}_mask"].to(torch.bool) for name in pruned})
    elif mask is None and mask_file is not None:
        mask = Mask({k: v.to(torch.bool) for k, v in _read(mask_file).items()})
    _load_state(model, state, strict, weights_file)
    if mask is None:
        from lottery.pruning.prunable import prunable

        params = dict(model.named_parameters())
        mask = Mask({name: params[name].detach().cpu() != 0 for name in prunable(model)})
    return mask
