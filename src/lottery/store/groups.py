"""Stacked groups in a store: runs trained together as one stacked model (`lottery.training.train_together`)
record their group in `summary.json` (`"arithmetic"`); a member computed another way (alone, with another thread
count or device, at another position) is not what its group computes, bit for bit, and `lottery verify` says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lottery.store.run_dir import RunDir

SHARED = ("threads", "device")  # what every member of a group must have been computed with


def _arithmetic(run: Path) -> dict[str, Any] | None:
    data = RunDir(run).read("summary.json", quiet=True)  # an unverified one is reported as such by `verify`
    try:
        summary = json.loads(data) if data is not None else None
    except ValueError:
        summary = None
    arithmetic = summary.get("arithmetic") if isinstance(summary, dict) else None
    return arithmetic if isinstance(arithmetic, dict) else None


def _members(run: Path, arithmetic: dict[str, Any]) -> list[Path]:
    return [(run / member).resolve() for member in arithmetic.get("group", [])]


def group_problems(root: Path) -> list[tuple[Path, str]]:
    """(summary.json, problem) for every member of a stacked group under `root` whose recorded arithmetic
    differs from the group's: not stacked, another group or position, another thread count or device. A
    member not finished yet (no verified summary) is not a problem here."""
    problems: dict[tuple[Path, str], None] = {}  # ordered, without repeats
    for summary in sorted(root.rglob("summary.json")):
        run = summary.parent.resolve()
        ours = _arithmetic(run)
        if not ours or not ours.get("stacked"):
            continue
        group = _members(run, ours)
        for position, member in enumerate(group):
            if member == run:
                continue
            theirs = _arithmetic(member)
            if theirs is None:
                continue
            if not theirs.get("stacked"):
                why = f"computed alone, not in its stacked group with {run}"
            elif _members(member, theirs) != group or theirs.get("position") != position:
                why = f"computed in another stacked group than its group member {run} records"
            else:
                differ = [f"{key} {theirs.get(key)} (vs {ours.get(key)} for {run})" for key in SHARED
                          if theirs.get(key) != ours.get(key)]  # fmt: skip
                why = f"computed with {', '.join(differ)}" if differ else ""
            if why:
                problems[
                    (
                        member / "summary.json",
                        f"{why}: not bit-identical to its group's result; delete "
                        "this run's directory and run the same command to recompute it with its group",
                    )
                ] = None
    return list(problems)
