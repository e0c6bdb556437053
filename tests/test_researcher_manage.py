"""Issue 27, item 5: store management. `lottery ls` lists experiments, `lottery rm` removes a view only,
`lottery gc` removes unlinked networks (--dry-run first), never one whose lock is held, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_tiny
from lottery.cli.main import main
from lottery.store import layout
from lottery.store.lock import exclusive


def _networks(store: Path) -> set[str]:
    return {p.relative_to(store).as_posix() for p in (store / "networks").glob("*/*")}


def test_ls_rm_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs"
    two, _ = run_tiny(store, "imp.levels=2")
    one, _ = run_tiny(store, "imp.levels=1", "training.lr=0.05")  # its own dense network (lr differs)
    capsys.readouterr()
    assert main(["ls", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    by_hash = {line.split()[0]: line for line in lines}
    assert "done" in by_hash[two.path.name] and "imp.levels=2" in by_hash[two.path.name]
    assert "training.lr=0.05" in by_hash[one.path.name] and "preset=lenet_300_100" in by_hash[one.path.name]
    assert "UTC" in by_hash[one.path.name]

    with exclusive(one.path):  # a lottery process running this experiment
        assert main(["ls", str(store)]) == 0
        assert f"{one.path.name}  running" in capsys.readouterr().out
        assert main(["rm", str(one.path)]) == 2 and one.path.exists()
        assert "in use by a running lottery process" in capsys.readouterr().err

    before = _networks(store)
    only_one = {v for v in layout.links(one.path).values()}
    assert main(["rm", str(one.path)]) == 0
    assert not one.path.exists() and _networks(store) == before  # the view only
    capsys.readouterr()

    assert main(["gc", str(store), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert _networks(store) == before  # nothing removed
    assert {line.split()[-1] for line in dry.splitlines() if line.startswith("would remove ")} == {
        str(store / n) for n in only_one
    }
    held = store / sorted(only_one)[0]
    with exclusive(held):  # a process training this network holds its lock
        assert main(["gc", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"kept {held}" in out
    assert _networks(store) == before - only_one | {held.relative_to(store).as_posix()}
    assert main(["gc", str(store)]) == 0  # released: now collected
    assert _networks(store) == before - only_one
    assert main(["verify", str(two.path)]) == 0  # the other experiment is whole
    capsys.readouterr()
    assert main(["show", str(two.path)]) == 0


def test_gc_and_rm_never_follow_links_out_of_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs"
    run_tiny(store)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.txt").write_text("keep me")
    os.symlink(outside, store / "networks" / "dense" / "0123456789abcdef0123")  # an unlinked "network" that is a link
    os.symlink(outside, store / "networks" / "evil_kind")
    (outside / "spec.json").write_text("{}")
    os.symlink(outside, store / "linked_experiment")
    assert main(["gc", str(store)]) == 0
    assert main(["rm", str(store / "linked_experiment")]) == 2
    assert (outside / "data.txt").read_text() == "keep me"
    assert "not an experiment directory" in capsys.readouterr().err
    assert main(["rm", str(store / "networks")]) == 2
    assert main(["ls", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    experiment = next(p for p in store.iterdir() if (p / layout.RUNS_FILE).is_file())
    (experiment / ".lock").unlink()
    os.symlink(outside / "data.txt", experiment / ".lock")  # a lock that is a link: never opened, never "in use"
    assert main(["rm", str(experiment)]) == 2 and experiment.is_dir()
    assert ".lock is a link" in capsys.readouterr().err
    (network,) = [n for n in (store / "networks" / "dense").iterdir() if not n.is_symlink()]
    for view in layout.links(experiment):
        os.unlink(experiment / view)  # the network is now unlinked
    (experiment / layout.RUNS_FILE).write_text('{"format": 3, "runs": {}}')
    (network / ".lock").unlink(missing_ok=True)
    os.symlink(outside / "data.txt", network / ".lock")
    assert main(["gc", str(store)]) == 0 and network.is_dir()
    assert ".lock is a link" in capsys.readouterr().out
    assert (outside / "data.txt").read_text() == "keep me"


def test_gc_keeps_a_prefix_run_while_its_dense_network_is_linked(tmp_path: Path) -> None:
    """A prefix run (the dense run's first iterations retrained for a rewind point added later) is linked by no
    experiment: its W_k is copied into the dense run. gc keeps it with its dense network and removes it with it."""
    store = tmp_path / "runs"
    run_tiny(store, "imp.levels=1")
    later, _ = run_tiny(store, "imp.levels=1", 'imp.rewind=["0it", "20it"]')  # W_20 from a prefix run
    prefixes = {n for n in _networks(store) if n.startswith("networks/prefix/")}
    assert len(prefixes) == 1 and not any("prefix" in view for view in layout.links(later.path))
    assert main(["gc", str(store)]) == 0
    assert prefixes <= _networks(store)  # its dense network is linked: kept
    for experiment in [p for p in store.iterdir() if p.name != layout.NETWORKS]:
        assert main(["rm", str(experiment)]) == 0
    assert main(["gc", str(store)]) == 0
    assert _networks(store) == set()  # nothing links its dense network: collected with it
    being_made = store / "networks" / "prefix" / "0123456789abcdef0123"
    being_made.mkdir(parents=True)  # networks.claim made it and is about to write its recipe
    assert main(["gc", str(store)]) == 0 and being_made.is_dir()
