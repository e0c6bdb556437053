"""A trained unit's logged metrics (metrics.jsonl), as the figures read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lottery.store import RunDir


def read_metrics(experiment_dir: Path, relative: str) -> list[dict[str, Any]]:
    """The metrics.jsonl rows of one trained unit ([] when absent or failing verification)."""
    data = RunDir(Path(experiment_dir) / relative).read("metrics.jsonl", quiet=True)
    if data is None:
        return []
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
