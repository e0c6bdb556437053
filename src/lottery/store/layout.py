"""The on-disk layout of a store: the only module that spells where a trained network or an experiment lives.

    <store>/networks/<kind>/<hash>/                     one trained network, named by what determines its weights
                                                        (its key.json; experiments/recipes.py); shared by experiments
    <store>/<spec hash>/                                an experiment: a view (spec, results, report) whose run
                                                        directories below are links to networks, listed in runs.json

Inside an experiment (the view every reader uses; each run directory a relative symlink into networks/):

    <experiment>/replicate_<r>/level_0                                      the dense run (W_0 -> T)
    <experiment>/replicate_<r>/level_0/snapshots/iter_<k>.safetensors       W_k (and iter_<k>.optimizer.pt)
    <experiment>/replicate_<r>/rewind_<k>it/level_<L>                       IMP level L rewound to k
    <experiment>/replicate_<r>/rewind_<k>it/controls/level_<L>/<kind>_seed<s>
    <experiment>/replicate_<r>/rewind_<k>it/stability/level_<L>/<kind>_copy<i>   (analysis.json beside them)
    <experiment>/replicate_<r>/masks/<kind>/density_<d>_seed<s>             a [masks] run (early_bird.json in masks/)

An experiment made before format 2 has no runs.json: real directories inside it, with the controls inside their
level's run. `lottery verify` checks it; `run`, `show` and `report` say in one line that it predates the format.

The store never reads, writes, renames or removes through a link other than an experiment's run links, and those
only into its own `networks/<kind>/<hash>` (a real directory): `confined` checks every such path (store/atomic.py,
run_dir.py, lock.py call it), `bind` refuses to link otherwise, and `walk` never follows any other link.

Every function takes and returns the same kind of path: a `RunDir` or a `pathlib.Path` (anything with `/`).
The Python API's IMP driver (`lottery.imp(..., directory=STORE)`, `lottery.api.store`) writes an experiment of
this layout (replicate 0) into the same kind of store.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Protocol, TypeVar

from lottery.errors import UserError


class _Joinable(Protocol):
    def __truediv__(self, name: str) -> _Joinable: ...


P = TypeVar("P", bound=_Joinable)

_REWIND = re.compile(r"^rewind_(\d+)it$")
_REPLICATE = re.compile(r"^replicate_\d+$")
_EXPERIMENT = re.compile(r"^[0-9a-f]{16}$")  # an experiment's directory: its spec hash (lottery.spec.spec_hash)
SNAPSHOT_FILE = re.compile(r"(?:^|/)snapshots/iter_(\d+)\.safetensors$")  # a weights snapshot; group 1: iteration
SNAPSHOTS = "snapshots"  # the directory of a run's snapshots
# A temporary file the store creates (an atomic write's, a link being made): `.<name>.lottery-<pid>-<tag>.tmp`;
# only such files, of processes no longer running, are ever removed (RunDir.remove_temporary).
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.lottery-(?P<pid>\d+)-(?P<tag>[A-Za-z0-9_]+)\.tmp$")
STABILITY_ANALYSES = "rewind_*it/stability/level_*/analysis.json"  # glob under a replicate directory


FORMAT = 3  # the store format: networks named by their full recipe, experiments as views (runs.json)
RUNS_FILE = "runs.json"  # an experiment's view: {"format": 3, "runs": {view path: network path}}
NETWORKS = "networks"
FORMAT_FILE = ".format.json"  # in networks/: {"format": 3}, the format of every network below it
KEY_FILE = "key.json"  # in a network's directory: its recipe (what determines it), written before it is trained


def temporary_prefix(name: str) -> str:
    """The start of the name of a temporary file for `name`, made by this process (`TEMPORARY`)."""
    return f".{name}.lottery-{os.getpid()}-"


def network(store: Path, kind: str, digest: str) -> Path:
    """The directory of the trained network of `kind` (dense, imp, control kinds, copy, mask kinds, prefix) whose
    key hashes to `digest`."""
    return Path(store) / NETWORKS / kind / digest


def network_name(run: Path) -> str | None:
    """`<kind>/<hash>` of the network a run directory is (or links to); None for a directory outside networks/."""
    parts = Path(os.path.realpath(run)).parts
    return f"{parts[-2]}/{parts[-1]}" if len(parts) >= 3 and parts[-3] == NETWORKS else None


def fingerprints(store: Path) -> Path:
    """The cache of dataset file digests (data/fingerprint.py), kept in the store."""
    return Path(store) / NETWORKS / ".fingerprints.json"


def store_of(experiment: Path) -> Path:
    """The store an experiment directory belongs to."""
    return Path(experiment).parent


def store_of_run(view: Path) -> Path:
    """The store of a run directory inside an experiment (`<store>/<spec hash>/replicate_<r>/...`)."""
    parts = Path(view).parts
    for i in range(len(parts) - 1, 0, -1):
        if re.fullmatch(r"replicate_\d+", parts[i]):
            return Path(*parts[: i - 1])
    raise ValueError(f"{view} is not a run directory inside an experiment")


def store_of_path(path: Path) -> Path | None:
    """The store a path lies in, read from its spelling (no file is read): the directory holding the experiment
    (`<store>/<spec hash>/...`, `<store>/<experiment>/replicate_<r>/...`) or the network
    (`<store>/networks/<kind>/<hash>/...`) the path names; None for a path in no store (the Python API's own
    directories, an export)."""
    parts = Path(os.path.abspath(path)).parts
    for i in range(len(parts) - 1, 0, -1):
        if _REPLICATE.match(parts[i]) and i >= 2:
            return Path(*parts[: i - 1])
        if _EXPERIMENT.match(parts[i]) or (parts[i] == NETWORKS and len(parts) - i >= 3):
            return Path(*parts[:i])
    return None


def outside(path: Path | str, store: Path) -> bool:
    """Whether `path`, resolved (links followed), lies outside the store `store`."""
    relative = os.path.relpath(os.path.realpath(path), os.path.realpath(store))
    return relative == os.pardir or relative.startswith(os.pardir + os.sep)


def link_problem(link: Path, store: Path) -> str | None:
    """What is wrong with the link `link` of an experiment in `store` (None: a run link into the store's networks,
    to a network directory that may be missing). A run link must name `networks/<kind>/<hash>` of its own store,
    a real directory: not a link itself, nor reached through one."""
    link = Path(link)
    target = os.path.normpath(os.path.join(link.parent, os.readlink(link)))  # one step, as the link spells it
    real = os.path.realpath(target)
    if outside(real, store):
        return f"links outside the store, to {real}"
    relative = os.path.relpath(real, os.path.realpath(store))
    parts = Path(relative).parts
    if len(parts) != 3 or parts[0] != NETWORKS or Path(target).name != parts[2]:
        return f"links to {relative}, which is not a network directory ({NETWORKS}/<kind>/<hash>) of the store"
    if os.path.islink(target) or os.path.islink(Path(target).parent):
        return f"links to {relative} through another link ({target}): a network directory must be a real directory"
    return None


def confined(path: Path) -> Path | None:
    """Check that `path`, a file the store is about to read, write, rename, lock or remove, lies inside its store
    (`store_of_path`): every directory on the way from the store down is a real directory, except one run link of
    an experiment into the store's `networks/` (`link_problem`). Returns the store (None: `path` is in no store,
    nothing to check); UserError (one line) when a link leads elsewhere."""
    store = store_of_path(path)
    if store is None:
        return None
    current, relative = store, Path(os.path.abspath(path)).relative_to(store).parts
    linked = relative[:1] == (NETWORKS,)  # in networks/: no link at all
    for name in relative[:-1]:
        current = current / name
        if not os.path.islink(current):
            continue
        if linked:
            problem = (
                f"is a link (to {os.path.realpath(current)}), where the store's {NETWORKS}/ holds real directories only"
            )
        else:
            problem = link_problem(current, store)
        if problem:
            raise UserError(
                f"refusing to use {path}: {current} {problem} (the store reads and writes only inside {store}); "
                f"remove that link (`lottery verify {store}` lists every such link) and run the command again"
            )
        linked = True
    return store


def bind(view: Path, target: Path) -> bool:
    """Make the run directory `view` of an experiment a relative symlink to the network directory `target`
    (created if missing), atomically. A real directory already at `view` (a store made before format 2) is kept
    and used in place. Returns whether `view` is (now) a link to `target`. A link already at `view` that leads
    out of the store, or a `target` that is not a real directory of the store, is refused (UserError)."""
    view, target = Path(view), Path(target)
    confined(target / KEY_FILE)  # networks/<kind>/<hash> itself a real directory (or missing), not a link
    store = confined(view)
    if store is not None and os.path.islink(view) and outside(view, store):
        raise UserError(
            f"refusing to use {view}: it links outside the store, to {os.path.realpath(view)} (the store reads and "
            f"writes only inside {store}); remove that link (`lottery verify {store}` lists every such link) and run "
            "the command again"
        )
    target.mkdir(parents=True, exist_ok=True)
    if view.is_dir() and not view.is_symlink():
        return False
    view.parent.mkdir(parents=True, exist_ok=True)
    link = os.path.relpath(target, view.parent)
    if view.is_symlink() and os.readlink(view) == link:
        return True
    temporary = view.parent / f"{temporary_prefix(view.name)}link.tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(link, temporary)
    os.replace(temporary, view)  # atomic: a reader sees the old link or the new one
    return True


def links(experiment: Path) -> dict[str, str]:
    """Every run directory of an experiment that links to a network: its path in the experiment -> the network's path
    in the store (posix, sorted), as `runs.json` records them."""
    experiment, found = Path(experiment), {}
    store = os.path.realpath(store_of(experiment))
    for directory, subdirectories, _ in os.walk(experiment):  # never into a link: networks hold no links
        for name in subdirectories:
            path = Path(directory) / name
            if path.is_symlink():
                found[path.relative_to(experiment).as_posix()] = Path(
                    os.path.relpath(os.path.realpath(path), store)
                ).as_posix()
    return dict(sorted(found.items()))


def store_for(root: Path) -> Path:
    """The store of a directory given to `lottery verify` (a whole store, an experiment, or a directory in one)."""
    root = Path(root)
    found = store_of_path(root / KEY_FILE)
    if found is not None:
        return found
    experiment = any((root / name).exists() for name in (RUNS_FILE, "spec.json")) or (root.parent / NETWORKS).is_dir()
    return root.parent if experiment else root


def walk(root: Path, *patterns: str) -> list[Path]:
    """Every file under `root` whose name matches one of `patterns` (fnmatch), following an experiment's links into
    networks/ (a directory reached twice is listed once, under the first path found), sorted. No other link is
    followed: a link out of the store, to a network directory that is a link, or inside a network (`link_problem`;
    `lottery verify` reports them)."""
    found, seen, store = [], set(), store_for(root)
    try:
        confined(Path(root) / KEY_FILE)
    except UserError:
        return []  # `root` itself is reached through a link out of the store (verify says so: store/audit.py)
    in_network = {str(root): in_a_network(store, Path(root))}
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirectories.clear()
            continue
        seen.add(real)
        inside, kept = in_network.pop(directory, True), []
        for name in sorted(subdirectories):
            path = Path(directory) / name
            if os.path.islink(path) and (inside or link_problem(path, store) is not None):
                continue
            kept.append(name)
            in_network[str(path)] = inside or os.path.islink(path) or in_a_network(store, path)
        subdirectories[:] = kept
        found += [Path(directory) / f for f in files if any(fnmatch.fnmatchcase(f, p) for p in patterns)]
    return sorted(found)


def in_a_network(store: Path, path: Path) -> bool:
    """Whether `path` (a directory of `store`) lies inside a network: under `networks/<kind>/<hash>`, or reached
    through a link."""
    try:
        relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(store)).parts
    except ValueError:
        return True  # not under the store's spelling: treated as foreign ground, where no link is followed
    if relative[:1] == (NETWORKS,) and len(relative) >= 3:
        return True
    return any(os.path.islink(Path(store, *relative[: i + 1])) for i in range(len(relative)))


def replicate(experiment: P, r: int) -> P:
    """Replicate r's directory in an experiment."""
    return experiment / f"replicate_{r}"  # type: ignore[return-value]


def sibling(replicate_dir: P, r: int) -> P:
    """Replicate r's directory, next to another replicate's."""
    path = Path(getattr(replicate_dir, "path", replicate_dir))  # a RunDir's, or the Path itself
    return type(replicate_dir)(path.parent / f"replicate_{r}")  # type: ignore[call-arg]


def dense(replicate_dir: P) -> P:
    """The dense run (level 0) of a replicate."""
    return replicate_dir / "level_0"  # type: ignore[return-value]


def rewind(replicate_dir: P, k: int) -> P:
    """The directory of everything rewound to iteration k."""
    return replicate_dir / f"rewind_{k}it"  # type: ignore[return-value]


def level(replicate_dir: P, k: int, level: int) -> P:
    """IMP level `level` >= 1 rewound to k (level 0 is `dense`)."""
    return rewind(replicate_dir, k) / f"level_{level}"  # type: ignore[return-value]


def imp_run(root: P, k: int, level_: int) -> P:
    """Level `level_` of an IMP chain under `root`: the dense run at level 0, else the level rewound to k."""
    return dense(root) if level_ == 0 else level(root, k, level_)


def prefix(replicate_dir: P, k: int) -> P:
    """Where the rewind search counts the retraining of the dense run's prefix 0..k (W_k for a point off the grid):
    no experiment links a prefix run, which lives in `networks/prefix/<hash>` only (experiments/imp.fill_snapshots)."""
    return replicate_dir / f"prefix_{k}it"  # type: ignore[return-value]


def stand_in(run: P, position: int) -> P:
    """A name for position `position` of a stacked group that nothing trains (a prefix run recomputing one member
    of a stacked dense run trains at its position, with stand-ins around it): never written."""
    return run / f".stand_in_{position}"  # type: ignore[return-value]


def control_name(kind: str, seed: int) -> str:
    """A control run's directory name, e.g. 'random_prune_seed0'."""
    return f"{kind}_seed{seed}"


def controls(replicate_dir: P, k: int, level_: int) -> P:
    """The directory of the controls of IMP level `level_` rewound to k (beside the level's run, not inside it: a
    level's network is shared by experiments whose controls differ)."""
    return rewind(replicate_dir, k) / "controls" / f"level_{level_}"  # type: ignore[return-value]


def control(replicate_dir: P, k: int, level_: int, kind: str, seed: int) -> P:
    """The control (kind, seed) of IMP level `level_` rewound to k."""
    return controls(replicate_dir, k, level_) / control_name(kind, seed)  # type: ignore[return-value]


def stability(replicate_dir: P, k: int, level_: int) -> P:
    """The stability analysis of (k, level): its analysis.json and its copies."""
    return rewind(replicate_dir, k) / "stability" / f"level_{level_}"  # type: ignore[return-value]


def copy(stability_dir: P, kind: str, i: int) -> P:
    """Copy i of the subject `kind` in a stability directory."""
    return stability_dir / f"{kind}_copy{i}"  # type: ignore[return-value]


def masks(replicate_dir: P) -> P:
    """The [masks] directory of a replicate (its runs, early_bird.json)."""
    return replicate_dir / "masks"  # type: ignore[return-value]


def mask_run(replicate_dir: P, kind: str, density: float, seed: int) -> P:
    """The [masks] run of `kind` (a source or `<source>_<ablation>`) at a target density and seed."""
    return masks(replicate_dir) / kind / f"density_{density:g}_seed{seed}"  # type: ignore[return-value]


def dynamic(replicate_dir: P) -> P:
    """The dynamic-sparsity runs of a replicate ([dynamic], experiments/dynamic.py)."""
    return replicate_dir / "dynamic"  # type: ignore[return-value]


def dynamic_run(replicate_dir: P, kind: str, density: float, seed: int, k: int | None = None) -> P:
    """A [dynamic] run (`kind`: a method) at a target density and seed; `<method>_rewound` at rewind point k."""
    where = dynamic(replicate_dir) / kind
    where = where if k is None else where / f"rewind_{k}it"
    return where / f"density_{density:g}_seed{seed}"  # type: ignore[return-value]


def snapshot(iteration: int, optimizer: bool = False) -> str:
    """The file name, inside a run, of the weights (or optimizer state) saved at `iteration`."""
    return f"snapshots/iter_{iteration}.{'optimizer.pt' if optimizer else 'safetensors'}"


def dynamic_state(iteration: int) -> str:
    """The file, inside a dynamic-sparsity run, of its method's state (mask, step, history) at `iteration`."""
    return f"snapshots/iter_{iteration}.dynamic.pt"


def predates_links(experiment: Path) -> bool:
    """Whether an experiment was made before store format 2: a run directory that format 2 links (a replicate's
    dense run) is a real directory in it. (A format-2 experiment whose `runs.json` was deleted has links there.)"""
    for replicate_dir in Path(experiment).glob("replicate_*"):
        run = dense(replicate_dir)
        if run.is_dir() and not run.is_symlink():
            return True
    return False


def rewind_points(replicate_dir: Path) -> list[int]:
    """The rewind points k with a `rewind_<k>it` directory under a replicate directory, ascending."""
    found = (_REWIND.match(p.name) for p in Path(replicate_dir).glob("rewind_*it") if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)
