"""The training loop: iteration-based, masked, checkpointed, resumable to bit-identical weights.

At iteration t (the weights after t optimizer steps) the loop, in this order: saves a snapshot if t
is a requested rewind point, evaluates if t is an evaluation point, checkpoints if one is due, stops
if t is the end, and otherwise takes step t. Data order, augmentation and the learning rate are pure
functions of t, and the checkpoint holds everything else (weights, optimizer state, RNG state,
metrics so far), so a run resumed from any checkpoint ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lottery import seeding
from lottery.data import BatchStream, Splits
from lottery.data.batches import Augment
from lottery.models import Network
from lottery.pruning import Mask, MaskEnforcer
from lottery.spec import Step, TrainingSpec
from lottery.store import RunDir
from lottery.training import distributed
from lottery.training.optimizer import exact_step, make_optimizer
from lottery.training.schedule import lr_at

DROPOUT_STREAM = 1  # seeds the global RNG (dropout) apart from data order and augmentation


@dataclass
class Runtime:
    """How to run, not what to compute: none of this changes results, so none of it is in the spec."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_every: int | None = None  # iterations between checkpoints; None: every checkpoint_seconds
    checkpoint_seconds: float = 120.0
    progress: bool | None = None  # None: a bar when stderr is a terminal, log lines otherwise
    label: str = ""
    threads: int | None = None  # torch intra-op threads; results on CPU depend on it, so executors pin it
    compile: bool = False  # torch.compile the training forward and backward
    channels_last: bool | None = None  # convnets in channels_last memory format; None: on CUDA only


@dataclass(frozen=True)
class Schedule:
    """The training spec's step strings in iterations, for a dataset's epoch length."""

    iterations_per_epoch: int
    end: int
    warmup: int
    milestones: list[int]
    eval_every: int

    @classmethod
    def of(cls, training: TrainingSpec, iterations_per_epoch: int) -> Schedule:
        def its(step: str) -> int:
            return Step.parse(step).to_iterations(iterations_per_epoch)

        return cls(
            iterations_per_epoch,
            its(training.training_steps),
            its(training.warmup_steps),
            [its(s) for s in training.milestone_steps],
            max(1, its(training.eval_every)),
        )


@dataclass
class Job:
    """One training run: from `start` (iteration k) to `end` with a fixed mask."""

    training: TrainingSpec
    schedule: Schedule
    start: int = 0
    mask: Mask | None = None
    snapshots: tuple[int, ...] = ()  # iterations at which to save weights (rewind points)
    snapshot_optimizer: bool = False  # also save the optimizer state there
    optimizer_state: dict[str, Any] | None = None  # restored at `start` (IMP's 'rewind' option)
    augment: Augment | None = None


def snapshot_name(iteration: int, optimizer: bool = False) -> str:
    return f"snapshots/iter_{iteration}.{'optimizer.pt' if optimizer else 'safetensors'}"


def is_finished(run: RunDir, job: Job) -> bool:
    """Whether every artifact of the finished run is present and verified. Each file that exists but fails
    verification is reported on stderr (the run is then recomputed). A diverged run never reached the
    snapshots after its divergence, so they are not needed."""
    summary = run.read_json("summary.json")
    diverged_at = summary.get("diverged_at") if isinstance(summary, dict) and summary.get("diverged") else None
    needed = ["start.safetensors", "final.safetensors", "mask.safetensors", "metrics.jsonl", "sparsity.json"]
    for k in job.snapshots:
        if diverged_at is not None and k > diverged_at:
            continue
        needed.append(snapshot_name(k))
        if job.snapshot_optimizer:
            needed.append(snapshot_name(k, optimizer=True))
    verified = [run.read(name) is not None for name in needed]  # no short cut: every bad file is reported
    return summary is not None and all(verified)


def train(run: RunDir, model: Network, data: Splits, job: Job, runtime: Runtime) -> dict[str, Any]:
    """Train `model` (already holding the start weights) in `run`, or return the stored summary. The run
    directory is locked while it trains: executors may run tasks of one experiment in parallel."""
    if is_finished(run, job):
        return run.read_json("summary.json")
    with distributed.exclusive(run.path):
        if is_finished(run, job):  # another process finished it while this one waited
            return run.read_json("summary.json")
        if distributed.is_main():
            run.remove_temporary()
        return _train(run, model, data, job, runtime)


def _train(run: RunDir, model: Network, data: Splits, job: Job, runtime: Runtime) -> dict[str, Any]:
    training, schedule, end = job.training, job.schedule, job.schedule.end
    device = runtime.device
    model.to(device)
    stream = BatchStream(
        data.train_x,
        data.train_y,
        training.batch_size,
        training.data_order_seed,
        training.augmentation_seed,
        job.augment,
    )
    optimizer = make_optimizer(model.parameters(), training)
    mask = job.mask if job.mask is not None else Mask.ones(model)
    distributed.check_equal(mask)  # data parallel: every rank trains with the same mask
    enforcer = MaskEnforcer(model, mask) if mask.density() < 1 else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=training.precision == "bf16")

    checkpoint = run.read_torch("checkpoint.pt")
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"])
        if device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
        t, metrics, elapsed = checkpoint["iteration"], checkpoint["metrics"], checkpoint["elapsed"]
        loss_sum, loss_count = checkpoint["loss_sum"].to(device), checkpoint["loss_count"]
        print(f"lottery: {run.path}: resuming from iteration {t}", file=sys.stderr)
    else:
        if enforcer is not None:
            enforcer.mask_weights()
        if job.optimizer_state is not None:
            optimizer.load_state_dict(job.optimizer_state)
            if enforcer is not None:
                enforcer.mask_optimizer_state(optimizer)
        run.write_tensors("start.safetensors", model.state_dict())
        run.write_tensors("mask.safetensors", mask.to_tensors())
        run.write_json("sparsity.json", mask.report())
        torch.manual_seed(seeding.derive(training.data_order_seed, job.start, DROPOUT_STREAM))
        t, metrics, elapsed = job.start, [], 0.0
        loss_sum, loss_count = torch.zeros((), device=device, dtype=torch.float64), 0

    channels_last = runtime.channels_last if runtime.channels_last is not None else device.type == "cuda"
    channels_last = channels_last and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, device)  # DistributedDataParallel under torchrun; `model` itself otherwise
    if runtime.compile:
        net = torch.compile(net)
    progress = sys.stderr.isatty() if runtime.progress is None else runtime.progress
    bar = tqdm(total=end - job.start, initial=t - job.start, desc=runtime.label, disable=not progress, leave=False)
    session_start = last_checkpoint = time.perf_counter()
    diverged_at = None
    model.train()
    while True:
        if t in job.snapshots and not run.exists(snapshot_name(t)):
            run.write_tensors(snapshot_name(t), model.state_dict())
            if job.snapshot_optimizer:
                run.write_torch(snapshot_name(t, optimizer=True), optimizer.state_dict())
        lr = lr_at(t, training.lr, schedule.warmup, schedule.milestones, gamma=training.gamma)
        if (t % schedule.eval_every == 0 or t in (job.start, end)) and not (metrics and metrics[-1]["iteration"] == t):
            now = elapsed + time.perf_counter() - session_start
            distributed.average_(loss_sum)  # data parallel: the mean over ranks, as one process would log
            rows = (
                [{"iteration": t, "split": "train", "loss": float(loss_sum) / loss_count, "lr": lr}]
                if loss_count
                else []
            )
            if loss_count and not torch.isfinite(loss_sum):
                diverged_at = t
                rows[0].update(loss=None, diverged=True)
            else:
                for split in ("val", "test"):
                    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
                    if len(x):
                        loss, accuracy = distributed.evaluate(model, x, y)
                        rows.append({"iteration": t, "split": split, "loss": loss, "accuracy": accuracy, "lr": lr})
            for row in rows:
                row["wall_time"] = round(now, 3)
            metrics.extend(rows)
            loss_sum.zero_()
            loss_count = 0
            run.write("metrics.jsonl", "".join(_json_line(r) for r in metrics).encode())
            bar.set_postfix_str(_describe(rows))
            if not progress and distributed.is_main():
                print(f"lottery: {runtime.label or run.path} iteration {t}/{end}: {_describe(rows)}", file=sys.stderr)
        if t == end or diverged_at is not None:
            break
        due = runtime.checkpoint_every is not None and t > job.start and (t - job.start) % runtime.checkpoint_every == 0
        if due or (
            runtime.checkpoint_every is None
            and distributed.due(time.perf_counter() - last_checkpoint > runtime.checkpoint_seconds, t)
        ):
            distributed.average_(loss_sum)  # every rank resumes with the same (global) running loss
            run.write_torch(
                "checkpoint.pt",
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "iteration": t,
                    "metrics": metrics,
                    "elapsed": elapsed + time.perf_counter() - session_start,
                    "loss_sum": loss_sum.cpu(),
                    "loss_count": loss_count,
                },
            )
            last_checkpoint = time.perf_counter()

        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = distributed.local_batch(stream, t)  # this rank's slice of the global batch (all of it in one process)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if enforcer is not None:
            enforcer.mask_grads()
        # exact_step: optimizer.step() bit for bit, faster on the CPU (training/batched.py). With zero gradient and
        # zero optimizer state at the pruned coordinates it leaves those weights exactly as they were (zero), so
        # re-masking them would be the identity; any other step is followed by the re-mask.
        if not exact_step(optimizer):
            optimizer.step()
            if enforcer is not None:
                enforcer.mask_weights()
        loss_sum += loss.detach()
        loss_count += 1
        t += 1
        bar.update()
    bar.close()

    elapsed += time.perf_counter() - session_start
    run.write_tensors("final.safetensors", model.state_dict())
    summary = summarize(metrics, job, mask, elapsed, diverged_at)
    run.write_json("summary.json", summary)
    run.remove("checkpoint.pt")
    return summary


def summarize(metrics: list[dict[str, Any]], job: Job, mask: Mask, seconds: float, diverged_at: int | None) -> dict:
    """Final and early-stopping (minimum validation loss) accuracies of a finished run."""
    test = {r["iteration"]: r for r in metrics if r["split"] == "test"}
    val = [r for r in metrics if r["split"] == "val"]
    last = max(test) if test else None
    summary: dict[str, Any] = {
        "start_iteration": job.start,
        "end_iteration": job.schedule.end,
        "density": mask.density(),
        "diverged": diverged_at is not None,
        "diverged_at": diverged_at,
        "final_test_accuracy": None if diverged_at is not None or last is None else test[last]["accuracy"],
        "final_test_loss": None if diverged_at is not None or last is None else test[last]["loss"],
        "early_stop_iteration": None,
        "early_stop_test_accuracy": None,
        "train_seconds": round(seconds, 3),
    }
    if val and diverged_at is None:
        best = min(val, key=lambda r: (r["loss"], r["iteration"]))
        summary["early_stop_iteration"] = best["iteration"]
        summary["early_stop_val_loss"] = best["loss"]
        summary["early_stop_test_accuracy"] = test[best["iteration"]]["accuracy"]
    return summary


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row) + "\n"


def _describe(rows: list[dict[str, Any]]) -> str:
    parts = []
    for row in rows:
        if row.get("diverged"):
            parts.append("train loss diverged")
        elif "accuracy" in row:
            parts.append(f"{row['split']} acc {row['accuracy']:.4f}")
        else:
            parts.append(f"train loss {row['loss']:.4f}")
    return ", ".join(parts)
