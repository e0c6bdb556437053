"""A training run's provenance: the tags its experiment gave its `Job` (experiment, run, kind, level, rewind
iteration, replicate, control seed, copy), plus what the job itself fixes (seeds, iterations, density). It tags the
run's metrics in experiment trackers (`lottery.loggers`). The metadata of every safetensors file the run writes
(`lottery.store.provenance`) names the network instead of the experiment (`file_metadata`): a network shared by
experiments has the same bytes whichever of them computed it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lottery.store import layout

if TYPE_CHECKING:
    from lottery.training.job import Job


def run_metadata(job: Job) -> dict[str, str]:
    """String -> string: the job's tags, its seeds, start and end iterations and density."""
    t = job.training
    density = job.mask.density if job.mask is not None else 1.0
    return {
        **{key: str(value) for key, value in job.tags.items() if value is not None},
        "init_seed": str(t.init_seed),
        "data_order_seed": str(t.data_order_seed),
        "augmentation_seed": str(t.augmentation_seed),
        "start_iteration": str(job.start),
        "end_iteration": str(job.schedule.end),
        "density": repr(float(density)),
    }


EXPERIMENT_TAGS = ("experiment", "spec_hash", "run", "replicate")  # where a network sits in one experiment's view


def file_metadata(job: Job, run: Path) -> dict[str, str]:
    """The metadata of a run's safetensors files: `run_metadata` without what names one experiment's view of the
    network, with the network itself ("network": `<kind>/<hash>`, where the run lives in a store's networks/)."""
    metadata = {key: value for key, value in run_metadata(job).items() if key not in EXPERIMENT_TAGS}
    network = layout.network_name(run)
    if network is not None:
        metadata["network"] = network
    return metadata
