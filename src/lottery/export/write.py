"""Write a run's ticket or trained subnetwork in a form other code loads directly, with a model card.

Out directory, by `--format`:
- `safetensors`: `model.safetensors` (exactly the model's `state_dict` keys, with the run's provenance in its
  metadata) and `mask.safetensors` (a bool tensor per prunable parameter, True = kept);
- `state-dict`: `model.pt` (`torch.save` of the `state_dict`) and `mask.pt`;
- `torch-prune`: `model.pt` in `torch.nn.utils.prune`'s convention: every masked parameter `<name>` is stored as
  `<name>_orig` and `<name>_mask` (the mask, in the parameter's dtype), so a model with
  `prune.custom_from_mask` applied loads it with `strict=True` and `prune.remove` makes it permanent;
and `README.md`, the model card.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor

from lottery.errors import UserError
from lottery.export.card import model_card
from lottery.export.locate import find_run
from lottery.store import atomic, load_spec
from lottery.store.provenance import read_metadata

FORMATS = ("safetensors", "torch-prune", "state-dict")
WHAT = {"ticket": "start.safetensors", "trained": "final.safetensors"}  # the ticket is m ⊙ W_k: the start weights


def torch_prune_state(weights: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Tensor]:
    """`torch.nn.utils.prune`'s state_dict: `<name>_orig` and `<name>_mask` for each masked parameter."""
    out = {}
    for name, value in weights.items():
        if name in mask:
            out[f"{name}_orig"] = value
            out[f"{name}_mask"] = mask[name].to(value.dtype)
        else:
            out[name] = value
    return out


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def export_ticket(
    experiment: Path | str,
    level: int,
    kind: str = "imp",
    what: str = "ticket",
    fmt: str = "safetensors",
    out: Path | str | None = None,
    rewind: int | None = None,
    replicate: int = 0,
    seed: int = 0,
) -> Path:
    """Export run (kind, level, rewind, replicate, seed) of the experiment: `what` 'ticket' (m ⊙ W_k and its mask)
    or 'trained' (the trained subnetwork), in format `fmt`; returns the output directory."""
    if what not in WHAT:
        raise UserError(f"--what must be one of {', '.join(WHAT)}, got '{what}'")
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    experiment = Path(experiment)
    spec, preset = load_spec(experiment)
    run = find_run(experiment, level, kind, rewind, replicate, seed)
    weights, mask = run.read_tensors(WHAT[what]), run.read_tensors("mask.safetensors")
    if weights is None or mask is None:
        raise UserError(f"{run.path}: {WHAT[what]} or mask.safetensors is missing or fails verification")
    relative = run.path.relative_to(experiment).as_posix()
    if out is None:
        out = Path(f"{experiment.resolve().name}_{relative.replace('/', '_')}_{what}")
    out = Path(out)
    source = read_metadata(run.path / WHAT[what])
    metadata = {**source, "exported": what, "exported_from": relative}
    if fmt == "safetensors":
        files = {"model.safetensors": atomic.tensors_to_bytes(weights, metadata),
                 "mask.safetensors": atomic.tensors_to_bytes(mask, {**metadata, "file": "mask"})}  # fmt: skip
    elif fmt == "state-dict":
        files = {"model.pt": _torch_bytes(weights), "mask.pt": _torch_bytes(mask)}
    else:
        files = {"model.pt": _torch_bytes(torch_prune_state(weights, mask))}
    summary = run.read_json("summary.json") or {}
    sparsity = run.read_json("sparsity.json") or {}
    card = model_card(spec, preset, relative, metadata, summary, sparsity, weights, what, fmt, list(files))
    for name, data in {**files, "README.md": card.encode()}.items():
        atomic.write_bytes(out / name, data)
    return out
