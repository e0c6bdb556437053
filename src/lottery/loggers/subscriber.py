"""The experiment trackers as a subscriber of the engine's events (`lottery.events`): each evaluation of a
training run to its trackers (`on_evaluate`: `track.track_evaluation`), each experiment's results to a `summary`
run (`on_results`: `summary.log_experiment`), where `--log` chose any (`Runtime.log`) and in the main process
only. `lottery.wiring` subscribes `TRACKERS` in every process."""

from __future__ import annotations

from lottery import collective
from lottery.events import Evaluation, ResultsWritten, Subscriber
from lottery.loggers.summary import log_experiment
from lottery.loggers.track import track_evaluation


class Trackers(Subscriber):
    def on_evaluate(self, event: Evaluation) -> None:
        track_evaluation(event)

    def on_results(self, event: ResultsWritten) -> None:
        if event.log and collective.is_main():  # the curve, tables and figures
            log_experiment(event.log, event.experiment, event.results, event.log_strict)


TRACKERS = Trackers()
