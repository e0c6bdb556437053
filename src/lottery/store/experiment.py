"""The store: `<root>/<spec hash>/` per experiment, holding its resolved spec."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lottery.errors import UserError
from lottery.extension_points import reading_stored
from lottery.spec import ExperimentSpec, build, spec_hash, to_dict, to_toml
from lottery.store import layout
from lottery.store.audit import check_view
from lottery.store.networks import refuse_nested
from lottery.store.run_dir import RunDir

DEFAULT_ROOT = "runs"


def store_root(out: str | None = None) -> Path:
    """--out, else $LOTTERY_RUNS, else ./runs."""
    if out is not None and not out.strip():
        raise UserError("--out is empty: give the store directory (default: $LOTTERY_RUNS or ./runs)")
    return Path(out or os.environ.get("LOTTERY_RUNS") or DEFAULT_ROOT)


def experiment_dir(root: Path, spec: ExperimentSpec) -> RunDir:
    """The experiment's directory in the store `root` (refused, in one line, inside another store's tree)."""
    refuse_nested(Path(root))
    return RunDir(Path(root) / spec_hash(spec))


def check_collision(run: RunDir, spec: ExperimentSpec) -> None:
    """A directory whose stored spec differs from `spec` (a hash collision or an edited spec.json)."""
    stored = run.read_json("spec.json")
    if stored is None:
        return
    try:
        same = isinstance(stored, dict) and build({k: v for k, v in stored.items() if k != "preset"}) == spec
    except UserError:
        same = False
    if not same:
        raise UserError(
            f"{run.path} holds a different spec than this one (hash collision or edited spec.json); "
            "move that directory away or use another store (--out)"
        )


def check_format(run: RunDir) -> None:
    """Refuse an experiment made before store format 2 (a spec.json without runs.json, whose runs are directories
    inside it, laid out otherwise), in one line. A format-2 experiment whose runs.json is gone (its run directories
    are links) is not refused: `lottery run` writes its runs.json again from the spec's links (views.bind)."""
    path = run.path
    if (path / "spec.json").exists() and not (path / layout.RUNS_FILE).exists() and layout.predates_links(path):
        raise UserError(
            f"{run.path} predates store format 2 (runs named by what determines them, "
            "docs/run-format.md): `lottery verify` still checks it; re-run its spec.toml into a new store (--out) to "
            "use it with this version"
        )


def write_spec(run: RunDir, spec: ExperimentSpec, preset: str | None) -> None:
    """spec.json (canonical, all settings, plus the preset it came from) and spec.toml; either one that is
    missing or fails verification is written again (keeping the preset first recorded). A new experiment gets its
    (empty) runs.json first: the mark of store format 2."""
    check_format(run)
    stored = run.read("spec.json", quiet=True)  # (check_collision has already reported a bad one)
    if stored is None:
        if not run.exists(layout.RUNS_FILE):
            run.write_json(layout.RUNS_FILE, {"format": layout.FORMAT, "runs": {}})
        data = {"preset": preset, **to_dict(spec)} if preset else to_dict(spec)
        run.write("spec.json", (json.dumps(data, indent=2) + "\n").encode())
    else:
        preset = json.loads(stored).get("preset")
    if run.read("spec.toml") is None:
        header = f'# preset = "{preset}" (already applied below)\n' if preset else ""
        run.write("spec.toml", (header + to_toml(spec)).encode())


def load_spec(path: Path) -> tuple[ExperimentSpec, str | None]:
    run = RunDir(path)
    check_format(run)
    check_view(run.path)  # a run link re-pointed to another network is never read
    data = run.read_json("spec.json")
    if data is None:
        raise UserError(f"{path} is not an experiment directory (no valid spec.json)")
    preset = data.pop("preset", None)
    with reading_stored():  # a plugin's mask sources and control kinds need not be imported to read the spec
        return build(data), preset
