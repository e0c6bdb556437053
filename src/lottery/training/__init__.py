"""Training: the loop, the schedule, optimizers and evaluation."""

from lottery.training.copies import should_batch, train_together
from lottery.training.evaluate import evaluate
from lottery.training.job import Job, Schedule
from lottery.training.loop import Runtime, is_finished, train
from lottery.training.schedule import lr_at

__all__ = [
    "Job",
    "Runtime",
    "Schedule",
    "evaluate",
    "is_finished",
    "lr_at",
    "should_batch",
    "train",
    "train_together",
]
