"""Which run directory of an experiment `lottery export` means: (kind, level, rewind point, replicate, seed)."""

from __future__ import annotations

from pathlib import Path

from lottery.errors import UserError
from lottery.extension_points import control_kinds
from lottery.store import RunDir, layout


def kinds() -> tuple[str, ...]:
    """What `--kind` may name: IMP's levels, the dense network and every registered control kind."""
    return ("imp", "dense", *control_kinds)


def find_run(
    experiment: Path, level: int, kind: str = "imp", rewind: int | None = None, replicate: int = 0, seed: int = 0
) -> RunDir:
    """The finished run directory of (kind, level, rewind, replicate, seed); UserError saying what exists when
    there is no such run. Level 0 is the dense network (kind 'imp' or 'dense'); `rewind` may be left out when
    the experiment has one rewind point. A control kind is a registered one, or one whose run the experiment holds
    (a plugin's, read without its --import)."""
    rdir = layout.replicate(Path(experiment), replicate)
    if kind not in kinds() and not any(
        layout.control(rdir, k, max(level, 1), kind, seed).is_dir() for k in layout.rewind_points(rdir)
    ):
        raise UserError(f"unknown kind '{kind}' (allowed: {', '.join(kinds())})")
    if not rdir.is_dir():
        raise UserError(f"{experiment} has no replicate {replicate} (is it an experiment directory?)")
    if level < 0:
        raise UserError(f"--level must be >= 0, got {level}")
    if level == 0:
        if kind not in ("imp", "dense"):
            raise UserError(f"level 0 is the dense network; --kind {kind} needs a level >= 1")
        run = RunDir(layout.dense(rdir))
    else:
        if kind == "dense":
            raise UserError("--kind dense is level 0 (the dense network); give --level 0")
        points = layout.rewind_points(rdir)
        if rewind is None:
            if len(points) != 1:
                raise UserError(f"give --rewind K: this experiment has rewind points {points or 'none'}")
            rewind = points[0]
        elif rewind not in points:
            raise UserError(f"no rewind point {rewind} in {experiment} (it has: {points or 'none'})")
        run = RunDir(
            layout.level(rdir, rewind, level) if kind == "imp" else layout.control(rdir, rewind, level, kind, seed)
        )
    if run.read_json("summary.json") is None:
        raise UserError(f"{run.path} holds no finished run (run the experiment first; see 'lottery show')")
    return run
