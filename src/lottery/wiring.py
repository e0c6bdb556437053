"""The one place that connects layers that must not import each other (docs/architecture.md): the experiment
trackers subscribe to the events the engine and the training loop emit (`lottery.events`), and the engine provides
the results that readers regenerate (`lottery.results.source`). `import lottery` runs it, so it holds in every
process that imports any part of lottery (Ray, Slurm and torchrun workers included)."""

from lottery import events
from lottery.experiments.run import results_of, write_results
from lottery.loggers.subscriber import TRACKERS
from lottery.results import source

events.subscribe(TRACKERS)
source.provide(compute=results_of, write=write_results)
