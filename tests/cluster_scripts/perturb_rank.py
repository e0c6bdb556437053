"""A plugin for the rank-mismatch test: on the rank named by $LOTTERY_TEST_PERTURB_RANK, a run that resumes from
its checkpoint gets its first weight nudged, as if that rank had read another checkpoint. The job must stop."""

from __future__ import annotations

import os

import torch

from lottery import collective
from lottery.training.loop import Session

_original = Session._resume


def _resume(self):  # noqa: ANN001, ANN202
    resumed = _original(self)
    if resumed and str(collective.rank()) == os.environ.get("LOTTERY_TEST_PERTURB_RANK"):
        with torch.no_grad():
            next(iter(self.model.parameters())).view(-1)[0] += 1e-3
    return resumed


if not getattr(Session._resume, "perturbs", False):  # once per process
    _resume.perturbs = True  # type: ignore[attr-defined]
    Session._resume = _resume
