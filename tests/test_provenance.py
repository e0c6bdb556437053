"""Provenance: every safetensors file the engine writes says what it is (safetensors metadata), deterministically;
`lottery show FILE` prints it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_tiny
from lottery.cli.main import main
from lottery.store import RunDir, layout
from lottery.store.atomic import tensors_from_bytes, tensors_to_bytes
from lottery.store.layout import walk
from lottery.store.provenance import describe_file, read_metadata

REQUIRED = (
    "format",
    "network",
    "kind",
    "level",
    "density",
    "init_seed",
    "data_order_seed",
    "augmentation_seed",
    "start_iteration",
    "end_iteration",
    "lottery_version",
    "torch_version",
    "file",
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    run, _ = run_tiny(
        root,
        "imp.levels=2",
        "imp.rewind=['20it']",
        "controls.kinds=['random_prune']",
        "stability.rewind=['20it']",
        "stability.levels=[1]",
        "stability.controls=['random_prune']",
        "stability.interpolation_points=3",
        "stability.train_subset=100",
        "stability.batchnorm_batches=1",
    )
    return run.path


def test_every_safetensors_file_carries_its_provenance(experiment: Path) -> None:
    files = sorted(walk(experiment, "*.safetensors"))
    roles = {describe_file(str(f))["file"] for f in files}
    assert roles == {"start", "final", "mask", "snapshot"}
    kinds = set()
    for path in files:
        metadata = read_metadata(path)
        assert set(REQUIRED) <= set(metadata), path
        run_dir = path.parent.parent if path.parent.name == "snapshots" else path.parent
        assert metadata["network"] == layout.network_name(run_dir)  # the network, never one experiment's view of it
        assert not {"run", "experiment", "spec_hash", "replicate"} & set(metadata)
        assert metadata["torch_version"] == torch.__version__
        assert metadata["file"] == describe_file(path.relative_to(run_dir).as_posix())["file"]
        sparsity = RunDir(run_dir).read_json("sparsity.json")
        assert float(metadata["density"]) == pytest.approx(sparsity["density"])
        mask = RunDir(run_dir).read_tensors("mask.safetensors")
        assert float(metadata["density"]) == pytest.approx(
            sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
        )
        if metadata["kind"] != "dense" or "copy" in metadata:
            assert metadata["rewind_iteration"] == "20"
        if metadata["file"] == "snapshot":
            assert path.name == f"iter_{metadata['iteration']}.safetensors"
        kinds.add((metadata["kind"], metadata["level"], metadata.get("copy"), metadata.get("seed")))
    assert {
        ("dense", "0", None, None),
        ("imp", "2", None, None),
        ("random_prune", "1", None, "0"),
        ("imp", "1", "1", None),
        ("random_prune", "1", "1", "0"),
        ("dense", "0", "1", None),
    } <= kinds


def test_copy_seeds_recorded(experiment: Path) -> None:
    copy = experiment / "replicate_0/rewind_20it/stability/level_1/imp_copy1/start.safetensors"
    metadata = read_metadata(copy)
    analysis = json.loads((experiment / "replicate_0/rewind_20it/stability/level_1/analysis.json").read_text())
    seeds = next(p for p in analysis["points"] if p["kind"] == "imp")["copies"][1]
    assert metadata["data_order_seed"] == str(seeds["data_order_seed"])
    assert metadata["copy"] == "1" and metadata["level"] == "1" and metadata["kind"] == "imp"


def test_metadata_bytes_are_deterministic() -> None:
    """The same tensors and metadata give the same bytes, whatever the insertion order and the process (safetensors
    alone writes metadata in a per-process random order), and the tensors read back unchanged."""
    tensors = {"b.weight": torch.arange(12.0).reshape(3, 4), "a.mask": torch.tensor([True, False])}
    metadata = {f"key{i}": str(i) for i in range(20)}
    data = tensors_to_bytes(tensors, metadata)
    assert data == tensors_to_bytes(tensors, dict(reversed(metadata.items())))
    assert all(torch.equal(tensors[k], v) for k, v in tensors_from_bytes(data).items())
    code = (
        "import sys, torch; from lottery.store.atomic import tensors_to_bytes; "
        "t = {'b.weight': torch.arange(12.0).reshape(3, 4), 'a.mask': torch.tensor([True, False])}; "
        "sys.stdout.buffer.write(tensors_to_bytes(t, {f'key{i}': str(i) for i in range(20)}))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert child.stdout == data


def test_show_prints_a_files_provenance(experiment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = experiment / "replicate_0/rewind_20it/level_2/mask.safetensors"
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    for line in ("kind", "imp"), ("level", "2"), ("file", "mask"), ("rewind_iteration", "20"):
        assert any(row.split() == list(line) for row in out.splitlines()), line
    assert "hidden.0.weight" in out
    not_tensors = experiment / "results.json"
    assert main(["show", str(not_tensors)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_report_links_stability_pairs_to_their_copies_and_curves(experiment: Path) -> None:
    """The report's stability table (on this module's experiment, which has a stability analysis): every number
    links to the copy or the interpolation curve it came from."""
    from lottery.measures import present
    from lottery.reports.layers_figures import stability_pairs_section
    from test_report_browser import Links

    results = json.loads((experiment / "results.json").read_text())
    page = Links()
    page.feed(stability_pairs_section(results, experiment))
    pairs = results["stability"]["points"]
    count = sum(len((p["pruning"] or {"pairs": []})["pairs"]) + len(p["data_order"]["pairs"]) for p in pairs)
    columns = 7 + len(present(pairs))  # the pair's keys, then every stability measure (lottery.measures)
    assert count and len(page.cells["stability-pairs"]) == columns * count
    assert any(h.endswith("_interpolation_0_1.json") for h in page.hrefs)
    for href in page.hrefs:
        assert os.path.exists(os.path.normpath(experiment / "report" / href)), href
