"""CIFAR-10/100 loaders on tiny files written in the real python-pickle batch layout."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lottery.data import load
from lottery.errors import UserError
from lottery.registry import datasets as loaders
from lottery.spec import DatasetSpec

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes, legacy_numpy: bool) -> None:
    """A batch as the CIFAR archives store it: a pickled dict of bytes keys, b'data' a uint8 (N, 3072) array."""
    batch = {b"batch_label": b"batch", label_key: labels, b"data": data, b"filenames": [b"x.png"] * len(labels)}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [y // 5 for y in labels]
    raw = pickle.dumps(batch, protocol=2)
    if legacy_numpy:  # the archives were written with numpy 1.x, whose module path numpy 2 renamed
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)


def write_cifar(root: Path, classes: int, per_file: int = 3, legacy_numpy: bool = False) -> dict[str, np.ndarray]:
    """Random images and labels in the real layout under `root`; returns what the loader should produce."""
    rng = np.random.default_rng(classes)
    if classes == 10:
        folder, train, test, key = root / "cifar-10-batches-py", CIFAR10_TRAIN, ["test_batch"], b"labels"
    else:
        folder, train, test, key = root / "cifar-100-python", ["train"], ["test"], b"fine_labels"
    folder.mkdir(parents=True)
    out: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for split, files in (("train", train), ("test", test)):
        for name in files:
            data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            labels = rng.integers(0, classes, per_file).tolist()
            write_batch(folder / name, data, labels, key, legacy_numpy)
            out[f"{split}_x"].append(data)
            out[f"{split}_y"].append(np.array(labels))
    return {k: np.concatenate(v) for k, v in out.items()}


def check(data, expected: dict[str, np.ndarray], classes: int) -> None:
    assert data.num_classes == classes
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        raw = expected[f"{split}_x"]
        assert x.shape == (len(raw), 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.tolist() == expected[f"{split}_y"].tolist()
        # Channel-major rows: value (c, row, col) sits at c * 1024 + row * 32 + col.
        assert x[0, 1, 2, 3].item() == pytest.approx(raw[0, 1024 + 2 * 32 + 3] / 255)
        assert torch.equal(x, torch.from_numpy(raw).float().div(255).view(-1, 3, 32, 32))


@pytest.mark.parametrize("classes,name", [(10, "cifar10"), (100, "cifar100")])
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_loads_real_layout(tmp_path: Path, classes: int, name: str, point_at: str) -> None:
    expected = write_cifar(tmp_path, classes)
    root = tmp_path if point_at == "parent" else next(tmp_path.iterdir())
    data = loaders.get(name)(DatasetSpec(name=name, root=str(root)))
    check(data, expected, classes)
    assert len(data.train_x) == (15 if classes == 10 else 3)


def test_numpy1_pickles_load(tmp_path: Path) -> None:
    expected = write_cifar(tmp_path, 10, legacy_numpy=True)
    assert b"numpy.core.multiarray" in (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    check(loaders.get("cifar10")(DatasetSpec(name="cifar10", root=str(tmp_path))), expected, 10)


def test_full_pipeline_splits_and_normalises(tmp_path: Path) -> None:
    write_cifar(tmp_path, 10, per_file=4)
    splits = load(DatasetSpec(name="cifar10", root=str(tmp_path), validation_size=5))
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == 10
    assert len(splits.train_x) == 15 and len(splits.val_x) == 5 and len(splits.test_x) == 4
    assert splits.pad_value.shape == (3,) and (splits.pad_value < 0).all()
    assert splits.train_x.mean(dim=(0, 2, 3)).abs().max() < 1e-4


def test_missing_directory_explains_the_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as error:
        loaders.get("cifar10")(DatasetSpec(name="cifar10", root=str(missing)))
    message = str(error.value)
    assert str(missing) in message and "cifar-10-batches-py" in message and "data_batch_1" in message
    with pytest.raises(UserError, match="cifar-100-python.*fine_labels"):
        loaders.get("cifar100")(DatasetSpec(name="cifar100", root=str(tmp_path)))
    with pytest.raises(UserError, match="dataset.root"):
        loaders.get("cifar10")(DatasetSpec(name="cifar10"))


def test_missing_batch_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UserError, match="does not hold the batch files"):
        loaders.get("cifar10")(DatasetSpec(name="cifar10", root=str(tmp_path)))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda path: path.write_bytes(path.read_bytes()[:100]),  # truncated
        lambda path: path.write_bytes(b"not a pickle"),
        lambda path: path.write_bytes(pickle.dumps([1, 2, 3])),  # not a dict
        lambda path: path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})),  # no labels
        lambda path: write_batch(path, np.zeros((2, 1000), np.uint8), [0, 1], b"labels", False),  # wrong size
        lambda path: write_batch(path, np.zeros((2, 3072), np.float32), [0, 1], b"labels", False),  # not uint8
        lambda path: write_batch(path, np.zeros((2, 3072), np.uint8), [0], b"labels", False),  # count mismatch
        lambda path: write_batch(path, np.zeros((2, 3072), np.uint8), [0, 10], b"labels", False),  # label range
    ],
)
def test_malformed_batches_are_user_errors(tmp_path: Path, corrupt) -> None:
    write_cifar(tmp_path, 10)
    corrupt(tmp_path / "cifar-10-batches-py" / "data_batch_2")
    with pytest.raises(UserError, match="data_batch_2"):
        loaders.get("cifar10")(DatasetSpec(name="cifar10", root=str(tmp_path)))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickles_cannot_run_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path, 10)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit()}, protocol=2))
    with pytest.raises(UserError, match="test_batch"):
        loaders.get("cifar10")(DatasetSpec(name="cifar10", root=str(tmp_path)))
    assert not (tmp_path / "pwned").exists()
