"""The on-disk layout of an experiment: the only module that spells the path of a run inside an experiment.

    <experiment>/replicate_<r>/level_0                                      the dense run (W_0 -> T)
    <experiment>/replicate_<r>/level_0/snapshots/iter_<k>.safetensors       W_k (and iter_<k>.optimizer.pt)
    <experiment>/replicate_<r>/rewind_<k>it/level_<L>                       IMP level L rewound to k
    <experiment>/replicate_<r>/rewind_<k>it/level_<L>/controls/<kind>_seed<s>
    <experiment>/replicate_<r>/rewind_<k>it/stability/level_<L>/<kind>_copy<i>   (analysis.json beside them)
    <experiment>/replicate_<r>/masks/<kind>/density_<d>_seed<s>             a [masks] run (early_bird.json in masks/)

Every function takes and returns the same kind of path: a `RunDir` or a `pathlib.Path` (anything with `/`).
The Python API's IMP driver (`lottery.api.imp`) writes the same layout under its own root, without the
`replicate_<r>` level.
"""

from __future__ import annotations

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


def control_name(kind: str, seed: int) -> str:
    """A control run's directory name, e.g. 'random_prune_seed0'."""
    return f"{kind}_seed{seed}"


def control_of(level_run: P, name: str) -> P:
    """The control run called `name` (`control_name`) of an IMP level's run."""
    return level_run / "controls" / name  # type: ignore[return-value]


def control(replicate_dir: P, k: int, level_: int, kind: str, seed: int) -> P:
    """The control (kind, seed) of IMP level `level_` rewound to k."""
    return control_of(level(replicate_dir, k, level_), control_name(kind, seed))


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


def snapshot(iteration: int, optimizer: bool = False) -> str:
    """The file name, inside a run, of the weights (or optimizer state) saved at `iteration`."""
    return f"snapshots/iter_{iteration}.{'optimizer.pt' if optimizer else 'safetensors'}"


def rewind_points(replicate_dir: Path) -> list[int]:
    """The rewind points k with a `rewind_<k>it` directory under a replicate directory, ascending."""
    found = (_REWIND.match(p.name) for p in Path(replicate_dir).glob("rewind_*it") if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)
