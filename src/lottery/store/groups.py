"""Stacked groups in a store: runs trained together as one stacked model (`lottery.training.train_together`)
record their group in `summary.json` (`"arithmetic"`, the members' directories in the store). Members that
record the same group were computed together; one of them computed another way (with another thread count or
device, or at another position) is not what its group computes, bit for bit, and `lottery verify` says so.

A member that records another group, or none, was computed before this group was planned and reused by it (runs
are shared by every experiment that needs them, docs/run-format.md): the group trained around it with a
placeholder at its position, so that is not a problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lottery.store import layout
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


def _members(run: Path, arithmetic: dict[str, Any], store: Path) -> list[Path | None]:
    """The group's members, resolved; None for a member outside the store (never read)."""
    members = [(run / str(member)).resolve() for member in arithmetic.get("group", [])]
    return [None if layout.outside(member, store) else member for member in members]


def group_problems(root: Path) -> list[tuple[Path, str]]:
    """(summary.json, problem) for every member of a stacked group under `root` that records the same group but
    another position, thread count or device. A member not finished yet (no verified summary) is not a problem
    here."""
    problems: dict[tuple[Path, str], None] = {}  # ordered, without repeats
    summaries, store = layout.walk(root, "summary.json"), layout.store_for(root)
    seen_as = {summary.parent.resolve(): summary.parent for summary in summaries}  # a run by its path under root
    for summary in summaries:
        run = summary.parent.resolve()
        ours = _arithmetic(run)
        if not ours or not ours.get("stacked"):
            continue
        group = _members(run, ours, store)
        for position, member in enumerate(group):
            if member is None or member == run:
                continue
            theirs = _arithmetic(member)
            if theirs is None or not theirs.get("stacked") or _members(member, theirs, store) != group:
                continue  # computed before this group was planned, and reused by it
            if theirs.get("position") != position:
                where = theirs.get("position")
                why = f"computed at position {where} of the stacked group {seen_as[run]} records at {position}"
            else:
                differ = [
                    f"{key} {theirs.get(key)} (vs {ours.get(key)} for {seen_as[run]})"
                    for key in SHARED
                    if theirs.get(key) != ours.get(key)
                ]
                why = f"computed with {', '.join(differ)}" if differ else ""
            if why:
                problems[
                    (
                        seen_as.get(member, member) / "summary.json",
                        f"{why}: not bit-identical to its group's result; delete "
                        "this run's directory and run the same command to recompute it with its group",
                    )
                ] = None
    return list(problems)
