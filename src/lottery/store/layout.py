"""The on-disk layout of a store: the only module that spells where a trained network or an experiment lives.

    <store>/networks/<kind>/<hash>/                     one trained network, named by what determines its weights
                                                        (its key.json; experiments/keys.py); shared by experiments
    <store>/<spec hash>/                                an experiment: a view (spec, results, report) whose run
                                                        directories below are links to networks, listed in runs.json

Inside an experiment (the view every reader uses; each run directory a relative symlink into networks/):

    <experiment>/replicate_<r>/level_0                                      the dense run (W_0 -> T)
    <experiment>/replicate_<r>/level_0/snapshots/iter_<k>.safetensors       W_k (and iter_<k>.optimizer.pt)
    <experiment>/replicate_<r>/rewind_<k>it/level_<L>                       IMP level L rewound to k
    <experiment>/replicate_<r>/rewind_<k>it/controls/level_<L>/<kind>_seed<s>
    <experiment>/replicate_<r>/rewind_<k>it/stability/level_<L>/<kind>_copy<i>   (analysis.json beside them)
    <experiment>/replicate_<r>/masks/<kind>/density_<d>_seed<s>             a [masks] run (early_bird.json in masks/)
    <experiment>/replicate_<r>/prefix_<k>it                                 the dense run's iterations 0..k retrained
                                                                            (W_k where the dense run never saved it)

An experiment made before format 2 has no runs.json: real directories inside it, with the controls inside their
level's run. `lottery verify` checks it; `run`, `show` and `report` say in one line that it predates the format.

Every function takes and returns the same kind of path: a `RunDir` or a `pathlib.Path` (anything with `/`).
The Python API's IMP driver (`lottery.api.imp`) writes the same layout under its own root, without the
`replicate_<r>` level.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Protocol, TypeVar


class _Joinable(Protocol):
    def __truediv__(self, name: str) -> _Joinable: ...


P = TypeVar("P", bound=_Joinable)

_REWIND = re.compile(r"^rewind_(\d+)it$")
SNAPSHOT_FILE = re.compile(r"(?:^|/)snapshots/iter_(\d+)\.safetensors$")  # a weights snapshot; group 1: iteration
SNAPSHOT_TEMPORARIES = "snapshots/.*.tmp"  # glob: half-written snapshots (store/atomic.py's temporaries)
STABILITY_ANALYSES = "rewind_*it/stability/level_*/analysis.json"  # glob under a replicate directory


FORMAT = 2  # the store format: networks named by their key, experiments as views (runs.json)
RUNS_FILE = "runs.json"  # an experiment's view: {"format": 2, "runs": {view path: network path}}
NETWORKS = "networks"
KEY_FILE = "key.json"  # in a network's directory: its key (what determines it), written once when first bound


def network(store: Path, kind: str, digest: str) -> Path:
    """The directory of the trained network of `kind` (dense, imp, control kinds, copy, mask kinds, prefix) whose
    key hashes to `digest`."""
    return Path(store) / NETWORKS / kind / digest


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


def bind(view: Path, target: Path) -> bool:
    """Make the run directory `view` of an experiment a relative symlink to the network directory `target`
    (created if missing), atomically. A real directory already at `view` (a store made before format 2) is kept
    and used in place. Returns whether `view` is (now) a link to `target`."""
    view, target = Path(view), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if view.is_dir() and not view.is_symlink():
        return False
    view.parent.mkdir(parents=True, exist_ok=True)
    link = os.path.relpath(target, view.parent)
    if view.is_symlink() and os.readlink(view) == link:
        return True
    temporary = view.parent / f".{view.name}.{os.getpid()}.link.tmp"
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


def walk(root: Path, *patterns: str) -> list[Path]:
    """Every file under `root` whose name matches one of `patterns` (fnmatch), following an experiment's links into
    networks/ (a directory reached twice is listed once, under the first path found), sorted."""
    found, seen = [], set()
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirectories.clear()
            continue
        seen.add(real)
        subdirectories.sort()
        found += [Path(directory) / f for f in files if any(fnmatch.fnmatchcase(f, p) for p in patterns)]
    return sorted(found)


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
    """The rewind search's retraining of the dense run's prefix 0..k (W_k for a point off the grid)."""
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


def rewind_points(replicate_dir: Path) -> list[int]:
    """The rewind points k with a `rewind_<k>it` directory under a replicate directory, ascending."""
    found = (_REWIND.match(p.name) for p in Path(replicate_dir).glob("rewind_*it") if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)
