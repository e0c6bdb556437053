"""The on-disk layout is spelled in one module (lottery.store.layout): no other module of src/lottery builds a run
path or parses one back. A line that spells such a name for another purpose says so with `# ... not a path`."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from lottery.store import RunDir, layout

SOURCE = Path(__file__).resolve().parents[1] / "src" / "lottery"
SPELLINGS = {
    "replicate directory": r"replicate_(\{|\d|\*|\"|')",
    "level directory": r"level_(\{|\d|\*)",
    "rewind directory": r"rewind_(\{|\d|\*|\"|')",
    "prefix run": r"prefix_(\{|\d|\*)",
    "control run": r"_seed\{",
    "stability copy": r"_copy\{",
    "mask run": r"density_\{",
    "snapshot file": r"snapshots/|iter_\{",
    "parsing a name back": r"\.name\[[^]]*:\s*-\s*\d+\s*\]",
    "a layout directory": r"/\s*\"(controls|stability|masks)\"|\"(controls|stability|masks)\"\s*/",
    "the networks directory": r"\"networks\"|networks/\{",
}


def offending_lines(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "store" / "layout.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "not a path" in line:
                continue
            for what, pattern in SPELLINGS.items():
                if re.search(pattern, line):
                    found.append(f"{path.relative_to(root)}:{number}: {what}: {line.strip()}")
    return found


def test_only_the_layout_module_spells_run_paths():
    assert offending_lines(SOURCE) == []


def test_the_check_finds_a_path_spelled_elsewhere(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "layout.py").write_text('x = f"replicate_{r}"\n')
    (tmp_path / "reports.py").write_text(
        'a = root / f"rewind_{k}it" / "level_0"\nb = int(p.name[7:-2])\nc = run / "controls" / name\nok = 1\n'
    )
    found = offending_lines(tmp_path)
    assert [line.split(":")[1] for line in found] == ["1", "1", "2", "3"]


def test_the_layout_is_the_one_stores_already_use(tmp_path):
    experiment = RunDir(tmp_path)
    rdir = layout.replicate(experiment, 2)
    assert rdir.path == tmp_path / "replicate_2"
    assert layout.sibling(rdir, 0).path == tmp_path / "replicate_0"
    assert layout.sibling(rdir.path, 1) == tmp_path / "replicate_1"
    assert layout.dense(rdir).path == tmp_path / "replicate_2" / "level_0"
    assert layout.level(rdir, 100, 3).path == tmp_path / "replicate_2" / "rewind_100it" / "level_3"
    control = layout.control(rdir, 100, 3, "random_prune", 1)
    assert control.path == tmp_path / "replicate_2" / "rewind_100it" / "controls" / "level_3" / "random_prune_seed1"
    stability = layout.stability(rdir, 0, 2)
    assert stability.path == tmp_path / "replicate_2" / "rewind_0it" / "stability" / "level_2"
    assert layout.copy(stability, "imp", 1).path == stability.path / "imp_copy1"
    mask_run = layout.mask_run(rdir, "snip", 0.1, 0)
    assert mask_run.path == tmp_path / "replicate_2" / "masks" / "snip" / "density_0.1_seed0"
    assert layout.snapshot(5) == "snapshots/iter_5.safetensors"
    assert layout.snapshot(5, optimizer=True) == "snapshots/iter_5.optimizer.pt"
    assert layout.SNAPSHOT_FILE.search(layout.snapshot(12)).group(1) == "12"
    for k in (30, 0, 200):
        layout.level(rdir.path, k, 1).mkdir(parents=True)
    (rdir.path / "rewind_xit").mkdir()
    assert layout.rewind_points(rdir.path) == [0, 30, 200]


def test_a_network_is_bound_into_an_experiment_by_a_relative_link(tmp_path: Path) -> None:
    store = tmp_path / "store"
    view = layout.dense(layout.replicate(store / "0123456789abcdef", 0))
    target = layout.network(store, "dense", "abc")
    assert target == store / "networks" / "dense" / "abc"
    assert layout.store_of_run(view) == store
    assert layout.bind(view, target) and view.is_symlink() and target.is_dir()
    assert not Path(os.readlink(view)).is_absolute() and view.resolve() == target.resolve()
    assert layout.bind(view, target)  # again: nothing changes
    other = layout.network(store, "dense", "def")
    assert layout.bind(view, other) and view.resolve() == other.resolve()  # re-pointed atomically
    (target / "summary.json").write_text("{}")
    moved = tmp_path / "moved"
    shutil.copytree(store, moved, symlinks=True)  # a store moves with its links
    assert (moved / view.relative_to(store)).resolve() == (moved / other.relative_to(store)).resolve()
    real = layout.level(layout.replicate(store / "0123456789abcdef", 0), 0, 1)
    real.mkdir(parents=True)
    assert not layout.bind(real, layout.network(store, "imp", "x"))  # a directory of an older store is kept
    assert real.is_dir() and not real.is_symlink()


def test_walk_follows_links_and_lists_each_directory_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    target = layout.network(store, "dense", "abc")
    for experiment in ("aaaa", "bbbb"):
        layout.bind(layout.dense(layout.replicate(store / experiment, 0)), target)
    (target / "summary.json").write_text("{}")
    assert layout.links(store / "aaaa") == {"replicate_0/level_0": "networks/dense/abc"}
    found = layout.walk(store, "summary.json")
    assert found == [store / "aaaa" / "replicate_0" / "level_0" / "summary.json"]
    assert layout.walk(store / "bbbb", "*.json") == [store / "bbbb" / "replicate_0" / "level_0" / "summary.json"]
