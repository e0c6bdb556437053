"""What a dataset contains, as one string that enters the dense network's recipe (experiments/recipes.py): data
changed in place gives new networks, identical data at another path is the same data.

- Datasets read from files (fashion_mnist, mnist: the four IDX files; cifar10, cifar100: the pickled batches): the
  SHA-256 of every file's bytes, with each file's digest cached by its real path, size, modification time and
  inode, so a re-run hashes nothing.
- Image folders (imagefolder, imagenet): the sorted list of every image under train/ and val/ with its size, and
  the bytes of a sample of at most `FOLDER_SAMPLE` images evenly spaced in that list (every image of a smaller
  folder). The whole fingerprint is cached by the list with modification times. A file changed in place that keeps
  its size and lies outside the sample is not seen (docs/run-format.md says so); any file added, removed, renamed
  or resized is.
- Anything else (synthetic data, plugin datasets): the SHA-256 of the tensors the network trains and is evaluated
  on, computed from the loaded data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lottery.errors import UserError
from lottery.spec import DatasetSpec

FOLDER_SAMPLE = 1000  # images of a folder dataset whose bytes are hashed
CACHE_VERSION = 1
_CHUNK = 1 << 20


def _idx_files(spec: DatasetSpec) -> list[Path]:
    from lottery.data import idx

    root = spec.root or idx.DEFAULT_ROOT[spec.name]
    if root is None or not Path(root).is_dir():
        return []  # the loader says what is wrong, in one line, when the data is loaded
    found = []
    for stem in idx.FILES.values():
        candidates = [Path(root) / stem, Path(root) / f"{stem}.gz"]
        found += [c for c in candidates if c.is_file()][:1]
    return found


def _cifar_files(spec: DatasetSpec) -> list[Path]:
    from lottery.data import cifar

    try:
        folder = cifar.find_folder(spec.name, spec.root)
    except UserError:
        return []
    layout = cifar.LAYOUTS[spec.name]
    return [folder / f for f in (*layout.train, *layout.test)]


FILES: dict[str, Callable[[DatasetSpec], list[Path]]] = {
    "fashion_mnist": _idx_files,
    "mnist": _idx_files,
    "cifar10": _cifar_files,
    "cifar100": _cifar_files,
}
FOLDERS = ("imagefolder", "imagenet")


class Cache:
    """Digests by a file's (real path, size, modification time, inode), in one JSON file (inside the store)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, str] = {}
        self.changed = False
        if path is not None and path.is_file() and not path.is_symlink():
            try:
                data = json.loads(path.read_text())
                if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
                    self.entries = {str(k): str(v) for k, v in data.get("entries", {}).items()}
            except (OSError, ValueError):
                self.entries = {}  # a damaged cache is only a cache: computed again

    def get(self, key: str, compute: Callable[[], str]) -> str:
        if key not in self.entries:
            self.entries[key] = compute()
            self.changed = True
        return self.entries[key]

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        from lottery.store.atomic import write_json

        try:
            write_json(self.path, {"version": CACHE_VERSION, "entries": self.entries})
        except OSError:
            pass  # a read-only store: the digests are computed again next time


def _stat_key(path: Path) -> str:
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files_fingerprint(files: list[Path], cache: Cache) -> str:
    h = hashlib.sha256()
    for path in files:
        digest = cache.get(_stat_key(path), lambda p=path: file_digest(p))
        h.update(f"{path.name}\0{digest}\n".encode())
    return "files:" + h.hexdigest()


def _folder_listing(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    from lottery.data.folder import EXTENSIONS, SPLITS

    listing = []
    for split in SPLITS:
        top = root / split
        for directory, subdirectories, names in os.walk(top):
            subdirectories.sort()
            for name in sorted(names):
                if name.lower().endswith(EXTENSIONS):
                    path = Path(directory) / name
                    try:
                        st = path.stat()
                    except OSError:
                        continue  # a dangling link: the loader reports it
                    listing.append((path.relative_to(root).as_posix(), path, st))
    return sorted(listing, key=lambda entry: entry[0])


def _folder_fingerprint(spec: DatasetSpec, cache: Cache, data: Callable[[], Any]) -> str:
    if spec.root is None or not Path(spec.root).expanduser().is_dir():
        data()  # the loader says in one line what is wrong
    root = Path(spec.root).expanduser()
    listing = _folder_listing(root)
    stats = hashlib.sha256("".join(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n" for rel, _, st in listing).encode())

    def compute() -> str:
        h = hashlib.sha256(f"sample {FOLDER_SAMPLE}\n".encode())
        for rel, _, st in listing:
            h.update(f"{rel}|{st.st_size}\n".encode())
        step = max(1, -(-len(listing) // FOLDER_SAMPLE))
        for rel, path, _ in listing[::step]:
            h.update(f"{rel}\0{file_digest(path)}\n".encode())
        return "folder:" + h.hexdigest()

    return cache.get(f"folder|{os.path.realpath(root)}|{stats.hexdigest()}", compute)


def tensors_digest(tensors: dict[str, Any]) -> str:
    """SHA-256 of named tensors (their dtype, shape and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "tensors:" + h.hexdigest()


def fingerprint(spec: DatasetSpec, data: Callable[[], Any], cache_file: Path | None = None) -> str:
    """The content fingerprint of the dataset `spec` names; `data` loads it (asked only for datasets not read from
    files); `cache_file`: where file digests are kept between processes (None: not kept)."""
    cache = Cache(cache_file)
    try:
        if spec.name in FILES:
            files = FILES[spec.name](spec)
            if not files:
                data()  # the loader says in one line what is missing
                raise UserError(f"{spec.name}: no data files found")
            found = _files_fingerprint(files, cache)
        elif spec.name in FOLDERS:
            found = _folder_fingerprint(spec, cache, data)
        else:
            loaded = data()
            found = tensors_digest(dict(vars(loaded)))
    finally:
        cache.save()
    return found
