"""An experiment's tasks: a `Task` (the unit an executor runs: its name, what it does and the tasks it needs), the
tasks' names (a task that finds a dependency's artifacts missing names the task that produces them), and the error
that says so. Every network of `views.networks` carries the task that trains it; plan.py groups them.

A task never trains what another task produces: it reads its dependencies' artifacts from the store, and where
one is missing (never produced, deleted, or failing verification) it raises `MissingDependency` naming the task
to run. The executor (`plan.run_task`, used by the local and Ray executors) runs that task, then this one again.
"""

from __future__ import annotations

from dataclasses import dataclass

from lottery.errors import UserError


@dataclass(frozen=True)
class Task:
    name: str  # unique within the experiment, readable: 'r0/dense', 'r0/k100/level3/random_prune/seed0'
    action: str  # 'dense', 'level', 'control', 'stability', 'mask', 'mask_trace' or 'dynamic'
    replicate: int
    rewind: int = 0
    level: int = 0
    control: str = ""
    seed: int = 0
    deps: tuple[str, ...] = ()
    density: float = 1.0  # a mask source's target density
    members: tuple[str, ...] = ()  # a stacked group's task: the names of the runs' own tasks it stands for


def dense(r: int) -> str:
    return f"r{r}/dense"


def level(r: int, k: int, level_: int) -> str:
    """IMP level `level_` rewound to k (level 0: the dense run)."""
    return dense(r) if level_ == 0 else f"r{r}/k{k}/level{level_}"


def control(r: int, k: int, level_: int, kind: str, seed: int) -> str:
    return f"{level(r, k, level_)}/{kind}/seed{seed}"


def stability(r: int, k: int, level_: int) -> str:
    return f"r{r}/k{k}/stability/level{level_}"


def replicates(k: int, level_: int) -> str:
    """The stacked group of every replicate's dense run (level 0) or IMP level `level_` rewound to k."""
    return "r*/dense" if level_ == 0 else f"r*/k{k}/level{level_}"


def controls(r: int, k: int, level_: int) -> str:
    """The stacked group of a level's controls."""
    return f"{level(r, k, level_)}/controls"


def masks_at(r: int, density: float, seed: int) -> str:
    """The stacked group of the [masks] runs of every kind at one density and seed."""
    return f"r{r}/masks/density{density:g}/seed{seed}"


def mask_trace(r: int) -> str:
    return f"r{r}/masks/early_bird_trace"


def mask(r: int, kind: str, density: float, seed: int) -> str:
    return f"r{r}/masks/{kind}/density{density:g}/seed{seed}"


class MissingDependency(UserError):
    """What a task needs is not in the store: `task` (a task name) produces it."""

    def __init__(self, task: str, what: str) -> None:
        self.task = task
        super().__init__(f"{what} is missing from the store; task {task} produces it: run the experiment again")
