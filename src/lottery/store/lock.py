"""One process per experiment directory: an exclusive `flock` on `<dir>/.lock`, released on exit
(also when the process is killed, since the kernel drops the lock with the file descriptor)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lottery.errors import UserError


@contextmanager
def exclusive(directory: Path, wait: bool = True) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(f"{directory} is in use by another lottery process; wait for it or pass --wait") from None
        yield
    finally:
        os.close(fd)
