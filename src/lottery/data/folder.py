"""Image folders on disk: `ROOT/train/<class>/*.JPEG` and `ROOT/val/<class>/*.JPEG` (ImageNet, Imagenette,
Tiny-ImageNet after the usual reorganisation of its val/ folder, any user's folder), listed, never loaded.

Classes are the sub-folders of train/, labelled 0..C-1 in sorted name order. `dataset.classes = K` keeps K of
them chosen with a fixed seed (ImageNet-100 style studies), `dataset.fraction = f` keeps a seeded fraction of
each class's training images (at least one per class); val/ keeps every image of the kept classes. As for the
in-memory datasets, `dataset.validation_size` examples are held out of the training images (fixed seed) for
early stopping, and val/ is the test split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lottery.errors import UserError

EXTENSIONS = (".jpeg", ".jpg", ".png")
SUBSET_SEED = 0  # fixed: which classes and examples a subset keeps never depends on a training seed
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Listing:
    """The files of one split and their labels, in a fixed order (class, then file name)."""

    paths: tuple[str, ...]
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, index: torch.Tensor) -> Listing:
        return Listing(tuple(self.paths[i] for i in index.tolist()), self.labels[index])


def _split_dir(root: Path, split: str, name: str) -> Path:
    folder = root / split
    if not folder.is_dir():
        raise UserError(
            f"{name}: missing split folder {folder}; expected {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG"
        )
    return folder


def _is(entry: os.DirEntry, kind: str, name: str) -> bool:
    """Whether a folder's entry is a directory (`kind` 'dir') or a file ('file'), following links; a link that
    cannot be followed (one that points to itself: ELOOP) is refused naming it. A dangling link is neither."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError as error:
        raise UserError(f"{name}: cannot read {entry.path}: {error.strerror} (remove it or fix the link)") from None


def class_names(root: Path, name: str) -> list[str]:
    """The sorted class folders of train/."""
    folder = _split_dir(root, "train", name)
    classes = sorted(entry.name for entry in os.scandir(folder) if _is(entry, "dir", name))
    if not classes:
        raise UserError(f"{name}: {folder} holds no class folders; expected {folder}/<class>/*.JPEG")
    return classes


def list_split(root: Path, split: str, classes: list[str], name: str) -> Listing:
    """Every image of `split` in the given classes (label = position in `classes`); an empty class is an error."""
    folder = _split_dir(root, split, name)
    paths: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        class_dir = folder / cls
        if not class_dir.is_dir():
            raise UserError(f"{name}: class '{cls}' of train/ has no folder {class_dir} in {split}/")
        files = sorted(
            e.name for e in os.scandir(class_dir) if e.name.lower().endswith(EXTENSIONS) and _is(e, "file", name)
        )
        if not files:
            raise UserError(f"{name}: {class_dir} holds no images ({', '.join(EXTENSIONS)}); remove it or add images")
        paths.extend(str(class_dir / f) for f in files)
        labels.extend([label] * len(files))
    return Listing(tuple(paths), torch.tensor(labels, dtype=torch.int64))


def choose_classes(classes: list[str], keep: int | None, name: str) -> list[str]:
    """`keep` classes chosen with SUBSET_SEED (sorted), or all of them."""
    if keep is None:
        return classes
    if keep > len(classes):
        raise UserError(f"dataset.classes = {keep} but {name} has {len(classes)} classes")
    order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(SUBSET_SEED))
    return [classes[i] for i in sorted(order[:keep].tolist())]


def fraction_subset(listing: Listing, fraction: float | None, num_classes: int) -> Listing:
    """A seeded `fraction` of each class's examples (at least one), in listing order."""
    if fraction is None or fraction >= 1:
        return listing
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    kept = []
    for label in range(num_classes):
        members = (listing.labels == label).nonzero().flatten()
        count = max(1, round(fraction * len(members)))
        kept.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return listing.take(torch.cat(kept).sort().values)
