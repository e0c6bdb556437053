"""Datasets as in-memory tensors, one module per format, batches gathered on the device; image folders streamed
from disk (`stream.py`)."""

from lottery.data import cifar, idx, stream, synthetic  # noqa: F401  (register their datasets)
from lottery.data.base import ImageData, Splits, load
from lottery.data.batches import BatchStream, epoch_permutation

__all__ = ["BatchStream", "ImageData", "Splits", "epoch_permutation", "load"]
