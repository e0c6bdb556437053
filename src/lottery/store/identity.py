"""A network's identity: the hash of its key (recipe), which names its directory `networks/<kind>/<hash>`.

Readers and `lottery verify` check a network's `key.json` against its name with this function alone, without
importing the engine that builds recipes (`lottery.experiments.recipes`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

DIGITS = 20  # hex digits of a network's name


def canonical(key: dict[str, Any]) -> str:
    """A key as canonical JSON (sorted keys, no spaces): what is hashed, and what two keys are compared by."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def digest(key: dict[str, Any]) -> str:
    """The hash of a key: its directory name (the first 20 hex digits of the SHA-256 of its canonical JSON)."""
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:DIGITS]
