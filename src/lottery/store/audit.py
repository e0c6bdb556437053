"""What `lottery verify` checks beyond the manifests: the links of each experiment and the networks they name.

- every link in an experiment is a run link into its own store's `networks/<kind>/<hash>`, a real directory
  (`layout.link_problem`: a link out of the store, "foreign", or to anything else is reported and never followed);
  a run link whose network is gone is reported as dangling;
- `runs.json` lists exactly the experiment's links, each to the network its directory links to;
- every network's `key.json` hashes to the network's name (`identity.digest`) and names its kind; a network
  directory is a real directory, and holds no link.

Nothing here imports the engine, and nothing is written: each problem is one (path, problem) pair.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lottery.errors import UserError
from lottery.store import identity, layout
from lottery.store.run_dir import RunDir

Problem = tuple[Path, str]
KEY_LIMIT = 1 << 20  # bytes: a key is a few KB; anything larger is not one
_REMOVE = "remove that link and run the experiment again (its networks are linked anew)"


def experiments(root: Path) -> list[Path]:
    """The experiment directories `lottery verify ROOT` checks: ROOT itself, or every experiment of a store."""
    root = Path(root)
    if _is_experiment(root):
        return [root]
    if not root.is_dir() or root.is_symlink():
        return []
    return sorted(p for p in root.iterdir() if _is_experiment(p) and not p.is_symlink())


def _is_experiment(path: Path) -> bool:
    return any((path / name).exists() for name in (layout.RUNS_FILE, "spec.json"))


def _target(link: Path, store: Path) -> str:
    """Where a link points, relative to the store, as the link spells it (posix)."""
    target = os.path.normpath(os.path.join(link.parent, os.readlink(link)))
    return Path(os.path.relpath(target, os.path.abspath(store))).as_posix()


def link_problems(experiment: Path, store: Path) -> tuple[list[Problem], set[Path]]:
    """(problems, networks): every link of `experiment` that is dangling, foreign or not a run link, every
    disagreement between its links and its `runs.json`; and the networks its run links name."""
    problems: list[Problem] = []
    found: dict[str, str] = {}
    networks: set[Path] = set()
    reported: set[str] = set()
    for directory, subdirectories, files in os.walk(experiment):  # never through a link
        subdirectories.sort()
        for name in sorted(subdirectories + files):
            link = Path(directory) / name
            if not link.is_symlink():
                continue
            view = link.relative_to(experiment).as_posix()
            problem = layout.link_problem(link, store)
            if problem is not None:
                problems.append((link, f"{problem}: not followed; {_REMOVE}"))
                reported.add(view)
                continue
            found[view] = _target(link, store)
            if link.is_dir():
                networks.add(Path(store) / found[view])
            elif link.exists():
                problems.append((link, f"links to {found[view]}, which is not a directory: {_REMOVE}"))
            else:
                problems.append(
                    (
                        link,
                        f"dangling link to {found[view]} (the network is missing: the next `lottery run` of the "
                        "experiment trains it again)",
                    )
                )
    problems += _runs_json_problems(Path(experiment), found, reported)
    return problems, networks


def _runs_json_problems(experiment: Path, found: dict[str, str], reported: set[str]) -> list[Problem]:
    """`runs.json` against the links found (those `reported` already are not repeated). An unreadable or unverified
    runs.json is the manifest's problem."""
    try:
        raw = RunDir(experiment).read(layout.RUNS_FILE, quiet=True)
        data = json.loads(raw) if raw is not None else None
    except (UserError, ValueError):  # reached through a link (reported), or not JSON though recorded
        data = None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, dict):
        return []
    problems = []
    again = "the next `lottery run` of the experiment"
    for view, network in sorted(runs.items(), key=lambda item: str(item[0])):
        path, view = experiment / str(view), str(view)
        if view in reported:
            continue
        if view not in found:
            why = "is not a link" if path.exists() or path.is_symlink() else "is missing"
            problems.append((path, f"runs.json links it to {network}, but it {why} ({again} links it again)"))
        elif found[view] != network:
            why = f"links to {found[view]}, but runs.json says {network}"
            problems.append((path, f"{why} ({again} links it again and rewrites runs.json)"))
    for view in sorted(set(found) - {str(v) for v in runs}):
        problems.append(
            (experiment / view, f"links to {found[view]}, which runs.json does not list ({again} records it)")
        )
    return problems


def store_networks(store: Path) -> tuple[list[Problem], list[Path]]:
    """(problems, networks): every network directory of a store (`networks/<kind>/<hash>`), and `networks/` or a
    `networks/<kind>/` that is a link (never followed)."""
    root = Path(store) / layout.NETWORKS
    linked = "is a link (to {}): not followed; the store keeps its networks in real directories"
    if root.is_symlink():
        return [(root, linked.format(os.path.realpath(root)))], []
    if not root.is_dir():
        return [], []
    problems, networks = [], []
    for kind in sorted(root.iterdir()):
        if kind.is_symlink():
            problems.append((kind, linked.format(os.path.realpath(kind))))
        elif kind.is_dir():
            networks += sorted(kind.iterdir())
    return problems, networks


def network_problems(network: Path) -> list[Problem]:
    """A network directory that is a link, holds a link, or whose key.json does not name it."""
    network = Path(network)
    if network.is_symlink():
        return [
            (
                network,
                f"a network directory that is a link (to {os.path.realpath(network)}): not followed; "
                "remove it (the experiments that need it train it again)",
            )
        ]
    if not network.is_dir():
        return []
    problems = []
    for directory, subdirectories, files in os.walk(network):
        for name in sorted(subdirectories + files):
            if (Path(directory) / name).is_symlink():
                problems.append((Path(directory) / name, "a link inside a network directory: not followed"))
    why = key_problem(network)
    if why is not None:
        problems.append(
            (
                network / layout.KEY_FILE,
                f"{why}: foreign or damaged network; remove {network} (the experiments that need it train it again)",
            )
        )
    return problems


def key_problem(network: Path) -> str | None:
    """Why the network's key.json does not name it (None: its digest is the directory's name, its kind the
    directory's kind)."""
    path = Path(network) / layout.KEY_FILE
    if path.is_symlink():
        return "key.json is a link"
    try:
        if path.stat().st_size > KEY_LIMIT:
            return f"key.json is larger than {KEY_LIMIT} bytes"
        key: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return "key.json is missing"
    except (OSError, ValueError) as error:
        return f"key.json is unreadable ({getattr(error, 'strerror', None) or error})"
    if not isinstance(key, dict):
        return "key.json holds no key"
    name = identity.digest(key)
    if name != network.name:
        return f"key.json hashes to {name}, not to the directory's name"
    if str(key.get("kind")) != network.parent.name:
        return f"key.json names kind {key.get('kind')!r}, not the directory's {network.parent.name!r}"
    return None


def problems(root: Path) -> list[Problem]:
    """Every link and network problem under `root` (a store, an experiment, or a directory in one)."""
    root, store = Path(root), layout.store_for(root)
    try:
        layout.confined(root / layout.KEY_FILE)
    except UserError as error:
        return [(root, f"not checked: {error}")]
    found: list[Problem] = []
    networks: set[Path] = set()
    for experiment in experiments(root):
        theirs, linked = link_problems(experiment, store)
        found += theirs
        networks |= linked
    if Path(os.path.abspath(root)) == Path(os.path.abspath(store)):
        for link in sorted(p for p in root.iterdir() if p.is_symlink() and p.name != layout.NETWORKS):
            found.append(
                (
                    link,
                    f"a link in the store (to {os.path.realpath(link)}): not followed; an experiment "
                    "directory must be a real directory of the store",
                )
            )
        theirs, everyone = store_networks(store)
        found += theirs
        networks |= set(everyone)
    elif layout.store_of_path(root / layout.KEY_FILE) is not None and root.parent.parent.name == layout.NETWORKS:
        networks.add(root)  # a network directory itself
    for network in sorted(networks):
        found += network_problems(network)
    return found


def check_view(experiment: Path) -> None:
    """UserError (one line) where a run link of the experiment leads to another network than its `runs.json` says
    (re-pointed inside the store): readers (show, report, export) never read a network other than the one the
    experiment recorded. A link that is missing or dangling is the missing network's business (recomputed)."""
    experiment = Path(experiment)
    if not (experiment / layout.RUNS_FILE).is_file():
        return
    store = layout.store_of(experiment)
    problems, _ = link_problems(experiment, store)
    for path, problem in problems:
        if "but runs.json says" in problem:
            what = problem.split(" (")[0]
            raise UserError(f"{path} {what}: not read; `lottery run` of its spec links it again")
