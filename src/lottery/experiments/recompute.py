"""`lottery verify STORE --recompute N|all`: retrain stored networks from their recipes, in a scratch directory
inside the store, and report any whose weights are not bit-identical to the stored ones.

A network is recomputed through an experiment of the store that links to it: that experiment's spec, built into a
context whose runtime reproduces the arithmetic the recipe records (device, threads, stacked or not), must give the
same recipe for the network's run directory (else the network cannot be recomputed from its recipe: reported).
Its task runs in a scratch store that holds, as hard links, the networks its task depends on (their own weights are
checked when they are sampled), and never the network itself nor the other networks its task trains. The scratch
directory is removed afterwards.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lottery.errors import UserError
from lottery.experiments import plan, views
from lottery.experiments.context import Context
from lottery.store import experiment_dir, layout, load_spec, write_spec
from lottery.store.identity import canonical
from lottery.store.networks import SCRATCH_PREFIX  # the scratch directories made here (and only removed)
from lottery.training import Runtime


@dataclass(frozen=True)
class Found:
    """A stored network and an experiment that links to it."""

    path: Path  # <store>/networks/<kind>/<hash>
    experiment: Path
    recipe: dict[str, Any]


def stored_networks(store: Path) -> list[Path]:
    """Every finished network of the store (a `summary.json` and final weights), sorted."""
    root = Path(store) / layout.NETWORKS
    if not root.is_dir():
        return []
    found = []
    for kind in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        for network in sorted(p for p in kind.iterdir() if p.is_dir() and not p.is_symlink()):
            if (network / "summary.json").is_file() and (network / "final.safetensors").is_file():
                found.append(network)
    return found


def experiments_linking(store: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """(experiment, runs.json's view -> network path) of every experiment of this store format."""
    for experiment in sorted(p for p in Path(store).iterdir() if p.is_dir() and not p.is_symlink()):
        runs = experiment / layout.RUNS_FILE
        if not runs.is_file():
            continue
        try:
            view = json.loads(runs.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(view, dict) and view.get("format") == layout.FORMAT and isinstance(view.get("runs"), dict):
            yield experiment, view["runs"]


def _context(experiment: Path, recipe: dict[str, Any], view: str) -> tuple[Context, views.Network] | None:
    """A context for the experiment whose runtime gives the network at `view` the recipe `recipe`; None where no
    runtime does (or the recipe's device is not here)."""
    spec, _ = load_spec(experiment)
    arithmetic = recipe.get("arithmetic", {})
    device = arithmetic.get("device", "cpu")
    if device != "cpu" and not torch.cuda.is_available():
        return None
    if arithmetic.get("threads"):
        torch.set_num_threads(int(arithmetic["threads"]))
    for batch_copies in (None, True, False):
        runtime = Runtime(
            device=torch.device(device), progress=False, batch_copies=batch_copies, threads=arithmetic.get("threads")
        )
        ctx = Context(spec, runtime)
        for network in views.networks(ctx):
            if network.view.as_posix() == view and canonical(network.recipe) == canonical(recipe):
                return ctx, network
    return None


def _ancestors(tasks: dict[str, plan.Task], name: str) -> set[str]:
    """The names of every task `name`'s task depends on, directly or not."""
    seen: set[str] = set()
    todo = list(tasks[name].deps)
    while todo:
        current = tasks[todo.pop()].name
        if current not in seen:
            seen.add(current)
            todo += tasks[current].deps
    return seen


def _link_files(source: Path, target: Path) -> None:
    """`source`'s files into `target` as hard links (copies across filesystems), directories recreated."""
    for directory, _, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name == layout.KEY_FILE:
                continue
            destination = target / relative / name
            try:
                os.link(Path(directory) / name, destination)
            except OSError:
                shutil.copy2(Path(directory) / name, destination)


def _same_weights(stored: Path, recomputed: Path) -> str | None:
    """None where every safetensors file of the stored network that the recomputation also wrote holds the same
    tensors bit for bit; else what differs."""
    from safetensors.torch import load_file

    compared = 0
    for path in sorted(stored.rglob("*.safetensors")):
        other = recomputed / path.relative_to(stored)
        if not other.is_file():
            continue
        ours, theirs = load_file(path), load_file(other)
        if ours.keys() != theirs.keys():
            return f"{path.relative_to(stored)}: other tensors"
        for name in ours:
            if ours[name].dtype != theirs[name].dtype or not torch.equal(ours[name], theirs[name]):
                diff = (ours[name].double() - theirs[name].double()).abs().max().item()
                return f"{path.relative_to(stored)}: {name} differs (max |diff| {diff:.3g})"
        compared += 1
    return None if compared else "nothing to compare (the recomputation wrote no weights)"


def recompute_one(store: Path, found: Found, view: str) -> str | None:
    """Retrain one network from its recipe in a scratch store; None where it is bit-identical, else the problem."""
    located = _context(found.experiment, found.recipe, view)
    if located is None:
        return "no experiment of this store gives this recipe on this machine: cannot recompute it here"
    ctx, network = located
    tasks = plan.index(plan.plan(ctx))
    if network.task not in tasks:
        return f"its task {network.task} is not in its experiment's plan"
    own = tasks[network.task]
    needed = _ancestors(tasks, network.task)
    scratch = Path(store) / f"{SCRATCH_PREFIX}{os.getpid()}"
    if scratch.exists():
        shutil.rmtree(scratch)
    try:
        spec = ctx.spec
        experiment = experiment_dir(scratch, spec)
        write_spec(experiment, spec, None)
        views.bind(ctx, experiment)
        linked: set[tuple[str, str]] = set()
        for other in views.networks(ctx):
            task = tasks.get(other.task)
            if task is None or task.name == own.name or task.name not in needed:
                continue
            if (other.kind, other.digest) in linked:  # a network several views name (the dense network's copies)
                continue
            linked.add((other.kind, other.digest))
            source = layout.network(Path(store), other.kind, other.digest)
            if (source / "summary.json").is_file():
                _link_files(source, layout.network(scratch, other.kind, other.digest))
        plan.run_task(own, ctx, experiment, tasks)
        return _same_weights(found.path, layout.network(scratch, network.kind, network.digest))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_stale_scratch(store: Path) -> None:
    """Remove the scratch directories of recomputations whose process is gone (killed): only directories named
    `.recompute-<pid>` that this module creates, never through a link."""
    for entry in Path(store).iterdir():
        pid = entry.name[len(SCRATCH_PREFIX) :]
        if not entry.name.startswith(SCRATCH_PREFIX) or not pid.isdigit() or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)  # rmtree never follows links out of the directory
        except PermissionError:
            pass  # another user's live process


def recompute(store: Path, count: int | None, seed: int = 0) -> tuple[int, list[str]]:
    """Recompute `count` networks of the store sampled with `seed` (None: all); (how many were recomputed, one line
    per problem)."""
    store = Path(store)
    remove_stale_scratch(store)
    linked: dict[str, tuple[Path, str]] = {}
    for experiment, runs in experiments_linking(store):
        for view, network in runs.items():
            linked.setdefault(Path(network).as_posix(), (experiment, view))
    candidates = stored_networks(store)
    if count is not None:
        candidates = sorted(random.Random(seed).sample(candidates, min(count, len(candidates))))
    problems, done = [], 0
    for path in candidates:
        relative = path.relative_to(store).as_posix()
        if path.parent.name == "prefix":
            continue  # a prefix's W_k is copied into its dense run, whose recomputation checks it
        if relative not in linked:
            problems.append(f"{path}: no experiment links to it: cannot recompute it from an experiment's spec")
            continue
        try:
            recipe = json.loads((path / layout.KEY_FILE).read_text())
        except (OSError, ValueError):
            problems.append(f"{path}: no readable recipe ({layout.KEY_FILE})")
            continue
        experiment, view = linked[relative]
        try:
            problem = recompute_one(store, Found(path, experiment, recipe), view)
        except UserError as error:
            problem = f"recomputing it failed: {error}"
        done += 1
        if problem is not None:
            problems.append(f"{path}: not what its recipe computes: {problem}")
    return done, problems


def parse_count(value: str) -> int | None:
    """`--recompute N|all`: a positive count, or None for all."""
    if value == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise UserError(f"--recompute takes a positive number of networks or 'all', got {value!r}")
    return count
