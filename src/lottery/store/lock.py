"""One process per experiment directory: an exclusive `flock` on `<dir>/.lock`, released on exit
(also when the process is killed, since the kernel drops the lock with the file descriptor)."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lottery.errors import UserError


@contextmanager
def exclusive(directory: Path, wait: bool = True) -> Iterator[None]:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserError(
            f"cannot lock {directory}: {error.strerror or error} (the store, --out, must be a writable directory)"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise UserError(
                    f"{directory} is in use by another lottery process; wait for it to finish, "
                    "or run without --no-wait to wait for it"
                ) from None
            print(f"lottery: {directory} is in use by another lottery process; waiting for it", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
