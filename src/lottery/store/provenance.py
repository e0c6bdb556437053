"""Provenance of every weights or mask file the engine writes: safetensors metadata (string -> string).

A file copied out of the store keeps what it is: the experiment and run it belongs to, the spec hash, the
kind, level, density and rewind iteration of the run, its seeds, the `lottery` and torch versions, and what
the file holds (`start`, `final`, `mask` or `snapshot`). The metadata is a pure function of the run and the
file name (no timestamps, no host names), so the same run writes the same bytes and resumes bit-identically.
Readers that only want tensors (`safetensors.torch.load_file`, `RunDir.read_tensors`) ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from safetensors import safe_open

from lottery.errors import UserError
from lottery.store.layout import SNAPSHOT_FILE

FORMAT = "lottery"  # the value of the `format` key: tells these files apart from other safetensors files
_ROLES = {"start.safetensors": "start", "final.safetensors": "final", "mask.safetensors": "mask"}


def describe_file(name: str) -> dict[str, str]:
    """What a file of a run directory holds, from its name: `{"file": role}`, plus `iteration` for a snapshot."""
    snapshot = SNAPSHOT_FILE.search(name)
    if snapshot:
        return {"file": "snapshot", "iteration": snapshot.group(1)}
    return {"file": _ROLES.get(Path(name).name, Path(name).stem)}


def file_metadata(run: Mapping[str, str] | None, name: str) -> dict[str, str]:
    """The metadata written into `name`: the run's provenance (may be empty), versions and the file's role."""
    import torch

    from lottery.version import __version__

    metadata = {"format": FORMAT, "lottery_version": __version__, "torch_version": torch.__version__}
    metadata.update({key: str(value) for key, value in (run or {}).items()})
    metadata.update(describe_file(name))
    return dict(sorted(metadata.items()))


def read_metadata(path: Path | str) -> dict[str, str]:
    """The metadata of a safetensors file ({} when it has none); UserError when it is not a safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (OSError, ValueError, RuntimeError) as error:
        raise UserError(f"{path} is not a readable safetensors file ({error})") from None
    except Exception as error:  # safetensors raises its own SafetensorError for a malformed header
        raise UserError(f"{path} is not a readable safetensors file ({error})") from None
