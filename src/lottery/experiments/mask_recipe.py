"""What a [masks] run's network depends on beyond the settings `recipes.source_reads` lists: the scoring mode where it
differs from the source's default (so networks stored before the option existed keep their names), and for
`early_bird` the rule that draws the ticket and its window (the default rule changed from hindsight to online, so
an early-bird network drawn by the old rule is never reused for the new one)."""

from __future__ import annotations

from typing import Any

from lottery.pruning.early_bird import WINDOW
from lottery.pruning.sources import sources
from lottery.spec.groups import MasksSpec


def score_mode(spec: MasksSpec, source: str) -> str:
    """The mode `source` scores in: `masks.score_mode[source]`, else the source's default (the reference's)."""
    return spec.score_mode.get(source, sources.get(source).default_mode)


def extra_reads(spec: MasksSpec, source: str) -> dict[str, Any]:
    """The entries a [masks] run of `source` adds to its key's `reads`."""
    scored = spec.early_bird_source if source == "early_bird" else source
    out: dict[str, Any] = {}
    if score_mode(spec, scored) != sources.get(scored).default_mode:
        out["score_mode"] = score_mode(spec, scored)
    if source == "early_bird":
        out.update(rule=spec.early_bird_rule, window=WINDOW)
    return out
