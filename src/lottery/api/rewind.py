"""`lottery.rewind_search`: the earliest stable rewind point, from Python (the CLI's `lottery rewind-search`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lottery.spec import ExperimentSpec


def rewind_search(
    spec: ExperimentSpec | str | Path,
    level: int | None = None,
    max_trainings: int | None = None,
    *,
    out: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str = "cpu",
    grid: list[str] | None = None,
    refine: int = 2,
    tolerance: float = 0.2,
    max_copies: int | None = None,
) -> dict[str, Any]:
    """Search the earliest rewind iteration k at which the dense network and IMP level `level` (default:
    imp.levels) are stable, within `max_trainings` trained networks. `spec`: a spec (ExperimentSpec) or a TOML
    file (with `preset` and `overrides` as on the CLI). `max_copies`: copies per replicate an undecided probe
    may grow to. Returns the content of `rewind_search.json` (keys `dense` and `imp`, each with `k`, `bracket`,
    `interval`, `monotone`, `matching`, `probes`; `cost`), plus `path`: the experiment directory (under `out`,
    default $LOTTERY_RUNS or ./runs)."""
    import torch

    from lottery.experiments.rewind_search import DEFAULT_REFINE, run_search
    from lottery.spec import resolve
    from lottery.store import store_root
    from lottery.training import Runtime

    if isinstance(spec, ExperimentSpec):
        if overrides:
            spec, preset = resolve(preset=preset, overrides=overrides, data=_as_data(spec))
    else:
        spec, preset = resolve(Path(spec), preset, overrides)
    runtime = Runtime(device=torch.device(device), progress=False)
    experiment, found = run_search(
        spec,
        preset,
        store_root(None if out is None else str(out)),
        runtime,
        level,
        max_trainings,
        grid,
        DEFAULT_REFINE if refine is None else refine,
        tolerance,
        max_copies=max_copies,
    )
    return {**found, "path": experiment.path}


def _as_data(spec: ExperimentSpec) -> dict[str, Any]:
    from lottery.spec import to_dict

    return to_dict(spec, omit_defaults=True)
