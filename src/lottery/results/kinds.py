"""Mask kinds: a [masks] run's kind is its source, or its source and an ablation (`<source>_<ablation>`)."""

from __future__ import annotations

from lottery.spec.groups import MASK_ABLATIONS


def split_kind(kind: str) -> tuple[str, str | None]:
    """A [masks] run's kind as (source, ablation): 'snip_shuffle' -> ('snip', 'shuffle'); 'early_bird' ->
    ('early_bird', None)."""
    for ablation in MASK_ABLATIONS:
        if kind.endswith(f"_{ablation}"):
            return kind[: -len(ablation) - 1], ablation
    return kind, None
