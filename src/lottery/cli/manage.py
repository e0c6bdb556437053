"""Store management: `lottery ls [STORE]`, `lottery rm EXPERIMENT`, `lottery gc STORE [--dry-run]`.

A store holds experiments (`<store>/<hash>/`, views whose run directories link to networks) and the networks
(`<store>/networks/<kind>/<hash>/`). `ls` lists the experiments; `rm` removes one experiment's view (its links,
spec and results), never a network; `gc` removes the networks no experiment links to (and the prefix runs of
dense networks none links to). Nothing here follows a link or touches anything outside the store's root, and `gc`
never removes a network whose lock (`<network>/.lock`, held by the process training it: `lottery.store.lock`) is
taken.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lottery.errors import UserError
from lottery.store import layout
from lottery.store.identity import digest
from lottery.store.run_dir import read_regular

LOCK = ".lock"


@dataclass
class Listed:
    hash: str
    settings: str  # the settings that differ from its preset (or from the defaults), `group.field=value`
    status: str  # running, done, partial (i/N networks finished), empty, old format
    date: str  # UTC, of its newest results (or of its spec)


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base + os.sep)


def experiments(store: Path) -> list[Path]:
    """The experiment directories of a store (real directories holding spec.json or runs.json), sorted."""
    if not store.is_dir():
        raise UserError(f"{store} is not a directory (expected a store: --out, $LOTTERY_RUNS or ./runs)")
    found = []
    for entry in sorted(store.iterdir()):
        if entry.name in (layout.NETWORKS,) or entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        if (entry / "spec.json").is_file() or (entry / layout.RUNS_FILE).is_file():
            found.append(entry)
    return found


@contextmanager
def _try_lock(directory: Path, create: bool) -> Iterator[bool]:
    """Whether `directory`'s lock is free (then held for the block). `create`: make the lock file when missing
    (without it a missing file means free, and nothing is written)."""
    path = directory / LOCK
    if path.is_symlink():
        yield False  # never open a link a store should not hold
        return
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0) | os.O_NOFOLLOW, 0o644)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key != "api":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing(spec_data: dict[str, Any]) -> str:
    """The settings of a stored spec (spec.json) that differ from its preset, or from the defaults without one. An
    experiment of the Python API (`lottery.imp(directory=)`) shows `api` and its `config` instead of its
    fingerprint."""
    from lottery.extension_points import reading_stored
    from lottery.spec import build, resolve, to_dict

    data = dict(spec_data)
    preset = data.pop("preset", None)
    with reading_stored():  # a plugin's mask sources and control kinds need not be imported to list it
        mine = _flatten(to_dict(build(data)))
    if preset is not None:
        base = _flatten(to_dict(resolve(preset=preset)[0]))
    else:
        base = _flatten(to_dict(build({})))
    parts = []
    for key, value in mine.items():
        if key == "model.options.api":
            config = f" config={json.dumps(value['config'])}" if value.get("config") else ""
            parts.append(f"api train_fn={str(value.get('fingerprint', '?'))[:8]}{config}")
        elif json.dumps(value, sort_keys=True) != json.dumps(base.get(key), sort_keys=True):
            parts.append(f"{key}={value if isinstance(value, str) else json.dumps(value)}")
    head = f"preset={preset}" if preset else ""
    return " ".join([head, *parts]).strip() or "(defaults)"


def _status(experiment: Path) -> str:
    if not (experiment / layout.RUNS_FILE).is_file():
        return "old format"
    with _try_lock(experiment, create=False) as free:
        if not free:
            return "running"
    try:
        runs = json.loads((experiment / layout.RUNS_FILE).read_text()).get("runs", {})
    except (OSError, ValueError, AttributeError):
        return "unreadable runs.json"
    if not runs:
        return "empty"
    finished = sum(
        (experiment / view / "summary.json").is_file()
        for view in runs
        if _inside(experiment / view, experiment.parent)  # a link out of the store counts as unfinished
    )
    if finished == len(runs):
        return "done" if (experiment / "results.json").is_file() else f"done ({finished} networks; no results.json)"
    return f"partial ({finished}/{len(runs)} networks finished)"


def _date(experiment: Path) -> str:
    for name in ("results.json", "spec.json", layout.RUNS_FILE):
        path = experiment / name
        if path.is_file():
            stamp = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
            return stamp.strftime("%Y-%m-%d %H:%M UTC")
    return "-"


def list_store(store: Path) -> list[Listed]:
    """One entry per experiment of the store."""
    rows = []
    for experiment in experiments(store):
        try:
            data = json.loads((experiment / "spec.json").read_text())
            settings = differing(data) if isinstance(data, dict) else "(spec.json is not a table)"
        except (OSError, ValueError, UserError) as error:
            settings = f"(unreadable spec.json: {str(error).splitlines()[0] if str(error) else type(error).__name__})"
        rows.append(Listed(experiment.name, settings, _status(experiment), _date(experiment)))
    return rows


def remove_experiment(experiment: Path) -> int:
    """Remove the experiment's view (spec, results, report, its run links): never a network, never through a link.
    Returns the number of run links removed."""
    experiment = Path(experiment)
    if experiment.is_symlink() or not experiment.is_dir():
        raise UserError(f"{experiment} is not an experiment directory (a real directory holding spec.json)")
    if experiment.name == layout.NETWORKS or not (experiment / "spec.json").is_file():
        raise UserError(f"{experiment} is not an experiment directory (no spec.json); nothing removed")
    if not (experiment / layout.RUNS_FILE).is_file():
        raise UserError(
            f"{experiment} predates store format 2: its trained runs are inside it, not in networks/; "
            "lottery rm removes views only, so it leaves it (delete it yourself if you mean to)"
        )
    with _try_lock(experiment, create=False) as free:
        if not free:
            if (experiment / LOCK).is_symlink():
                raise UserError(f"{experiment / LOCK} is a link, which a store never holds: remove it; nothing removed")
            raise UserError(f"{experiment} is in use by a running lottery process; nothing removed")
        links = len(layout.links(experiment))
        shutil.rmtree(experiment)  # unlinks the run links; never follows them (rmtree does not follow symlinks)
    return links


def live_networks(store: Path) -> set[str]:
    """The network directories (relative to the store, posix) that some experiment links to: its runs.json and its
    links on disk (those of an experiment still binding)."""
    live: set[str] = set()
    for entry in sorted(store.iterdir()):
        if entry.name == layout.NETWORKS or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            recorded = json.loads((entry / layout.RUNS_FILE).read_text()).get("runs", {})
            live.update(str(v) for v in recorded.values() if isinstance(v, str))
        except (OSError, ValueError, AttributeError):
            pass
        live.update(layout.links(entry).values())
    return live | _prefixes_of(store, live)


def _prefixes_of(store: Path, live: set[str]) -> set[str]:
    """The prefix runs (linked by no experiment: their W_k are copied into their dense run) of the live dense
    networks: kept with them, and never removed while a run that made one copies from it."""
    kept = set()
    for network in network_dirs(store):
        if network.parent.name != "prefix":
            continue
        if not (network / layout.KEY_FILE).exists() and not (network / layout.KEY_FILE).is_symlink():
            kept.add(network.relative_to(store).as_posix())  # being made: its recipe is written next (networks.claim)
            continue
        try:
            recipe = json.loads(read_regular(network / layout.KEY_FILE))
            dense = f"{layout.NETWORKS}/dense/{digest(recipe['dense'])}"
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a prefix with a damaged recipe is garbage
        if dense in live:
            kept.add(network.relative_to(store).as_posix())
    return kept


def network_dirs(store: Path) -> list[Path]:
    """Every network directory `networks/<kind>/<hash>` of the store (links skipped: never followed)."""
    root = store / layout.NETWORKS
    if not root.is_dir() or root.is_symlink():
        return []
    found = []
    for kind in sorted(root.iterdir()):
        if kind.is_symlink() or not kind.is_dir():
            continue
        found += [n for n in sorted(kind.iterdir()) if n.is_dir() and not n.is_symlink()]
    return found


def _size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):  # followlinks=False
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class Collected:
    removed: list[Path]
    held: list[Path]  # unlinked but locked by a running process: kept
    bytes: int


def collect_garbage(store: Path, dry_run: bool) -> Collected:
    """Remove (or with `dry_run` only list) the networks of `store` that no experiment links to, except those whose
    lock is held. The live set is read again after each candidate's lock is taken, so a network an experiment
    links meanwhile is kept."""
    store = Path(store)
    if not store.is_dir() or store.is_symlink():
        raise UserError(f"{store} is not a store directory (a real directory holding networks/)")
    if not (store / layout.NETWORKS).is_dir():
        raise UserError(f"{store} holds no networks/ directory: not a store (nothing to collect)")
    live = live_networks(store)
    removed, held, size = [], [], 0
    for network in network_dirs(store):
        relative = network.relative_to(store).as_posix()
        if relative in live or not _inside(network, store):
            continue
        with _try_lock(network, create=not dry_run) as free:
            if not free:
                held.append(network)
                continue
            if dry_run:
                removed.append(network)
                size += _size(network)
                continue
            if relative in live_networks(store):  # linked since the first look
                continue
            size += _size(network)
            shutil.rmtree(network)
            removed.append(network)
    return Collected(removed, held, size)
