"""Helpers of the cluster tests: which TCP addresses a set of processes listens on (from /proc, Linux only)."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (through /proc/<pid>/task/<tid>/children)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in found:
            continue
        found.add(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    return inodes


def _address(hex_address: str, family: int) -> str:
    raw = bytes.fromhex(hex_address)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = [struct.pack("<I", struct.unpack(">I", raw[i : i + 4])[0]) for i in range(0, 16, 4)]
    return socket.inet_ntop(family, b"".join(words))


def listening(pids: set[int]) -> set[str]:
    """The local addresses (without ports) of the TCP sockets in LISTEN state that these processes hold."""
    inodes = _socket_inodes(pids)
    found = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(_address(fields[1].split(":")[0], family))
    return found


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
