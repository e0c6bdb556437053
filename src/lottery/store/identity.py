"""A network's identity: the hash of its key (recipe), which names its directory `networks/<kind>/<hash>`.

Readers and `lottery verify` check a network's `key.json` against its name with this function alone, without
importing the engine that builds keys (`lottery.experiments.keys`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

DIGITS = 20  # hex digits of a network's name


def digest(key: dict[str, Any]) -> str:
    """The hash of a key: its directory name (the first 20 hex digits of the SHA-256 of its canonical JSON)."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGITS]
