"""The on-disk layout is spelled in one module (lottery.store.layout): no other module of src/lottery builds a run
path or parses one back. A line that spells such a name for another purpose says so with `# ... not a path`."""

from __future__ import annotations

import re
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
