"""Run whatever an experiment spec describes: the dense run, IMP levels for each rewind point, the
controls, over every replicate; then write the results. Everything is cached in the store: a finished
unit is never trained again, an interrupted one resumes from its checkpoint."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lottery.experiments import (
    driver,
    dynamic,  # dynamic sparsity (issue 28)
    dynamic_stability,
    masks,
    predictors,
    stability,
    views,
)
from lottery.measures import pair_fields
from lottery.results import conclusions
from lottery.results import rows as results
from lottery.results.pairs import pair_rows
from lottery.spec import ExperimentSpec, spec_hash, to_dict
from lottery.store import RunDir, layout
from lottery.training import Runtime


def run_experiment(
    spec: ExperimentSpec,
    preset: str | None,
    root: Path,
    runtime: Runtime,
    dense_only: bool = False,
    wait: bool = True,
) -> tuple[RunDir, dict[str, Any]]:
    """Run (or finish, or just read back) the experiment in this process; returns its directory and results. The
    driver's sequence (experiments/driver.py), with the local executor stopping at the first error."""
    experiments = driver.prepare([(spec, preset)], root, runtime)
    how = driver.Execution(stop_on_error=True)
    written, _ = driver.drive(
        experiments, runtime, lambda found: driver.execute(found, root, runtime, how, dense_only), write_results, wait
    )
    return experiments[0].directory, written[0]


def collect(experiment: RunDir, spec: ExperimentSpec) -> list[dict[str, Any]]:
    """One row per trained unit present in the store, in the layout the spec implies."""
    rows = []
    for r in range(spec.replicates):
        rdir = layout.replicate(experiment, r)
        rows.append(
            results.run_row(
                experiment, layout.dense(rdir), kind="dense", replicate=r, rewind_iteration=None, level=0, seed=None
            )
        )
        for k in layout.rewind_points(rdir.path):
            for level in range(1, spec.imp.levels + 1):
                run = layout.level(rdir, k, level)
                rows.append(
                    results.run_row(
                        experiment, run, kind="imp", replicate=r, rewind_iteration=k, level=level, seed=None
                    )
                )
                for kind in spec.controls.kinds:
                    for seed in spec.controls.seeds:
                        run = layout.control(rdir, k, level, kind, seed)
                        rows.append(
                            results.run_row(
                                experiment, run, kind=kind, replicate=r, rewind_iteration=k, level=level, seed=seed
                            )
                        )
        rows += masks.rows(experiment, spec, rdir, r)
        rows += dynamic.rows(experiment, spec, rdir, r)  # dynamic sparsity (issue 28)
    return [row for row in rows if row is not None]


def results_of(experiment: RunDir, spec: ExperimentSpec) -> dict[str, Any]:
    """results.json's content, from what the store holds (nothing is written)."""
    rows = collect(experiment, spec)
    data: dict[str, Any] = {"experiment": spec_hash(spec), "runs": rows, "summary": results.aggregate(rows)}
    if spec.stability.rewind:
        points = stability.collect(experiment, spec.replicates)
        data["stability"] = {"settings": to_dict(spec)["stability"], "points": points}
        data["stability"]["decisions"] = conclusions.stability_decisions(points, spec.stability.threshold)
        if spec.stability.dynamic:  # stability.dynamic (issue 28): barrier and mask overlap over replicates
            data["stability"]["dynamic"] = dynamic_stability.summary(points)
        data["predictors"] = predictors.predictors(points, rows)  # which measure predicts the accuracy gap
    mask_results = masks.collect(experiment, spec)
    if mask_results:
        data["masks"] = mask_results
    if spec.dynamic.methods:  # dynamic sparsity (issue 28)
        data["dynamic"] = dynamic.collect(experiment, spec)
    return data


def write_results(experiment: RunDir, spec: ExperimentSpec) -> dict[str, Any]:
    """Write results.json, results.csv (and stability.csv) from the store; the caller holds the experiment's lock
    (`lottery.store.locked`)."""
    views.record(experiment)  # runs.json: with any prefix run a task linked on demand
    data = results_of(experiment, spec)
    if "stability" in data:
        buffer = io.StringIO()
        fields = pair_fields(data["stability"]["points"])
        writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(pair_rows(data["stability"]["points"]))
        experiment.write("stability.csv", buffer.getvalue().encode())
    experiment.write_json("results.json", data)
    experiment.write("results.csv", results.to_csv(data["runs"]).encode())
    return data
