"""Data parallel training: one run trained by N processes started by `torchrun`, with DistributedDataParallel.

Launch: `torchrun --nproc_per_node=N -m lottery run SPEC` (see docs/distributed.md). Each process (rank)
trains on its contiguous slice of every global batch `BatchStream.indices(t)`; DDP averages the gradients,
which, with equal slices, is the gradient of the single-process mean loss over the whole global batch. So
the data order, the schedule and (within float tolerance) the weights are those of a single process with
the same spec.

Rules the rest of the code follows, and that new code must follow:

* Every rank runs the same program on the same inputs, so every rank makes the same calls in the same order.
  Collective operations (below) rely on that; a decision that could differ between ranks (a wall-clock
  checkpoint cadence) is taken by rank 0 and broadcast (`due`).
* `RunDir` writes are collective: every rank calls them, only rank 0 touches the disk, and every rank waits
  at a barrier before and after (`collective.main_writes`). No rank reads while another writes, so every rank sees the
  same files and takes the same branches (resume or not, finished or not, retrain or not).
* Masks are computed by rank 0's rules and broadcast (`broadcast_mask`); `check_equal` verifies that every
  rank trains with the same mask, and `wrap` that every rank starts (or resumes) from the same weights, before
  DDP would silently copy rank 0's over them. A rank that disagrees stops the job on every rank with one line
  (`RankMismatch`, a `UserError`: exit code 2, no traceback).

Without torchrun (no RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment) every function here
is the single-process identity: world size 1, rank 0, no communication.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lottery import collective
from lottery.errors import UserError
from lottery.store import lock

if TYPE_CHECKING:
    from lottery.data.batches import BatchStream
    from lottery.pruning import Mask

TIMEOUT_VARIABLE = "LOTTERY_DIST_TIMEOUT"  # seconds a collective (or rank 0 waiting on a lock) may take
DEFAULT_TIMEOUT_S = 1800.0
SYNC_EVERY = 16  # iterations between broadcasts of rank 0's wall-clock checkpoint decision


class RankMismatch(UserError, RuntimeError):
    """The ranks of a data-parallel job disagree on the mask or the weights: training on would average
    gradients of different networks. A `UserError` (one line, exit code 2, no traceback), and a RuntimeError for
    callers that catch those."""


# the process group (lottery.collective: below the store, which needs it too) -----------------------------
_device = collective.device


def _timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UserError(f"${TIMEOUT_VARIABLE} = {raw!r} is not a number of seconds") from None
    if seconds <= 0:
        raise UserError(f"${TIMEOUT_VARIABLE} must be positive (got {raw})")
    return timedelta(seconds=seconds)


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; returns the device this rank trains on.

    CPU: backend gloo. CUDA: backend nccl, device cuda:LOCAL_RANK (an explicit cuda:N is refused when
    there is more than one process, since each rank needs its own GPU). Not launched: `device` unchanged.
    """
    if not collective.launched():
        return device
    if collective.active():
        return _device()
    world = int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        if device.index is not None and world > 1:
            raise UserError(f"--device {device} with torchrun: each rank uses cuda:LOCAL_RANK; pass --device cuda")
        index = collective.local_rank() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise UserError(
                f"rank {os.environ['RANK']}: LOCAL_RANK {index} but only {torch.cuda.device_count()} CUDA device(s); "
                "start at most one process per GPU (--nproc_per_node)"
            )
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
        try:
            dist.init_process_group("nccl", timeout=_timeout(), device_id=device)
        except TypeError:  # torch < 2.3 has no device_id; the current device (set above) is used
            dist.init_process_group("nccl", timeout=_timeout())
    elif device.type == "cpu":
        dist.init_process_group("gloo", timeout=_timeout())
    else:
        raise UserError(f"--device {device}: data parallel training supports cpu (gloo) and cuda (nccl)")
    atexit.register(teardown)
    return device


def teardown() -> None:
    if collective.active():
        dist.destroy_process_group()


# decisions and validation -----------------------------------------------------------------------------
def due(flag: bool, iteration: int) -> bool:
    """A wall-clock decision (e.g. 'a checkpoint is due') made identically on every rank: rank 0's `flag`,
    consulted every SYNC_EVERY iterations (one small broadcast then; no communication in between)."""
    if collective.world_size() == 1:
        return flag
    if iteration % SYNC_EVERY:
        return False
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.broadcast(value, src=0)
    return bool(value.item())


def check_batch(batch_size: int) -> None:
    """The global batch must split into equal slices, one per rank."""
    n = collective.world_size()
    if batch_size % n:
        raise UserError(
            f"training.batch_size = {batch_size} is not divisible by the number of processes ({n}); "
            f"use a multiple of {n} or another --nproc_per_node"
        )


# data -------------------------------------------------------------------------------------------------
def shard(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """[lo, hi): rank `index`'s contiguous share of n items (equal shares when count divides n)."""
    index = collective.rank() if index is None else index
    count = collective.world_size() if count is None else count
    return n * index // count, n * (index + 1) // count


def local_batch(stream: BatchStream, iteration: int) -> tuple[Tensor, Tensor]:
    """This rank's contiguous slice of the global batch `stream.batch(iteration)`: exactly the examples (and,
    with augmentation, the crops and flips) a single process trains on at those positions (`stream.slice`).
    Streamed image folders decode only this slice."""
    if collective.world_size() == 1:
        return stream.batch(iteration)
    return stream.slice(iteration, *shard(stream.batch_size))


# the model --------------------------------------------------------------------------------------------
def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module to call for training steps: `model` itself in a single process, else a DDP wrapper.

    On CUDA, BatchNorm layers become SyncBatchNorm (in place, same parameters and buffers), so batch
    statistics are those of the global batch, as in a single process. gloo has no SyncBatchNorm: on CPU
    each rank normalises with its own slice's statistics (see docs/distributed.md).
    """
    if not collective.active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    check_weights(model)  # DDP would broadcast rank 0's weights over a rank that resumed from others

    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)


def average_(tensor: Tensor) -> Tensor:
    """In place: the mean of `tensor` over ranks (identical on every rank afterwards)."""
    if collective.world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(collective.world_size())
    return tensor


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if collective.world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[..., Tensor] | None = None
) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole split, as `training.evaluate` computes them in one process:
    each rank evaluates its contiguous shard and the sums are all-reduced. Call with the unwrapped model."""
    from lottery.training.evaluate import evaluate as evaluate_local
    from lottery.training.losses import DEFAULT

    loss_fn = loss_fn or DEFAULT
    if collective.world_size() == 1:
        return evaluate_local(model, x, y, loss_fn)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    sync_buffers(model)  # the running statistics rank 0 saves are the ones every rank evaluates with
    lo, hi = shard(n)
    sums = torch.zeros(2, dtype=torch.float64, device=_device())
    if hi > lo:
        loss, accuracy = evaluate_local(model, x[lo:hi], y[lo:hi], loss_fn)
        sums[0], sums[1] = loss * (hi - lo), round(accuracy * (hi - lo))
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    return float(sums[0]) / n, float(sums[1]) / n


def evaluate_split(
    model: nn.Module, data: Any, split: str, loss_fn: Callable[..., Tensor] | None = None
) -> tuple[float, float] | None:
    """(mean loss, accuracy) over split `split` ('val' or 'test') of `data`, None when it is empty. In-memory
    splits go through `evaluate`; streamed image folders (`FolderSplits`) are decoded batch by batch, each rank
    its contiguous shard, and the sums all-reduced."""
    if not hasattr(data, "eval_batches"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        return evaluate(model, x, y, loss_fn) if len(x) else None
    from lottery.training.evaluate import evaluate_sums
    from lottery.training.losses import DEFAULT

    n = len(data.split(split))
    if n == 0:
        return None
    sync_buffers(model)
    lo, hi = shard(n)
    loss, correct = evaluate_sums(model, data.eval_batches(split, lo, hi), loss_fn or DEFAULT)
    sums = torch.tensor([loss, float(correct)], dtype=torch.float64, device=_device())
    if collective.world_size() > 1:
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    return float(sums[0]) / n, float(sums[1]) / n


# masks ------------------------------------------------------------------------------------------------
def checksum(mask: Mask) -> bytes:
    """SHA-256 over the mask's names, shapes and bits, in order."""
    digest = hashlib.sha256()
    for name, bits in mask.items():
        digest.update(f"{name}:{tuple(bits.shape)};".encode())
        digest.update(bits.detach().to("cpu", torch.uint8).contiguous().numpy().tobytes())
    return digest.digest()


def _gather_digests(digest: bytes) -> list[bytes]:
    mine = torch.tensor(list(digest), dtype=torch.uint8, device=_device())
    gathered = [torch.empty_like(mine) for _ in range(collective.world_size())]
    dist.all_gather(gathered, mine)
    return [bytes(t.cpu().tolist()) for t in gathered]


def weights_checksum(model: nn.Module) -> bytes:
    """SHA-256 over the model's parameters and buffers (names, shapes, dtypes and bytes), in order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.digest()


def _check_digests(digest: bytes, what: str) -> None:
    digests = _gather_digests(digest)
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise RankMismatch(
            f"the {what} differs between ranks (ranks {differ} disagree with rank 0); stopping the job: every rank "
            "must train the same network (same store, same spec, same checkpoint)"
        )


def check_equal(mask: Mask, what: str = "mask") -> None:
    """Raise `RankMismatch` on every rank unless every rank holds the same mask (names, shapes and bits)."""
    if collective.world_size() == 1:
        return
    _check_digests(checksum(mask), what)


def check_weights(model: nn.Module) -> None:
    """Raise `RankMismatch` on every rank unless every rank holds the same weights and buffers (bit for bit)."""
    if collective.world_size() == 1:
        return
    _check_digests(weights_checksum(model), "weights digest")


def broadcast_mask(mask: Mask) -> Mask:
    """Rank 0's mask on every rank, checked equal everywhere afterwards. Every rank computes its own mask
    first (from the same weights, so normally the same mask); a rank whose mask differs says so on stderr
    and trains with rank 0's."""
    if collective.world_size() == 1:
        return mask
    from lottery.pruning import Mask

    layout = hashlib.sha256(";".join(f"{n}:{tuple(m.shape)}" for n, m in mask.items()).encode()).digest()
    if len(set(_gather_digests(layout))) != 1:
        raise RankMismatch("the mask's layers (names or shapes) differ between ranks; stopping the job")
    flat = torch.cat([m.detach().reshape(-1).to(torch.uint8) for m in mask.values()]).to(_device())
    local = flat.clone()
    dist.broadcast(flat, src=0)
    if not torch.equal(flat, local):
        different = int((flat != local).sum())
        print(
            f"lottery: rank {collective.rank()}: the mask computed here differs from rank 0's in {different} "
            "weight(s); using rank 0's",
            file=sys.stderr,
        )
    flat = flat.cpu().bool()
    result, offset = Mask(), 0
    for name, bits in mask.items():
        result[name] = flat[offset : offset + bits.numel()].reshape(bits.shape).to(bits.device).clone()
        offset += bits.numel()
    check_equal(result)
    return result


# the store's lock, taken by rank 0 for every rank (kept here for callers that import it from this module)
exclusive = lock.locked
