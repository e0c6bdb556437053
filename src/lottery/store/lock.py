"""One process per experiment (or run) directory: an exclusive `flock` on `<dir>/.lock`, released on exit
(also when the process is killed, since the kernel drops the lock with the file descriptor). `locked` is the
lock to take around work in the store: under torchrun rank 0 holds it for every rank."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from lottery import collective
from lottery.errors import UserError
from lottery.store import layout

LOCK = ".lock"  # the lock file in a locked directory


@contextmanager
def exclusive(directory: Path, wait: bool = True) -> Iterator[None]:
    """The lock of `directory`; in a store, only where the lock file stays inside it (`layout.confined`), and never
    through a link at `.lock` itself."""
    layout.confined(Path(directory) / LOCK)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
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


@contextmanager
def locked(directory: Path, wait: bool = True) -> Iterator[None]:
    """`exclusive`, taken once for a whole process group: by rank 0 alone under torchrun, the other ranks waiting
    for it (up to $LOTTERY_DIST_TIMEOUT) and sharing its outcome, e.g. the --no-wait error; in one process, just
    `exclusive`."""
    if collective.world_size() == 1:
        with exclusive(directory, wait=wait):
            yield
        return
    with ExitStack() as stack:
        error = None
        if collective.is_main():
            try:
                stack.enter_context(exclusive(directory, wait=wait))
            except UserError as e:
                error = str(e)
        error = collective.broadcast_object(error)
        if error is not None:
            raise UserError(error)
        yield
