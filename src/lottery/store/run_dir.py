"""A run directory: artifacts written atomically, each recorded with its SHA-256 in `manifest.json`.

An artifact is trusted only when its bytes match the manifest; anything missing, truncated, edited
or written without a manifest entry (a crash between the two writes) is treated as absent, so the
step that produces it runs again.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import torch

from lottery import collective
from lottery.errors import UserError
from lottery.store import atomic, layout, provenance

MANIFEST = "manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_regular(path: Path) -> bytes:
    """A regular file's bytes, never through a link at its name and never a device or a pipe (a link to /dev/zero
    would be read forever): OSError (ELOOP, EINVAL) for those."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


class RunDir:
    def __init__(self, path: Path | str, provenance: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.provenance = provenance  # the run's identity, written into every safetensors file (store/provenance.py)

    def with_provenance(self, provenance: dict[str, str]) -> RunDir:
        """This directory, writing `provenance` into the metadata of the safetensors files it writes."""
        return RunDir(self.path, provenance)

    def __truediv__(self, name: str) -> RunDir:
        return RunDir(self.path / name)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # manifest ---------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, str]:
        try:
            data = json.loads(read_regular(self.path / MANIFEST))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _record(self, name: str, digest: str | None) -> None:
        """Record (or forget) one artifact; entries whose file is gone are dropped on the way (a damaged or
        edited entry name would otherwise be reported missing forever)."""
        manifest = {n: d for n, d in self.manifest().items() if isinstance(n, str) and (self.path / n).is_file()}
        if digest is None:
            manifest.pop(name, None)
        else:
            manifest[name] = digest
        atomic.write_json(self.path / MANIFEST, dict(sorted(manifest.items())))

    # bytes ------------------------------------------------------------------------------------------
    def write(self, name: str, data: bytes) -> None:
        with collective.main_writes() as main:  # data parallel: every rank calls, rank 0 writes
            if main:
                self._write(name, data)

    def _write(self, name: str, data: bytes) -> None:
        """The new bytes are made durable in a temporary file, then recorded, then renamed into place. A write
        that fails before the rename (disk full, the manifest's own write) leaves the old file and its entry
        as they were -- everything the manifest lists still verifies, a previous checkpoint included. If the
        rename itself fails, the old entry is put back (best effort). Only a process killed between the
        manifest's write and the rename leaves an entry its file does not match (reported, and recomputed)."""
        path = self.path / name
        tmp = atomic.prepare(path, data)
        old = self.manifest().get(name)
        try:
            self._record(name, sha256(data))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            atomic.commit(tmp, path)
        except UserError:
            try:
                self._record(name, old)
            except UserError:
                pass
            raise

    def read(self, name: str, quiet: bool = False) -> bytes | None:
        """The artifact's bytes if present and matching the manifest; None otherwise (said on stderr
        when a file exists but fails verification)."""
        path = self.path / name
        layout.confined(path)  # nothing is read through a link out of the store (UserError)
        if not path.exists():
            return None
        expected = self.manifest().get(name)
        try:
            data = read_regular(path)
        except OSError as error:
            if not quiet and error.errno in (errno.ELOOP, errno.EINVAL):
                print(f"lottery: {path} is a link or not a regular file: not read; recomputing it", file=sys.stderr)
            return None
        if expected is None or sha256(data) != expected:
            if not quiet:
                why = "not in the manifest" if expected is None else "checksum mismatch (truncated or modified)"
                print(f"lottery: {path} failed verification ({why}); recomputing it", file=sys.stderr)
            return None
        return data

    def exists(self, name: str) -> bool:
        return self.read(name, quiet=True) is not None

    def remove(self, name: str) -> None:
        with collective.main_writes() as main:  # data parallel: every rank calls, rank 0 writes
            if main:
                # Forget it first: a kill in between leaves an unrecorded file, which is never trusted (and a
                # finished run never reads it again), rather than a manifest entry for a file that is gone.
                layout.confined(self.path / name)
                self._record(name, None)
                (self.path / name).unlink(missing_ok=True)

    # typed helpers ----------------------------------------------------------------------------------
    def write_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        self.write(name, atomic.tensors_to_bytes(tensors, provenance.file_metadata(self.provenance, name)))

    def read_tensors(self, name: str) -> dict[str, torch.Tensor] | None:
        data = self.read(name)
        return None if data is None else atomic.tensors_from_bytes(data)

    def write_json(self, name: str, obj: Any) -> None:
        self.write(name, (json.dumps(obj, indent=2) + "\n").encode())

    def read_json(self, name: str) -> Any | None:
        data = self.read(name)
        return None if data is None else json.loads(data)

    def write_torch(self, name: str, obj: Any) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        self.write(name, buffer.getvalue())

    def read_torch(self, name: str) -> Any | None:
        data = self.read(name)
        return None if data is None else torch.load(io.BytesIO(data), weights_only=True)

    def remove_temporary(self) -> None:
        """Delete temporary files left here and in its snapshots by a lottery process killed mid-write (never trusted;
        call under the lock). Only files named as the store names its own (`layout.TEMPORARY`) whose process is no
        longer running are removed; any other file is left alone, and nothing outside the store is touched."""
        for directory in (self.path, self.path / layout.SNAPSHOTS):
            layout.confined(directory / MANIFEST)
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                match = layout.TEMPORARY.match(entry.name)
                if match and entry.is_file(follow_symlinks=False) and not _running(int(match.group("pid"))):
                    Path(entry.path).unlink(missing_ok=True)

    def verify(self) -> list[tuple[str, str]]:
        """(file, problem) for every manifest entry that is missing, unreadable or does not match, and for
        a manifest that exists but cannot be read (every artifact it listed is then untrusted)."""
        try:
            manifest = json.loads(read_regular(self.path / MANIFEST))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            manifest = None
        if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
            return [(MANIFEST, "malformed manifest (the artifacts here are untrusted and will be recomputed)")]
        problems = []
        for name, digest in manifest.items():
            try:
                data = read_regular(self.path / name)
            except FileNotFoundError:
                problems.append((name, "missing"))
            except OSError as error:
                problems.append((name, f"unreadable ({error.strerror or error})"))
            else:
                if sha256(data) != digest:
                    problems.append((name, "checksum mismatch (truncated or modified)"))
        return problems


def _running(pid: int) -> bool:
    """Whether a process `pid` is running on this machine (this one included: another thread may be writing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or no such pid at all: kept, to be safe
    return True


ARTIFACTS = ("*.safetensors", "*.json", "*.jsonl", "*.csv", "*.pt", "*.toml")  # what `lottery` writes in a run


def missing_manifests(root: Path) -> list[tuple[Path, int]]:
    """(directory, number of artifacts) for every directory under `root` that holds artifacts but no
    `manifest.json` (a run's snapshot files belong to the run's manifest): none of them is trusted, and the next
    run recomputes them."""
    missing: dict[Path, int] = {}
    for directory in sorted({p.parent for p in layout.walk(root, *ARTIFACTS)}):
        owner = directory.parent if directory.name == "snapshots" else directory
        if any(part.startswith(".") for part in directory.relative_to(root).parts) or (owner / MANIFEST).exists():
            continue
        count = sum(
            1
            for p in directory.iterdir()
            if p.is_file()
            and not p.name.startswith(".")
            and p.name != layout.KEY_FILE
            and any(p.match(pattern) for pattern in ARTIFACTS)
        )
        if count:
            missing[owner] = missing.get(owner, 0) + count
    return sorted(missing.items())
