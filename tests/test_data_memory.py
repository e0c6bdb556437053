"""Loading holds one float32 copy of each split at most, with the same bits as before (issue 32)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.data.base import ImageData, load
from lottery.data.idx import DEFAULT_ROOT
from lottery.registry import Plugin, datasets
from lottery.spec import DatasetSpec

SPLITS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y", "pad_value")


def _images(seed: int, n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 2, 5, 5), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _labels(seed: int, n: int) -> torch.Tensor:
    return torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))


def _register(monkeypatch: pytest.MonkeyPatch, name: str, make) -> None:
    monkeypatch.setitem(datasets._items, name, Plugin("dataset", name, lambda: make()))


@settings(max_examples=25, deadline=None)
@given(
    validation=st.integers(0, 20),
    subset=st.none() | st.integers(1, 30),
    normalize=st.booleans(),
    own_val=st.booleans(),
)
def test_uint8_with_scale_loads_the_bits_of_float_images(validation, subset, normalize, own_val) -> None:
    """A loader returning uint8 images with scale 255 gives exactly the splits of one returning float32 / 255
    (the conversion after the split and the in-place normalisation change no bit)."""
    train, test = _images(1, 40), _images(2, 9)
    val = _images(3, 7) if own_val else None
    labels = (_labels(4, 40), _labels(5, 9), _labels(6, 7) if own_val else None)

    def as_float(x):
        return None if x is None else x.float().div_(255)

    stored = ImageData(train, labels[0], test, labels[1], 3, val, labels[2], scale=255)
    floats = ImageData(as_float(train), labels[0], as_float(test), labels[1], 3, as_float(val), labels[2])
    spec = DatasetSpec(name="stored", validation_size=validation, subset=subset, normalize=normalize)
    with pytest.MonkeyPatch.context() as patch:
        _register(patch, "stored", lambda: stored)
        _register(patch, "floats", lambda: floats)
        ours, reference = load(spec), load(DatasetSpec(**{**spec.__dict__, "name": "floats"}))
    for name in SPLITS:
        a, b = getattr(ours, name), getattr(reference, name)
        assert a.dtype == b.dtype and a.shape == b.shape and a.is_contiguous()
        assert torch.equal(
            a.view(-1).view(torch.int32) if a.is_floating_point() else a,
            b.view(-1).view(torch.int32) if b.is_floating_point() else b,
        )
    assert ours.train_x.dtype == torch.float32


def test_normalised_in_place_only_where_load_made_the_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loader's own tensors (its validation and test splits, its float images) are never changed by load."""
    train, test, val = (_images(s, n).float() / 255 for s, n in ((1, 30), (2, 8), (3, 6)))
    given_tensors = (train, test, val)
    before = [t.clone() for t in given_tensors]
    data = ImageData(train, _labels(4, 30), test, _labels(5, 8), 3, val, _labels(6, 6))
    _register(monkeypatch, "given", lambda: data)
    splits = load(DatasetSpec(name="given"))
    for tensor, original in zip(given_tensors, before, strict=True):
        assert torch.equal(tensor, original)
    expected = (test - train.mean(dim=(0, 2, 3)).view(-1, 1, 1)) / train.std(dim=(0, 2, 3)).view(-1, 1, 1)
    assert torch.equal(splits.test_x, expected)
    assert splits.train_x.abs().max() > 0 and splits.train_x.mean(dim=(0, 2, 3)).abs().max() < 1e-5


PEAK = """
import resource, sys
from lottery.data import load
from lottery.registry import Plugin, datasets
from lottery.spec import DatasetSpec
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
splits = load(DatasetSpec(name="fashion_mnist"))
held = sum(t.numel() * t.element_size() for t in (splits.train_x, splits.val_x, splits.test_x))
print(peak() - before, held)
"""


@pytest.mark.skipif(not Path(DEFAULT_ROOT["fashion_mnist"]).is_dir(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_loads_without_a_second_copy() -> None:
    """The process's peak grows by about the splits it keeps (219 MB), not by a second float32 copy of the set
    (before: +730 MB)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run(
        [sys.executable, "-c", PEAK],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    grown, held = map(int, out.stdout.split())
    assert held > 200e6
    assert grown < 1.4 * held, f"loading grew the peak by {grown / 1e6:.0f} MB for {held / 1e6:.0f} MB of splits"
