"""The training loop: iteration-based, masked, checkpointed, resumable to bit-identical weights.

At iteration t (the weights after t optimizer steps) the loop, in this order: saves a snapshot if t
is a requested rewind point, evaluates if t is an evaluation point, checkpoints if one is due, stops
if t is the end, and otherwise takes step t. Data order, augmentation and the learning rate are pure
functions of t, and the checkpoint holds everything else (weights, optimizer state, RNG state,
metrics so far), so a run resumed from any checkpoint ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm import tqdm

from lottery import collective, events, seeding
from lottery.data import BatchStream, Splits
from lottery.exact_step import exact_step
from lottery.models import Network
from lottery.pruning import Mask, attach
from lottery.store import RunDir, layout, locked
from lottery.training import distributed, losses, overall, record
from lottery.training.job import Job
from lottery.training.optimizer import make_optimizer
from lottery.training.provenance import file_metadata, run_metadata
from lottery.training.schedule import lr_at


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
    batch_copies: bool | None = None  # train runs of one architecture together (training/copies.py); None: where faster
    channels_last: bool | None = None  # convnets in channels_last memory format; None: on CUDA only
    gpus_per_task: float | None = None  # Ray executor: GPUs each task holds; None: 1 on CUDA, else 0
    data_workers: int | None = None  # image-folder decoding processes; None: this process's share of the CPUs, <= 8
    log: tuple[str, ...] = ()  # experiment trackers to log to (lottery.loggers): 'tensorboard', 'wandb', 'mlflow'
    log_strict: bool = False  # a tracker that fails stops the run (UserError) instead of being turned off
    imports: tuple[str, ...] = ()  # plugin modules (--import) that other processes (Ray workers) import too


def is_finished(run: RunDir, job: Job) -> bool:
    """Whether every artifact of the finished run is present and verified. Each file that exists but fails
    verification is reported on stderr (the run is then recomputed). A diverged run never reached the
    snapshots after its divergence, so they are not needed."""
    summary = run.read_json("summary.json")
    diverged_at = summary.get("diverged_at") if isinstance(summary, dict) and summary.get("diverged") else None
    needed = [record.START, record.FINAL, record.MASK, "metrics.jsonl", record.SPARSITY]
    for k in job.snapshots:
        if diverged_at is not None and k > diverged_at:
            continue
        needed.append(layout.snapshot(k))
        if job.snapshot_optimizer:
            needed.append(layout.snapshot(k, optimizer=True))
    verified = [run.read(name) is not None for name in needed]  # no short cut: every bad file is reported
    return summary is not None and all(verified)


def train(run: RunDir, model: Network, data: Splits, job: Job, runtime: Runtime) -> dict[str, Any]:
    """Train `model` (already holding the start weights) in `run`, or return the stored summary. The run
    directory is locked while it trains: executors may run tasks of one experiment in parallel."""
    if is_finished(run, job):
        return run.read_json("summary.json")
    with locked(run.path):
        if is_finished(run, job):  # another process finished it while this one waited
            return run.read_json("summary.json")
        if collective.is_main():
            run.remove_temporary()
        return train_session(Session(run, model, data, job, runtime))


def train_session(s: Session) -> dict[str, Any]:
    """One run alone: the loop with the plain PyTorch step."""
    run_loop([s], Alone(s))
    return s.summary


class Backend(Protocol):
    """How the loop takes a step: `Alone` (one run, the plain PyTorch step, DDP or torch.compile), or several runs
    as one stacked model (`training/copies.py`)."""

    def sync(self, sessions: list[Session], optimizer: bool) -> None:
        """Bring each session's own model (and, with `optimizer`, its optimizer state) up to date, before anything
        reads them: a snapshot, an evaluation, a checkpoint, the end."""

    def step(self, sessions: list[Session], lr: float) -> list[torch.Tensor]:
        """Take step t (the sessions' iteration) of every session in `sessions` at learning rate `lr`; the mean
        training loss of each."""
        ...


def run_loop(sessions: list[Session], backend: Backend) -> None:
    """The loop, the one place its order of events is written: at iteration t, snapshot (a rewind point), evaluate
    (an evaluation point; a diverged run finishes there), stop at the end, checkpoint (when due), take step t. The
    sessions share one schedule and iteration; each finishes with its final weights and summary."""
    job, active = sessions[0].job, list(sessions)
    overall.started(len(sessions))  # whole-run progress: network i of N, elapsed, ETA (training/overall.py)
    bar = sessions[0].progress_bar()
    span = max(1, job.schedule.end - job.start)
    while True:
        lead = active[0]
        if lead.t in job.snapshots:
            backend.sync(active, optimizer=job.snapshot_optimizer)
            for s in active:
                s.snapshot()
        lr = lead.lr()
        if lead.evaluation_due():
            backend.sync(active, optimizer=False)
            for s in active:
                bar.set_postfix_str(describe(s.evaluate(lr)))
                if s.diverged_at is not None:
                    s.finish()
            active = [s for s in active if s.diverged_at is None]
        if not active or lead.t == job.schedule.end:
            break
        if lead.checkpoint_due():
            backend.sync(active, optimizer=True)
            for s in active:
                s.checkpoint()
        for s, loss in zip(active, backend.step(active, lr)):
            s.add_loss(loss)
        for s in sessions:
            s.t += 1
        overall.advance((lead.t + 1 - job.start) / span)
        if not bar.disable:
            bar.set_description_str(sessions[0].progress_label(), refresh=False)
        bar.update()
    bar.close()
    backend.sync(active, optimizer=False)
    for s in active:
        s.finish()
    overall.finished(len(sessions))


def uses_channels_last(model: torch.nn.Module, runtime: Runtime) -> bool:
    """Whether a run trained alone puts `model` in channels_last memory format: `runtime.channels_last`, by default
    on CUDA, and only for a model with 2-d convolutions (what the single-run backend does, and a recipe records)."""
    wanted = runtime.channels_last if runtime.channels_last is not None else runtime.device.type == "cuda"
    return wanted and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


class Alone:
    """One run: its own model steps (wrapped in DistributedDataParallel under torchrun; compiled with --compile;
    channels_last for convolutions on CUDA)."""

    def __init__(self, s: Session) -> None:
        runtime, model, device = s.runtime, s.model, s.runtime.device
        self.session, self.stream, self.autocast = s, s.stream(), s.autocast()
        self.channels_last = uses_channels_last(model, runtime)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        net = distributed.wrap(model, device)  # DistributedDataParallel under torchrun; `model` itself otherwise
        self.net = torch.compile(net) if runtime.compile else net
        model.train()

    def sync(self, sessions: list[Session], optimizer: bool) -> None:
        pass  # the run's own model and optimizer are what train

    def step(self, sessions: list[Session], lr: float) -> list[torch.Tensor]:
        s = self.session
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        x, y = distributed.local_batch(
            self.stream, s.t
        )  # this rank's slice of the global batch (all of it in one process)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            loss = s.loss(self.net(x), y)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # exact_step: optimizer.step() bit for bit, faster on the CPU (lottery/exact_step.py). Both run the
        # optimizer's step hooks, through which the attached mask holds (lottery.attach).
        if not exact_step(s.optimizer):
            s.optimizer.step()
        return [loss.detach()]


class Session:
    """One run in progress, whatever trains it (`train_session`, or `training/copies.py` for copies trained
    together): its model and optimizer, the metrics so far and the running training loss. Creating a session
    restores the run's checkpoint, or writes the run's start artifacts (masked start weights, mask, sparsity) and
    masks the restored optimizer state. Its methods evaluate, checkpoint and finish the run."""

    def __init__(self, run: RunDir, model: Network, data: Splits, job: Job, runtime: Runtime) -> None:
        run = run.with_provenance(file_metadata(job, run.path))  # written into every safetensors file of the run
        self.run, self.model, self.data, self.job, self.runtime = run, model, data, job, runtime
        device = runtime.device
        model.to(device)
        self.optimizer = make_optimizer(model.parameters(), job.training)
        self.loss = losses.make(job.training)
        self.mask = job.mask if job.mask is not None else Mask.ones(model)
        distributed.check_equal(self.mask)  # data parallel: every rank trains with the same mask
        # Pruned weights, their gradients and optimizer state are zero now and after every step (lottery.attach).
        self.attachment = attach(self.mask, self.optimizer, model=model) if self.mask.density < 1 else None
        self.diverged_at: int | None = None
        # How the run is computed, recorded in its summary (copies.py adds a stacked run's group and position):
        # on the CPU its bits depend on the thread count, and a stacked run's on its group.
        self.arithmetic: dict[str, Any] = {"stacked": False, "threads": torch.get_num_threads(), "device": device.type}
        if self._resume():
            print(f"lottery: {run.path}: resuming from iteration {self.t}", file=sys.stderr)
        else:
            if job.optimizer_state is not None:
                self.optimizer.load_state_dict(job.optimizer_state)
                if self.attachment is not None:
                    self.attachment.apply()  # the restored state, saved before pruning, is zeroed where pruned
            record.begin(run, model.state_dict(), self.mask)
            torch.manual_seed(seeding.derive("dropout", job.training.data_order_seed, job.start))
            self.t, self.metrics, self.elapsed = job.start, [], 0.0
            self.loss_sum, self.loss_count = torch.zeros((), device=device, dtype=torch.float64), 0
        self.label = runtime.label or str(run.path)  # names the run in log lines
        self.session_start = self.last_checkpoint = time.perf_counter()

    def _resume(self) -> bool:
        """Restore the run's checkpoint if it has a verified one that loads; False (the run starts over) if it
        has none, or one that cannot be used although its checksum matches (another structure, a pickle that
        `weights_only` refuses to run), which is then reported and removed."""
        run, model, device = self.run, self.model, self.runtime.device
        try:
            data = run.read("checkpoint.pt")  # None (reported if it exists) unless verified
        except OSError:
            data = None
        if data is None:
            return False
        start = {k: v.clone() for k, v in model.state_dict().items()}
        fresh = self.optimizer.state_dict()  # no state yet: nothing to copy but the hyperparameters
        try:
            checkpoint = torch.load(io.BytesIO(data), weights_only=True)
            model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            t, metrics = int(checkpoint["iteration"]), list(checkpoint["metrics"])
            elapsed = float(checkpoint["elapsed"])
            loss_sum, loss_count = checkpoint["loss_sum"].to(device, torch.float64), int(checkpoint["loss_count"])
            if not self.job.start <= t <= self.job.schedule.end or loss_sum.shape != ():
                raise ValueError(f"iteration {t} outside {self.job.start}..{self.job.schedule.end}")
            self.restore_extra(checkpoint)
            rng, cuda_rng = checkpoint["rng"], checkpoint.get("cuda_rng")
            torch.set_rng_state(rng)
        except Exception as error:  # noqa: BLE001  (any defect of its contents: start over, as for a bad checksum)
            model.load_state_dict(start)
            self.optimizer.state.clear()  # the same optimizer object: the mask stays attached to it
            self.optimizer.load_state_dict(fresh)
            reason = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            print(
                f"lottery: {run.path / 'checkpoint.pt'} cannot be loaded ({reason}); starting the run over",
                file=sys.stderr,
            )
            run.remove("checkpoint.pt")
            return False
        if device.type == "cuda" and cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
        self.t, self.metrics, self.elapsed, self.loss_sum, self.loss_count = t, metrics, elapsed, loss_sum, loss_count
        return True

    def stream(self) -> BatchStream:
        """The run's batches: a pure function of its data-order and augmentation seeds and the iteration (gathered
        from tensors in memory, or decoded from an image folder: `FolderStream`, the same contract)."""
        t = self.job.training
        if not isinstance(self.data, Splits):
            return self.data.stream(t.batch_size, t.data_order_seed, t.augmentation_seed)
        return BatchStream(
            self.data.train_x, self.data.train_y, t.batch_size, t.data_order_seed, t.augmentation_seed, self.job.augment
        )

    def autocast(self) -> torch.autocast:
        device, precision = self.runtime.device, self.job.training.precision
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def lr(self) -> float:
        """The learning rate of step t (the session's iteration)."""
        t, schedule = self.job.training, self.job.schedule
        return lr_at(self.t, t.lr, schedule.warmup, schedule.milestones, t.gamma, t.schedule, schedule.end, t.final_lr)

    def progress_bar(self) -> tqdm:
        end, start = self.job.schedule.end, self.job.start
        shown = self.progress_shown()
        return tqdm(
            total=end - start, initial=self.t - start, desc=self.progress_label(), disable=not shown, leave=False
        )

    def progress_label(self) -> str:
        """The bar's description: the whole run's progress (network i of N, elapsed, ETA) and this run's label."""
        whole = overall.prefix()
        return f"[{whole}] {self.runtime.label}" if whole else str(self.runtime.label)

    def snapshot(self) -> None:
        """Save the weights (and optimizer state) if this iteration is a requested rewind point."""
        if self.t in self.job.snapshots and not self.run.exists(layout.snapshot(self.t)):
            self.run.write_tensors(layout.snapshot(self.t), self.model.state_dict())
            if self.job.snapshot_optimizer:
                self.run.write_torch(layout.snapshot(self.t, optimizer=True), self.optimizer.state_dict())

    def add_loss(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.loss_count += 1

    def evaluation_due(self) -> bool:
        t, job = self.t, self.job
        due = t % job.schedule.eval_every == 0 or t in (job.start, job.schedule.end)
        return due and not (self.metrics and self.metrics[-1]["iteration"] == t)  # a resumed run logged t already

    def evaluate(self, lr: float) -> list[dict[str, Any]]:
        """Log the mean training loss since the last evaluation and the validation and test loss and accuracy;
        a diverged run (`diverged`) is marked so instead. Returns the new metrics rows."""
        t, data = self.t, self.data
        now = self.elapsed + time.perf_counter() - self.session_start
        distributed.average_(self.loss_sum)  # data parallel: the mean over ranks, as one process would log
        count = self.loss_count
        rows = [{"iteration": t, "split": "train", "loss": float(self.loss_sum) / count, "lr": lr}] if count else []
        if count and diverged(rows[0]["loss"], self.model, data.num_classes):
            self.diverged_at = t
            rows[0].update(loss=rows[0]["loss"] if math.isfinite(rows[0]["loss"]) else None, diverged=True)
        else:
            for split in ("val", "test"):
                result = distributed.evaluate_split(self.model, data, split, self.loss)
                if result is not None:
                    loss, accuracy = result
                    rows.append({"iteration": t, "split": split, "loss": loss, "accuracy": accuracy, "lr": lr})
        for row in rows:
            row["wall_time"] = round(now, 3)
        self.metrics.extend(rows)
        self.loss_sum.zero_()
        self.loss_count = 0
        self.run.write("metrics.jsonl", "".join(_json_line(r) for r in self.metrics).encode())
        log, strict = getattr(self.runtime, "log", ()), getattr(self.runtime, "log_strict", False)
        end = self.job.schedule.end  # the trackers (lottery.loggers) listen, where any are chosen (`log`)
        events.emit(events.Evaluation(self.run.path, run_metadata(self.job), rows, end, log, strict))
        if not self.progress_shown() and collective.is_main():
            whole = overall.prefix()
            where = f"[{whole}] " if whole else ""
            print(
                f"lottery: {where}{self.label} iteration {t}/{self.job.schedule.end}: {describe(rows)}", file=sys.stderr
            )
        return rows

    def progress_shown(self) -> bool:
        return sys.stderr.isatty() if self.runtime.progress is None else self.runtime.progress

    def checkpoint_due(self) -> bool:
        runtime, t = self.runtime, self.t
        if runtime.checkpoint_every is not None:
            return t > self.job.start and (t - self.job.start) % runtime.checkpoint_every == 0
        return distributed.due(time.perf_counter() - self.last_checkpoint > runtime.checkpoint_seconds, t)

    def checkpoint(self) -> None:
        device = self.runtime.device
        distributed.average_(self.loss_sum)  # every rank resumes with the same (global) running loss
        self.run.write_torch(
            "checkpoint.pt",
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "iteration": self.t,
                "metrics": self.metrics,
                "elapsed": self.elapsed + time.perf_counter() - self.session_start,
                "loss_sum": self.loss_sum.cpu(),
                "loss_count": self.loss_count,
                **self.checkpoint_extra(),
            },
        )
        self.last_checkpoint = time.perf_counter()

    def checkpoint_extra(self) -> dict[str, Any]:
        """More of a subclass's state for the checkpoint (experiments/dynamic.py: the dynamic mask's)."""
        return {}

    def restore_extra(self, checkpoint: dict[str, Any]) -> None:
        """Read back what `checkpoint_extra` added, while the checkpoint is restored (an error starts over)."""

    def finish(self) -> dict[str, Any]:
        """Write the final weights and the summary, drop the checkpoint; the summary."""
        self.elapsed += time.perf_counter() - self.session_start
        summary = summarize(self.metrics, self.job, self.mask, self.elapsed, self.diverged_at)
        summary["arithmetic"] = self.arithmetic
        record.finish(self.run, self.model.state_dict(), summary)
        self.run.remove("checkpoint.pt")
        self.summary = summary
        return summary


DIVERGENCE_FACTOR = 1000.0  # times the loss of a uniform guess, ln(classes): 2303 for 10 classes


def diverged(train_loss: float, model: torch.nn.Module, num_classes: int) -> bool:
    """The divergence rule, checked at every evaluation point: the mean training loss since the last one is not
    finite, or above DIVERGENCE_FACTOR times ln(classes) (the loss of predicting every class alike, which any
    network that learns at all stays far below), or a weight is not finite. Such a run has left the region
    where its accuracies mean anything, and nothing is pruned from its weights."""
    if not math.isfinite(train_loss) or train_loss > DIVERGENCE_FACTOR * math.log(max(num_classes, 2)):
        return True
    with torch.no_grad():
        return not all(bool(torch.isfinite(p).all()) for p in model.parameters())


def summarize(metrics: list[dict[str, Any]], job: Job, mask: Mask, seconds: float, diverged_at: int | None) -> dict:
    """Final and early-stopping (minimum validation loss) accuracies of a finished run."""
    test = {r["iteration"]: r for r in metrics if r["split"] == "test"}
    val = [r for r in metrics if r["split"] == "val"]
    last = max(test) if test else None
    summary: dict[str, Any] = {
        "start_iteration": job.start,
        "end_iteration": job.schedule.end,
        "density": mask.density,
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


def describe(rows: list[dict[str, Any]]) -> str:
    parts = []
    for row in rows:
        if row.get("diverged"):
            parts.append("train loss diverged")
        elif "accuracy" in row:
            parts.append(f"{row['split']} acc {row['accuracy']:.4f}")
        else:
            parts.append(f"train loss {row['loss']:.4f}")
    return ", ".join(parts)
