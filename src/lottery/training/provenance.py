"""A training run's provenance: the tags its experiment gave its `Job` (experiment, run, kind, level, rewind
iteration, replicate, control seed, copy), plus what the job itself fixes (seeds, iterations, density). It goes
into the metadata of every safetensors file the run writes (`lottery.store.provenance`) and tags the run's
metrics in experiment trackers (`lottery.loggers`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lottery.training.loop import Job


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
