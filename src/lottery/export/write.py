"""Write a run's ticket or trained subnetwork in a form other code loads directly, with a model card.

Out directory, by `--format`:
- `safetensors`: `model.safetensors` (exactly the model's `state_dict` keys, with the run's provenance in its
  metadata) and `mask.safetensors` (a bool tensor per prunable parameter, True = kept);
- `state-dict`: `model.pt` (`torch.save` of the `state_dict`) and `mask.pt`;
- `torch-prune`: `model.pt` in `torch.nn.utils.prune`'s convention: every masked parameter `<name>` is stored as
  `<name>_orig` and `<name>_mask` (the mask, in the parameter's dtype), so a model with
  `prune.custom_from_mask` applied loads it with `strict=True` and `prune.remove` makes it permanent;
- `sparse`: `sparse.safetensors`, kept values + bit-packed mask or CSR per masked tensor (`lottery.export.sparse`);
- `compact`: `compact.safetensors` + `compact.json`, a channel ticket as a smaller network (`lottery.export.compact`);
and `README.md`, the model card, and `export.json`, which says what the directory holds: an export goes only into
a new or empty directory, or one holding an earlier export of the same ticket in the same format (then rewritten).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import Tensor

from lottery.errors import UserError
from lottery.export import compact, sparse
from lottery.export.card import model_card
from lottery.export.locate import find_run
from lottery.pruning import Mask
from lottery.spec import ExperimentSpec, to_dict
from lottery.store import atomic, load_spec
from lottery.store.provenance import read_metadata

FORMATS = ("safetensors", "torch-prune", "state-dict", "sparse", "compact")
MARKER = "export.json"
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
    files = _encode(fmt, weights, mask, metadata, spec)
    summary = run.read_json("summary.json") or {}
    sparsity = run.read_json("sparsity.json") or {}
    sizes = file_sizes(files, weights)
    widths = json.loads(files["compact.json"])["widths"] if fmt == "compact" else None
    card = model_card(
        spec, preset, relative, metadata, summary, sparsity, weights, what, fmt, list(files), sizes, widths
    )
    identity = {"experiment": experiment.resolve().name, "run": relative, "what": what, "format": fmt}
    marker = json.dumps({**identity, "files": sorted([*files, "README.md"]), "sizes": sizes}, indent=1) + "\n"
    check_out(out, identity, {*files, "README.md"})
    atomic.write_bytes(out / MARKER, marker.encode())  # first: a write cut off here leaves a directory it may redo
    for name, data in {**files, "README.md": card.encode()}.items():
        atomic.write_bytes(out / name, data)
    return out


def _encode(
    fmt: str, weights: dict[str, Tensor], mask: dict[str, Tensor], metadata: dict[str, str], spec: ExperimentSpec
) -> dict[str, bytes]:
    """The files of format `fmt` (besides README.md and export.json): name -> bytes."""
    if fmt == "safetensors":
        return {
            "model.safetensors": atomic.tensors_to_bytes(weights, metadata),
            "mask.safetensors": atomic.tensors_to_bytes(mask, {**metadata, "file": "mask"}),
        }
    if fmt == "state-dict":
        return {"model.pt": _torch_bytes(weights), "mask.pt": _torch_bytes(mask)}
    if fmt == "torch-prune":
        return {"model.pt": _torch_bytes(torch_prune_state(weights, mask))}
    if fmt == "sparse":
        tensors, layouts = sparse.encode(weights, mask)
        return {"sparse.safetensors": atomic.tensors_to_bytes(tensors, {**metadata, **layouts})}
    ordered = Mask({name: mask[name] for name in weights if name in mask})  # the model's parameter order
    small = compact.compact_state(weights, ordered)
    info = compact.describe(to_dict(spec)["model"], ordered, weights, small)
    return {
        "compact.safetensors": atomic.tensors_to_bytes(small, {**metadata, "file": "compact"}),
        "compact.json": (json.dumps(info, indent=1) + "\n").encode(),
    }


def file_sizes(files: dict[str, bytes], weights: dict[str, Tensor]) -> dict[str, int]:
    """Bytes of the exported weights (every file but README.md and export.json) and of the dense safetensors file."""
    return {
        "export_bytes": sum(len(data) for data in files.values()),
        "dense_bytes": len(atomic.tensors_to_bytes(weights)),
    }


def check_out(out: Path, identity: dict[str, str], names: set[str]) -> None:
    """Refuse an out directory that holds anything but an earlier export of the same ticket in the same format:
    nothing of the user's is replaced, and two exports never mix (docs/export.md)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {out} exists and is not a directory: give a new or empty directory")
    present = {p.name for p in out.iterdir()} if out.is_dir() else set()
    present = {name for name in present if not (name.startswith(".") and name.endswith(".tmp"))}
    if not present:
        return
    try:
        earlier = json.loads((out / MARKER).read_text()) if (out / MARKER).is_file() else None
    except (OSError, ValueError):
        earlier = None
    same = isinstance(earlier, dict) and all(earlier.get(k) == v for k, v in identity.items())
    if not same or not present <= names | {MARKER} or any((out / name).is_symlink() for name in present):
        what = "an export of another ticket or format" if isinstance(earlier, dict) else "files that are not an export"
        shown = ", ".join(sorted(present)[:3]) + (", ..." if len(present) > 3 else "")
        raise UserError(
            f"--out {out} holds {what} ({shown}): lottery export writes only into a new or empty directory, or over "
            "an earlier export of the same ticket and format; give another --out"
        )
