"""What a run records, written in one place for every driver: the engine's loop (`lottery run`) and `lottery.imp`
(the user's `train_fn`), so that the two stores cannot drift (`lottery show`, `report`, `export`, `verify` read both).

A run records its start when it begins (`begin`: the weights it starts from, its mask, the mask's per-layer
sparsity) and its end when it is done (`finish`: the final weights, then the summary, last: a run is finished when
its summary is there and every file verifies). `read` gives a finished run back, or None where anything is missing
or fails verification (the run is then trained again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lottery.pruning import Mask
from lottery.store import RunDir

START, MASK, SPARSITY, FINAL, SUMMARY = (
    "start.safetensors",
    "mask.safetensors",
    "sparsity.json",
    "final.safetensors",
    "summary.json",
)


@dataclass(frozen=True)
class Recorded:
    """A finished run as its files give it back."""

    start: dict[str, Tensor]
    mask: Mask
    final: dict[str, Tensor]
    summary: dict[str, Any]


def begin(run: RunDir, weights: Mapping[str, Tensor], mask: Mask) -> None:
    """Record where `run` starts: its start weights (a state dict), its mask and the mask's sparsity."""
    run.write_tensors(START, dict(weights))
    run.write_tensors(MASK, mask.to_tensors())
    run.write_json(SPARSITY, mask.report())


def finish(run: RunDir, final: Mapping[str, Tensor], summary: dict[str, Any]) -> None:
    """Record the end of `run`: its final weights, then its summary (last: it marks the run finished)."""
    run.write_tensors(FINAL, dict(final))
    run.write_json(SUMMARY, summary)


def read(run: RunDir, order: list[str] | None = None) -> Recorded | None:
    """The finished run `run` (its mask in `order` where given), or None where a file is missing or fails
    verification."""
    summary = run.read_json(SUMMARY)
    if summary is None:
        return None
    start, final, mask = (run.read_tensors(name) for name in (START, FINAL, MASK))
    if start is None or final is None or mask is None or (order is not None and set(order) - set(mask)):
        return None
    return Recorded(start, Mask({n: mask[n] for n in (order if order is not None else mask)}), final, summary)
