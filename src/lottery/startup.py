"""Importing lottery without the cyclic garbage collector's passes over torch.

Importing lottery imports torch: ~10^5 objects that live as long as the process, and little garbage. The cyclic
collector's passes over them while they are imported, and the first one after (they are all young), cost ~0.2 s of
every command's start (docs/performance.md, "Fixed costs of a command"). `collector_paused` pauses it while the
package imports; then what was imported goes straight to the oldest generation (freeze + unfreeze: no pass,
nothing kept alive: a later full collection frees its garbage), unless the process has frozen objects of its own
(unfreeze would release them too); the collector is then left as it was (off stays off).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector paused for the block, and what the block created moved to the oldest generation."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if collecting:
            gc.enable()
