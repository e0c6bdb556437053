"""One process per experiment (or run) directory: an exclusive `flock` on `<dir>/.lock`, with a lease.

The kernel lock is released on exit (also when the process is killed, since the kernel drops the lock with the
file descriptor). On a shared filesystem the lock holds across hosts where the filesystem makes `flock` a
cluster-wide lock: NFSv4 (the Linux client implements `flock` with NFS byte-range locks, which the server
arbitrates), Lustre mounted with `-o flock` (not `localflock`), GPFS, CephFS. See docs/scaling.md.

**The lease.** A node that dies (power, kernel panic, network partition) may leave its lock held on the server
until the filesystem notices (Lustre evicts the client, NFS waits for its lease or statd): meanwhile every other
worker would wait forever. So the holder writes a heartbeat into the lock file (a counter, every
`lease / 8` seconds, from a daemon thread), and a waiter that sees the heartbeat unchanged for `lease` seconds
(`$LOTTERY_LOCK_LEASE`, default 300; measured on the waiter's own monotonic clock, so clocks need not agree
across hosts) takes the lock over: it renames the stale lock file aside (one waiter wins, through an
`O_EXCL` marker named after the stale file's identity) and locks a fresh one. A holder that was only frozen and
wakes up finds its lock file replaced and stops at once (one line on stderr, exit code 75) rather than writing
next to the new holder.

`locked` is the lock to take around work in the store: under torchrun rank 0 holds it for every rank."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from lottery import collective
from lottery.errors import UserError
from lottery.store import layout

LOCK = ".lock"  # the lock file in a locked directory

LEASE_VARIABLE = "LOTTERY_LOCK_LEASE"  # seconds without a heartbeat after which a held lock is taken over
DEFAULT_LEASE_S = 300.0
LOST_LEASE_EXIT = 75  # the exit code of a holder whose lock was taken over while it was frozen
POLL_S = 0.2  # the longest sleep between two attempts of a waiter


def lease_seconds() -> float:
    raw = os.environ.get(LEASE_VARIABLE, "")
    try:
        seconds = float(raw) if raw else DEFAULT_LEASE_S
    except ValueError:
        raise UserError(f"${LEASE_VARIABLE} = {raw!r} is not a number of seconds") from None
    if not seconds > 0:
        raise UserError(f"${LEASE_VARIABLE} must be a positive number of seconds (got {raw})")
    return seconds


class _Held:
    """A lock this process holds: its file, its identity, and the heartbeat counter."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd, self.beats, self.lease = path, fd, 0, lease_seconds()
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self.beat()

    def beat(self) -> None:
        self.beats += 1
        data = f"{self.owner} {self.beats}\n".encode()
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def lost(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self.identity


class _Heart:
    """One daemon thread per process beats for every lock the process holds."""

    def __init__(self) -> None:
        self.held: set[_Held] = set()
        self.mutex = threading.Lock()
        self.wake = threading.Event()  # a lock was added: beat for it now, at its lease's pace
        self.thread: threading.Thread | None = None
        self.pid = 0

    def add(self, held: _Held) -> None:
        with self.mutex:
            self.held.add(held)
            self.wake.set()
            if self.thread is None or self.pid != os.getpid() or not self.thread.is_alive():
                self.pid = os.getpid()  # a forked child has no thread of its parent's
                self.thread = threading.Thread(target=self._run, name="lottery-lock-lease", daemon=True)
                self.thread.start()

    def remove(self, held: _Held) -> None:
        with self.mutex:
            self.held.discard(held)

    def _run(self) -> None:
        while True:
            self.wake.wait(min((h.lease for h in list(self.held)), default=DEFAULT_LEASE_S) / 8)
            self.wake.clear()
            with self.mutex:
                for held in list(self.held):
                    if held.lost():
                        print(
                            f"lottery: error: the lock on {held.path.parent} was taken over by another worker "
                            f"after {held.lease:g} s without a heartbeat from this process (frozen or cut "
                            "off); stopping so as not to write next to it",
                            file=sys.stderr,
                            flush=True,
                        )
                        os._exit(LOST_LEASE_EXIT)
                    try:
                        held.beat()
                    except OSError:
                        pass  # a transient error of the filesystem: the next beat tries again


_heart = _Heart()


def _observe(path: Path) -> tuple[int, int, bytes] | None:
    """The lock file's identity and heartbeat, None when it is missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino, os.pread(fd, 256, 0)
    finally:
        os.close(fd)


def _take_over(path: Path, stale: tuple[int, int, bytes]) -> bool:
    """Move the stale lock file aside, if it still is the one observed; True if this process did it."""
    marker = path.with_name(f"{path.name}.takeover-{stale[0]}-{stale[1]}")
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False  # another waiter is taking it over
    try:
        if _observe(path) != stale:
            return False  # it beat again, or was replaced meanwhile
        aside = path.with_name(f"{path.name}.stale-{stale[0]}-{stale[1]}")
        os.rename(path, aside)
        print(
            f"lottery: {path.parent}: its lock had no heartbeat for {lease_seconds():g} s (holder "
            f"{stale[2].decode(errors='replace').split(' ')[0] or 'unknown'}); taking it over",
            file=sys.stderr,
        )
        os.unlink(aside)
        return True
    finally:
        os.unlink(marker)


def _open(directory: Path) -> int:
    """The lock file of `directory`, opened; in a store, only where it stays inside it (`layout.confined`), and
    never through a link at `.lock` itself."""
    layout.confined(Path(directory) / LOCK)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise UserError(
            f"cannot lock {directory}: {error.strerror or error} (the store, --out, must be a writable directory)"
        ) from None


def _acquire(directory: Path, wait: bool) -> _Held:
    path = directory / LOCK
    told = False
    seen: tuple[int, int, bytes] | None = None
    since = time.monotonic()
    pause = 0.01
    while True:
        fd = _open(directory)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
        else:
            st, now = os.fstat(fd), _observe(path)
            if now is not None and (st.st_dev, st.st_ino) == now[:2]:
                return _Held(path, fd)
            os.close(fd)  # locked a file that was just moved aside: lock the current one
            continue
        if not wait:
            raise UserError(
                f"{directory} is in use by another lottery process; wait for it to finish, "
                "or run without --no-wait to wait for it"
            )
        if not told:
            print(f"lottery: {directory} is in use by another lottery process; waiting for it", file=sys.stderr)
            told = True
        now = _observe(path)
        if now != seen:
            seen, since = now, time.monotonic()
        elif now is not None and time.monotonic() - since > lease_seconds():
            _take_over(path, now)
            seen, since = None, time.monotonic()
            continue
        time.sleep(pause)
        pause = min(pause * 2, POLL_S)


@contextmanager
def exclusive(directory: Path, wait: bool = True) -> Iterator[None]:
    held = _acquire(directory, wait)
    _heart.add(held)
    try:
        yield
    finally:
        _heart.remove(held)
        try:
            os.ftruncate(held.fd, 0)  # released: an empty lock file, as before it was taken
        except OSError:
            pass
        os.close(held.fd)


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
