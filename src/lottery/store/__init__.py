"""The run store: experiment directories named by spec hash, verified artifacts, locks."""

from lottery.store.experiment import (
    check_collision,
    check_format,
    experiment_dir,
    load_spec,
    store_root,
    write_spec,
)
from lottery.store.lock import exclusive, locked
from lottery.store.run_dir import RunDir

__all__ = [
    "RunDir",
    "check_collision",
    "check_format",
    "exclusive",
    "experiment_dir",
    "locked",
    "load_spec",
    "store_root",
    "write_spec",
]
