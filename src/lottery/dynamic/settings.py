"""The `[dynamic]` spec group as `Config`s: one per (method, density, seed), its steps in iterations."""

from __future__ import annotations

from lottery.dynamic.config import Config
from lottery.spec.groups import DynamicSpec

REWOUND = "_rewound"


def method_of(kind: str) -> str:
    """'rigl_rewound' -> 'rigl'; 'rigl' -> 'rigl'."""
    return kind[: -len(REWOUND)] if kind.endswith(REWOUND) else kind


def config(
    group: DynamicSpec, method: str, density: float, seed: int, total_steps: int, steps_per_epoch: int
) -> Config:
    """The resolved settings of one run of `method` (`seed`: the seed its initial mask and growth use)."""
    options = {
        "update_every": group.update_every,
        "drop_fraction": group.drop_fraction,
        "drop_schedule": group.drop_schedule,
        "stop": group.stop,
        "distribution": group.distribution,
        "seed": seed,
        "start": group.start,
        "end": group.end,
        "every": group.every,
    }
    return Config.resolve(method, density, total_steps, options, steps_per_epoch=steps_per_epoch, strict=False)


def check(group: DynamicSpec, total_steps: int, steps_per_epoch: int) -> None:
    """Refuse (UserError) settings that do not fit this training run (a step after its end, GMP's end before its
    start), before anything is written."""
    for method in dict.fromkeys(method_of(kind) for kind in group.methods):
        config(group, method, group.densities[0], 0, total_steps, steps_per_epoch)
