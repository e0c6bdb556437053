"""Sweeps: a spec file with a `[sweep]` table of lists expands into the grid of experiments it spans.

    preset = "lenet_300_100"
    [imp]
    levels = 5
    [sweep]
    replicates = [1, 3]
    [sweep.training]
    lr = [1.2e-3, 6e-4]

expands into 4 experiments (every combination). Levels, rewind points, copies, controls and seeds are
already lists inside one experiment; `[sweep]` spans any other setting. A spec file without a `[sweep]` table is a
sweep of one experiment (so one experiment's tasks can be spread over a cluster too).

The executors (`executors.py`, `slurm.py`) run the tasks; the sweep's record (`<store>/.sweeps/<id>/`,
`sweep_status.py`) says what each task is doing, for `lottery sweep SPEC --status`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from lottery.errors import UserError
from lottery.spec import ExperimentSpec, resolve, spec_hash
from lottery.spec.parse import read_toml

MAX_EXPERIMENTS = 10_000


def grid(sweep: Any) -> list[tuple[str, list[Any]]]:
    """[('training.lr', [0.1, 0.01]), ('replicates', [1, 3])] from the `[sweep]` table."""
    if not isinstance(sweep, dict) or not sweep:
        raise UserError("[sweep] must be a table of lists, e.g. [sweep.training] lr = [0.1, 0.01]")
    axes = []
    for key, value in sweep.items():
        entries = value.items() if isinstance(value, dict) else [(None, value)]
        for field, values in entries:
            name = key if field is None else f"{key}.{field}"
            if not isinstance(values, list) or not values:
                raise UserError(f"sweep.{name} must be a non-empty list of values, got {values!r}")
            axes.append((name, values))
    return axes


def expand(
    spec_file: Path, preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> list[tuple[ExperimentSpec, str | None, dict[str, Any]]]:
    """(spec, preset, the swept settings) for every point of the grid, validated, duplicates removed."""
    data = read_toml(spec_file)
    axes = grid(data.pop("sweep")) if "sweep" in data else []
    count = 1
    for _, values in axes:
        count *= len(values)
    if count > MAX_EXPERIMENTS:
        raise UserError(f"the sweep spans {count} experiments (at most {MAX_EXPERIMENTS})")
    out, seen = [], set()
    for combination in itertools.product(*(values for _, values in axes)):
        point = dict(zip((name for name, _ in axes), combination))
        merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        for name, value in point.items():
            group, _, field = name.partition(".")
            if field:
                merged[group] = {**merged.get(group, {}), field: value}
            else:
                merged[group] = value
        spec, used_preset = resolve(preset=preset, overrides=overrides, data=merged)
        if spec_hash(spec) not in seen:
            seen.add(spec_hash(spec))
            out.append((spec, used_preset, point))
    return out


def run_sweep(
    spec_file: Path,
    preset: str | None,
    overrides: list[str],
    root: Path,
    runtime: Any,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    retries: int = 1,
    wait: bool = True,
    nproc: int = 1,
    slurm: Any = None,
) -> tuple[list[tuple[Any, dict[str, Any]]], Any]:
    """Validate every experiment of the grid, record their specs, run all their tasks with the executor,
    and write each experiment's results. Returns ([(experiment dir, swept settings)], outcome).

    The sweep holds every one of its experiments' locks from the first write to the last, as `lottery run`
    holds its experiment's (taken in one order by every process, so two sweeps never deadlock); `wait` False:
    refuse, instead of waiting, when another process holds one. `nproc`: processes training each task (one
    data-parallel job). `slurm`: the `slurm.SlurmOptions` of the slurm executor."""
    from lottery.experiments import driver, executors, sweep_status
    from lottery.experiments.run import write_results

    points = expand(spec_file, preset, overrides)
    runtime = driver.without_stacking(runtime, nproc)
    experiments = driver.prepare([(spec, used) for spec, used, _ in points], root, runtime, executors.context_for)
    record = str(sweep_status.sweep_dir(root, [spec_hash(spec) for spec, _, _ in points]).resolve())
    how = driver.Execution(executor, retries, address, workers, nproc, slurm, record)
    _, outcome = driver.drive(
        experiments, runtime, lambda found: driver.execute(found, root, runtime, how), write_results, wait
    )
    return [(experiment.directory, point) for experiment, (_, _, point) in zip(experiments, points)], outcome


def status(
    spec_file: Path, preset: str | None, overrides: list[str], root: Path
) -> list[Any]:  # list[sweep_status.TaskStatus]
    """Every task of the sweep of `spec_file` in the store `root` with its state (pending, running, done, failed)."""
    from lottery.experiments import sweep_status

    hashes = [spec_hash(spec) for spec, _, _ in expand(spec_file, preset, overrides)]
    directory = sweep_status.sweep_dir(root, hashes)
    if not (directory / "sweep.json").exists():
        raise UserError(f"no sweep of {spec_file} has been started with the store {root}")
    return sweep_status.task_states(directory)
