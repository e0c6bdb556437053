"""What the integrations log per IMP level to the framework's own trackers (the same run, not a second one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def numbers(result: Any) -> dict[str, float]:
    """The numbers in a train_fn's result: a number as 'result', a mapping's numeric entries by name."""
    if isinstance(result, int | float) and not isinstance(result, bool):
        return {"result": float(result)}
    if isinstance(result, Mapping):
        return {str(k): float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {}


def level_metrics(level: Any) -> dict[str, float]:
    """A `lottery.imp` Level as scalars: `lottery/level`, `lottery/density`, `lottery/<metric>` for every number in
    its result, and `lottery/<control>/density` and `lottery/<control>/<metric>` for each control."""
    metrics = {"lottery/level": float(level.level), "lottery/density": float(level.density)}
    metrics.update({f"lottery/{k}": v for k, v in numbers(level.result).items()})
    for name, run in getattr(level, "controls", {}).items():
        metrics[f"lottery/{name}/density"] = float(run.density)
        metrics.update({f"lottery/{name}/{k}": v for k, v in numbers(run.result).items()})
    return metrics
