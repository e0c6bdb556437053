"""Atomic writes: temporary file in the same directory, flush, fsync, rename. A reader never sees a
partial file; a crash leaves either the old file or the new one. The temporary file is named as the store's own
(`layout.TEMPORARY`: `.<name>.lottery-<pid>-<random>.tmp`), and a path inside a store is written only where it
stays inside it (`layout.confined`: no link out of the store on the way)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from lottery.errors import UserError
from lottery.store import layout

_UMASK = os.umask(0)
os.umask(_UMASK)

INTACT = " (earlier artifacts are intact; once the write can succeed, the same command resumes)"


def write_bytes(path: Path, data: bytes) -> None:
    commit(prepare(path, data), path)


def prepare(path: Path, data: bytes) -> Path:
    """The first half of an atomic write: `data` in a temporary file beside `path`, flushed and fsynced; its
    path. Nothing at `path` changes. On failure the temporary file is removed (UserError)."""
    path = Path(path)
    layout.confined(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=layout.temporary_prefix(path.name), suffix=".tmp")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}{INTACT}") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or error}{INTACT}") from None
    return Path(tmp)


def commit(tmp: Path, path: Path) -> None:
    """The second half: rename the prepared temporary file over `path` and fsync the directory."""
    path = Path(path)
    try:
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or error}{INTACT}") from None


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes, with `metadata` (string -> string) in the header, sorted by key: the same tensors and
    metadata always give the same bytes (safetensors itself writes metadata in a random, per-process order)."""
    data = save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    if not metadata:
        return data
    size = int.from_bytes(data[:8], "little")
    header = {"__metadata__": dict(sorted(metadata.items())), **json.loads(data[8 : 8 + size])}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data that follows stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def tensors_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors keyed by name, in sorted key order (safetensors does not keep the order they were saved in)."""
    tensors = load_safetensors_bytes(data)
    return {name: tensors[name] for name in sorted(tensors)}
