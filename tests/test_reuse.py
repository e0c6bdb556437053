"""Every trained network is computed once and shared by every experiment that needs it (docs/run-format.md): a
network's directory is named by the hash of what determines its weights, and an experiment is a view whose run
directories link to those networks. Counted here: the networks each experiment actually trains."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_tiny, tiny_spec
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.experiments.run import run_experiment
from lottery.store import layout
from lottery.store.provenance import read_metadata
from lottery.training import Runtime, loop

LEVELS = ("imp.levels=3", 'imp.rewind=["20it"]')


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The network directories that open a training session (train, resume or train stacked), in order."""
    opened: list[Path] = []
    lock = threading.Lock()
    init = loop.Session.__init__

    def recording(self: loop.Session, run, *args, **kwargs) -> None:  # noqa: ANN001
        with lock:
            opened.append(Path(run.path).resolve())
        init(self, run, *args, **kwargs)

    monkeypatch.setattr(loop.Session, "__init__", recording)
    return opened


def views(experiment: Path, *relative: str) -> list[Path]:
    return sorted((experiment / r).resolve() for r in relative)


def test_more_levels_train_only_the_new_levels(store: Path, trained: list[Path]) -> None:
    first, _ = run_tiny(store, *LEVELS)
    assert len(trained) == 4  # the dense run and three levels
    trained.clear()
    second, results = run_tiny(store, "imp.levels=5", 'imp.rewind=["20it"]')
    assert second.path != first.path  # another experiment (view) ...
    levels = [f"replicate_0/rewind_20it/level_{n}" for n in (4, 5)]
    assert sorted(trained) == views(second.path, *levels)  # ... that trains only levels 4 and 5
    for shared in ("replicate_0/level_0", *(f"replicate_0/rewind_20it/level_{n}" for n in (1, 2, 3))):
        assert (first.path / shared).resolve() == (second.path / shared).resolve()
    assert [r["level"] for r in results["runs"] if r["kind"] == "imp"] == [1, 2, 3, 4, 5]


def test_adding_a_control_trains_only_the_controls(store: Path, trained: list[Path]) -> None:
    run_tiny(store, *LEVELS)
    trained.clear()
    experiment, results = run_tiny(store, *LEVELS, 'controls.kinds=["random_prune"]')
    controls = [f"replicate_0/rewind_20it/controls/level_{n}/random_prune_seed0" for n in (1, 2, 3)]
    assert sorted(trained) == views(experiment.path, *controls)
    assert sum(r["kind"] == "random_prune" for r in results["runs"]) == 3


def test_adding_a_replicate_trains_only_that_replicate(store: Path, trained: list[Path]) -> None:
    """Replicates stacked (LeNet on the CPU): from two replicates on, a new one trains alone; trained one by one
    (--batch-copies off), the second replicate too. A single replicate trains alone: the second one changes the
    first's arithmetic (recipes.py), which is then another network."""
    run_tiny(store, "imp.levels=1", "replicates=2")
    trained.clear()
    experiment, _ = run_tiny(store, "imp.levels=1", "replicates=3")
    assert sorted(trained) == views(experiment.path, "replicate_2/level_0", "replicate_2/rewind_0it/level_1")
    run_tiny(store, "imp.levels=1", batch_copies=False)
    trained.clear()
    experiment, _ = run_tiny(store, "imp.levels=1", "replicates=2", batch_copies=False)
    assert sorted(trained) == views(experiment.path, "replicate_1/level_0", "replicate_1/rewind_0it/level_1")


def test_analysis_settings_train_nothing(store: Path, trained: list[Path]) -> None:
    stability = (
        "imp.levels=1",
        'stability.rewind=["20it"]',
        "stability.levels=[1]",
        "stability.interpolation_points=3",
    )
    first, before = run_tiny(store, *stability)
    assert len(trained) == 2 + 2 * 2 + 1  # dense, level 1, two copies of each subject, and W_20 from the dense run
    trained.clear()
    second, after = run_tiny(store, *stability, "stability.interpolation_points=5", "stability.threshold=0.0")
    assert trained == []
    assert second.path != first.path
    point = next(p for p in after["stability"]["points"] if p["kind"] == "imp")
    assert point["data_order"]["stable"] is False  # no barrier is below 0
    curve = json.loads((second.path / point["data_order"]["pairs"][0]["curve"]).read_text())
    assert len(curve["test_error"]) == 5  # the analysis itself was redone with the new settings
    assert before["runs"] == after["runs"]


def test_a_rewind_point_added_later_is_the_one_the_dense_run_would_have_saved(
    store: Path, tmp_path: Path, trained: list[Path]
) -> None:
    """The replicates' dense runs are one stacked group (LeNet on the CPU): each prefix trains at its position."""
    run_tiny(store, "imp.levels=1", "replicates=2")
    trained.clear()
    overrides = ("imp.levels=1", "replicates=2", 'imp.rewind=["0it", "20it"]')
    experiment, _ = run_tiny(store, *overrides)
    assert len(trained) == 4  # two prefixes and two levels: nothing else
    prefixes = sorted((store / layout.NETWORKS / "prefix").iterdir())  # networks no experiment links
    assert len(prefixes) == 2 and all(p.resolve() in trained for p in prefixes)
    arithmetic = [json.loads((p / "summary.json").read_text())["arithmetic"] for p in prefixes]
    assert all(a["stacked"] for a in arithmetic) and sorted(a["position"] for a in arithmetic) == [0, 1]
    fresh, _ = run_tiny(tmp_path / "fresh", *overrides)
    view = json.loads((experiment.path / layout.RUNS_FILE).read_text())
    assert view == json.loads((fresh.path / layout.RUNS_FILE).read_text())  # whichever experiment made the prefix
    for r in (0, 1):
        rdir, other = layout.replicate(experiment.path, r), layout.replicate(fresh.path, r)
        assert layout.level(rdir, 20, 1).resolve() in trained
        ours, theirs = (
            load_file(layout.dense(rdir) / layout.snapshot(20)),
            load_file(layout.dense(other) / layout.snapshot(20)),
        )
        assert all(torch.equal(ours[n], theirs[n]) for n in theirs)  # W_20 bit for bit
        metadata = read_metadata(layout.dense(rdir) / layout.snapshot(20))
        network = layout.network_name(layout.dense(rdir))  # the dense run's own provenance: it names the network
        assert metadata["network"] == network and "run" not in metadata and metadata["file"] == "snapshot"
        ours, theirs = (
            load_file(layout.level(rdir, 20, 1) / "final.safetensors"),
            load_file(layout.level(other, 20, 1) / "final.safetensors"),
        )
        assert all(torch.equal(ours[n], theirs[n]) for n in theirs)


def test_two_experiments_at_once_train_their_shared_dense_run_once(store: Path, trained: list[Path]) -> None:
    errors: list[BaseException] = []

    def run(levels: int) -> None:
        try:
            run_experiment(tiny_spec(f"imp.levels={levels}"), None, store, Runtime(progress=False))
        except BaseException as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=run, args=(levels,)) for levels in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    dense = [path for path in trained if path.parent.name == "dense"]
    assert len(dense) == 1, trained
    assert len(trained) == 3  # the dense run, level 1 (shared too), level 2


def test_a_store_from_before_the_format_is_refused_in_one_line_and_still_verified(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment, _ = run_tiny(store, "imp.levels=1")
    old = tmp_path / "old" / experiment.path.name
    shutil.copytree(experiment.path, old, symlinks=False)  # real directories inside the experiment, as format 1
    (old / layout.RUNS_FILE).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest[layout.RUNS_FILE]
    (old / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    for command in (["report", str(old)], ["show", str(old)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "predates store format 2" in err, err
    with pytest.raises(UserError, match="predates store format 2"):
        run_tiny(old.parent, "imp.levels=1")
    assert main(["verify", str(old)]) == 0
    assert capsys.readouterr().out.strip().endswith(" 0 problem(s)")
