"""The process group, as the store and the engine see it: rank, world size, barriers, broadcasts, and the rule
that only rank 0 writes. Below the store and the training loop (it imports nothing from either), so that both
can use it; joining the group (`lottery.training.distributed.setup`) and the training collectives (DDP, batch
slices, masks) stay in `lottery.training.distributed`.

Without torchrun every function here is the single-process identity: world size 1, rank 0, no communication.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # set by torchrun for every process


def launched() -> bool:
    """Whether this process was started by torchrun (or an equivalent launcher setting the same variables)."""
    return all(os.environ.get(name) for name in LAUNCH_VARIABLES)


def active() -> bool:
    """Whether a process group is initialised (and collectives are therefore needed)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """Where collective tensors live: the rank's GPU under nccl, the CPU under gloo."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` (picklable) on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device())
    return box[0]


@contextmanager
def main_writes() -> Iterator[bool]:
    """Around every artifact write: yields whether this rank writes (rank 0 only); all ranks wait at a
    barrier before (every rank has finished reading) and after (the artifact is complete for all readers)."""
    if world_size() == 1:
        yield True
        return
    barrier()
    yield is_main()
    barrier()
