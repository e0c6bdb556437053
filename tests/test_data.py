"""The IDX loader on files written in the real format, the validation split, seeded data order."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lottery.data import BatchStream, epoch_permutation, load
from lottery.data.idx import read_idx
from lottery.errors import UserError
from lottery.spec import DatasetSpec


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(root: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(root / name, array, gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_real_format(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    splits = load(DatasetSpec(name="mnist", root=str(tmp_path), validation_size=10, normalize=False))
    assert splits.train_x.shape == (40, 1, 28, 28) and splits.val_x.shape == (10, 1, 28, 28)
    assert splits.test_x.shape == (20, 1, 28, 28) and splits.num_classes == 10
    # Every example keeps its label and its pixels (scaled to [0, 1]); train and validation partition the file.
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    expected = {(images[i].astype(np.uint8).tobytes(), int(labels[i])) for i in range(50)}
    got = {
        ((x[0] * 255).round().to(torch.uint8).numpy().tobytes(), int(y))
        for x, y in zip(torch.cat([splits.train_x, splits.val_x]), torch.cat([splits.train_y, splits.val_y]))
    }
    assert got == expected
    assert torch.equal(
        (splits.test_x[:, 0] * 255).round().to(torch.uint8),
        torch.from_numpy(arrays["t10k-images-idx3-ubyte"].astype(np.uint8)),
    )


def test_validation_split_is_fixed_and_normalised(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    a = load(DatasetSpec(name="mnist", root=str(tmp_path), validation_size=10))
    b = load(DatasetSpec(name="mnist", root=str(tmp_path), validation_size=10))
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert abs(float(a.train_x.mean())) < 1e-5 and abs(float(a.train_x.std()) - 1) < 1e-3
    none = load(DatasetSpec(name="mnist", root=str(tmp_path), validation_size=0))
    assert len(none.val_x) == 0 and len(none.train_x) == 50


def test_missing_and_malformed_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=str(tmp_path / "nowhere")):
        load(DatasetSpec(name="mnist", root=str(tmp_path / "nowhere")))
    with pytest.raises(UserError, match="set dataset.root"):
        load(DatasetSpec(name="mnist"))
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(UserError, match="truncated or malformed"):
        load(DatasetSpec(name="mnist", root=str(tmp_path)))
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(UserError, match="bad magic"):
        read_idx(bad)


def test_data_order_is_seeded_per_epoch_and_independent_of_other_seeds() -> None:
    x, y = torch.arange(100).float()[:, None], torch.arange(100)
    a = BatchStream(x, y, 10, data_order_seed=3, augmentation_seed=0)
    b = BatchStream(x, y, 10, data_order_seed=3, augmentation_seed=99)
    c = BatchStream(x, y, 10, data_order_seed=4)
    first = [a.batch(t)[1] for t in range(10)]
    assert all(torch.equal(f, b.batch(t)[1]) for t, f in enumerate(first))
    assert not torch.equal(torch.cat(first), torch.cat([c.batch(t)[1] for t in range(10)]))
    # Each epoch is a permutation: every example exactly once; epochs differ.
    assert sorted(torch.cat(first).tolist()) == list(range(100))
    second = torch.cat([a.batch(t)[1] for t in range(10, 20)])
    assert sorted(second.tolist()) == list(range(100)) and not torch.equal(second, torch.cat(first))
    # Random access equals sequential access (what resuming and rewinding rely on).
    assert torch.equal(BatchStream(x, y, 10, 3).batch(15)[1], a.batch(15)[1])
    assert torch.equal(epoch_permutation(100, 3, 1)[50:60], a.batch(15)[1])


def test_partial_last_batch_is_dropped() -> None:
    stream = BatchStream(torch.zeros(105, 1), torch.arange(105), 10, 0)
    assert stream.iterations_per_epoch == 10
    assert all(len(stream.batch(t)[1]) == 10 for t in range(25))


def test_fashion_mnist_is_installed() -> None:
    splits = load(DatasetSpec())
    assert splits.train_x.shape == (55000, 1, 28, 28) and splits.test_x.shape == (10000, 1, 28, 28)
    assert sorted(splits.test_y.unique().tolist()) == list(range(10))
