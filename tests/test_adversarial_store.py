"""The store, attacked (issue 24, items 3, 5, 14 and the recipe check): nothing outside the store is read, written,
locked or deleted, whatever links are planted in it; `lottery verify` reports every dangling, foreign or
mismatched link and every network whose key.json does not name it; a deleted runs.json is written again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.errors import UserError
from lottery.store import RunDir, atomic, exclusive, layout
from reliability_helpers import cli_args, experiment_dir, run_cli

OVERRIDES = ("imp.levels=1",)
DENSE = "replicate_0/level_0"
LEVEL = "replicate_0/rewind_0it/level_1"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished store: one experiment, its dense run and IMP level 1 (networks/dense/..., networks/imp/...)."""
    from lottery.cli.main import main

    out = tmp_path_factory.mktemp("reference") / "runs"
    assert main(cli_args(out, *OVERRIDES)) == 0
    return out


@pytest.fixture
def store(reference: Path, tmp_path: Path) -> Path:
    shutil.copytree(reference, tmp_path / "runs", symlinks=True)
    return tmp_path / "runs"


def network(store: Path, view: str) -> Path:
    """The network directory the run directory `view` of the store's experiment links to."""
    return store / json.loads((experiment_dir(store) / layout.RUNS_FILE).read_text())["runs"][view]


def picture(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root`, hidden ones included, never through a link: path -> bytes (None: a directory)."""
    found: dict[str, bytes | None] = {}
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories:
            found[os.path.relpath(Path(directory) / name, root)] = None
        for name in files:
            found[os.path.relpath(Path(directory) / name, root)] = (Path(directory) / name).read_bytes()
    return found


def problems(out: str) -> list[str]:
    """verify's problem lines (all but its count)."""
    lines = out.strip().splitlines()
    assert re.fullmatch(r"\d+ artifacts checked, \d+ problem\(s\)", lines[-1]), out
    return lines[:-1]


def refused(code: int, err: str) -> str:
    """The one error line of a refused command (exit 2, no traceback)."""
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("lottery: error:")]
    assert len(lines) == 1, err
    return lines[0]


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


# --- 3: verify sees a missing network, a runs.json that disagrees with the links, a link out of the store --------


def test_verify_reports_a_deleted_network(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = experiment_dir(store)
    shutil.rmtree(network(store, LEVEL))
    for path in (experiment, store):
        code, out, _ = run_cli(["verify", str(path)], capsys)
        found = problems(out)
        assert code == 1 and len(found) == 1, out
        assert found[0].startswith(f"{experiment / LEVEL}: dangling link to networks/imp/"), out
    code, _, err = run_cli(cli_args(store, *OVERRIDES), capsys)  # the same command trains it again
    assert code == 0, err
    assert run_cli(["verify", str(store)], capsys)[0] == 0


def test_verify_reports_links_that_disagree_with_runs_json(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = experiment_dir(store)
    dense, level = network(store, DENSE), network(store, LEVEL)
    view = experiment / LEVEL
    os.replace(view, view.parent / "moved")  # the level's link moved aside; its directory now links to the dense run
    os.symlink(os.path.relpath(dense, view.parent), view)
    runs = json.loads((experiment / layout.RUNS_FILE).read_text())
    runs["runs"]["replicate_0/rewind_0it/level_2"] = "networks/imp/0123"  # listed, but no such link
    RunDir(experiment).write_json(layout.RUNS_FILE, runs)  # recorded: only the links disagree with it
    code, out, _ = run_cli(["verify", str(experiment)], capsys)
    found = problems(out)
    assert code == 1 and len(found) == 3, out
    assert f"{view}: links to networks/dense/{dense.name}, but runs.json says networks/imp/{level.name}" in out
    missing = experiment / "replicate_0/rewind_0it/level_2"
    assert f"{missing}: runs.json links it to networks/imp/0123, but it is missing" in out
    assert f"{view.parent}/moved: links to networks/imp/{level.name}, which runs.json does not list" in out


def test_verify_reports_a_link_out_of_the_store_and_does_not_follow_it(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = experiment_dir(store)
    clean = run_cli(["verify", str(experiment)], capsys)[1]
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(network(store, LEVEL), elsewhere)
    (elsewhere / "final.safetensors").write_bytes(b"damaged")  # followed, this would be reported
    (experiment / LEVEL).unlink()
    os.symlink(elsewhere, experiment / LEVEL)
    for path in (experiment, store):
        code, out, _ = run_cli(["verify", str(path)], capsys)
        found = problems(out)
        assert code == 1 and len(found) == 1, out
        assert found[0].startswith(f"{experiment / LEVEL}: links outside the store, to {elsewhere}"), out
        assert "not followed" in found[0] and "final.safetensors" not in out
        if path == experiment:  # the level's artifacts are not read through the link
            assert int(out.splitlines()[-1].split()[0]) < int(clean.splitlines()[-1].split()[0])
    os.symlink(elsewhere, store / "fedcba9876543210")  # an "experiment" of the store that is a link
    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 1 and f"{store / 'fedcba9876543210'}: a link in the store (to {elsewhere}): not followed" in out
    assert "final.safetensors" not in out
    code, out, _ = run_cli(["verify", str(experiment / LEVEL)], capsys)  # nor when named
    assert code == 1 and problems(out)[0].startswith(f"{experiment / LEVEL}: not checked: refusing"), out
    assert out.strip().endswith("0 artifacts checked, 1 problem(s)")


# --- 5: no write, lock or delete outside the store ----------------------------------------------------------------


@pytest.mark.parametrize("linked", ["network", "kind", "networks"])
def test_a_store_directory_linked_elsewhere_is_refused_and_nothing_there_is_touched(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], linked: str
) -> None:
    """networks/imp/<hash> (or networks/imp, or networks) moved out of the store and linked back: `lottery run`
    would have written the level's artifacts, manifest and lock there and deleted the `.*.tmp` files it found."""
    level = network(store, LEVEL)
    moved = {"network": level, "kind": level.parent, "networks": level.parent.parent}[linked]
    elsewhere = tmp_path / "elsewhere" / moved.name
    elsewhere.parent.mkdir()
    shutil.move(moved, elsewhere)
    os.symlink(elsewhere, moved)
    outside = elsewhere / level.relative_to(moved) if linked != "network" else elsewhere
    (outside / "final.safetensors").unlink()  # a run would train the level again, there
    (outside / ".final.safetensors.abc123.tmp").write_bytes(b"someone's")
    (outside / ".notes.tmp").write_bytes(b"someone else's")
    before = picture(tmp_path / "elsewhere")
    code, _, err = run_cli(cli_args(store, *OVERRIDES), capsys)
    line = refused(code, err)
    assert "refusing to use" in line and str(moved) in line, line
    assert picture(tmp_path / "elsewhere") == before  # nothing written, locked or deleted there
    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 1 and str(moved) in out, out


def test_a_network_directory_linked_to_another_network_is_refused(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    level, dense = network(store, LEVEL), network(store, DENSE)
    shutil.rmtree(level)
    os.symlink(os.path.relpath(dense, level.parent), level)  # inside the store, but a network by another's name
    before = picture(store)
    line = refused(*run_cli(cli_args(store, *OVERRIDES), capsys)[::2])
    assert f"{level} is a link (to {dense}), where the store's networks/ holds real directories only" in line, line
    assert picture(store) == before
    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 1 and f"{level}: a network directory that is a link" in out, out


def test_a_run_link_out_of_the_store_is_refused(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Today `run` re-points such a link silently and `show` reads through it; both refuse it in one line."""
    experiment = experiment_dir(store)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(network(store, LEVEL), elsewhere)
    (experiment / LEVEL).unlink()
    os.symlink(elsewhere, experiment / LEVEL)
    before, inside = picture(elsewhere), picture(store)
    ticket = ["export", str(experiment), "--level", "1", "--out", str(tmp_path / "ticket")]
    for command in (cli_args(store, *OVERRIDES), ["show", str(experiment)], ["report", str(experiment)], ticket):
        line = refused(*run_cli(command, capsys)[::2])
        assert f"{experiment / LEVEL}" in line and "outside the store" in line, (command, line)
    assert picture(elsewhere) == before and picture(store) == inside and not (tmp_path / "ticket").exists()


def test_a_store_reached_through_a_link_is_its_own(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alias = tmp_path / "alias"
    os.symlink(store, alias)
    (network(store, LEVEL) / "final.safetensors").unlink()  # the level trains again, through the alias
    code, _, err = run_cli(cli_args(alias, *OVERRIDES), capsys)
    assert code == 0 and "k=0 level 1 iteration" in err, err
    experiment = alias / experiment_dir(store).name
    assert run_cli(["show", str(experiment)], capsys)[0] == 0
    for path in (alias, experiment):
        code, out, _ = run_cli(["verify", str(path)], capsys)
        assert code == 0 and problems(out) == [], out


def test_the_store_refuses_every_write_lock_and_delete_through_a_link_out_of_it(tmp_path: Path) -> None:
    store, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "final.safetensors").write_bytes(b"theirs")
    (elsewhere / ".final.safetensors.lottery-1-abcdefgh.tmp").write_bytes(b"")
    view = store / "0123456789abcdef" / "replicate_0" / "level_0"
    view.parent.mkdir(parents=True)
    os.symlink(elsewhere, view)
    run = RunDir(view)
    before = picture(elsewhere)
    for attempt in (
        lambda: run.write("final.safetensors", b"ours"),
        lambda: run.remove("final.safetensors"),
        run.remove_temporary,
        lambda: run.read("final.safetensors"),
        lambda: atomic.write_bytes(view / "x.json", b"{}"),
        lambda: exclusive(view).__enter__(),
        lambda: layout.bind(view, layout.network(store, "dense", "abc")),
    ):
        with pytest.raises(UserError, match="outside the store"):
            attempt()
    assert picture(elsewhere) == before
    # a planted `.lock` link is never followed either
    target = layout.network(store, "dense", "abc")
    target.mkdir(parents=True)
    os.symlink(elsewhere / "created", target / ".lock")
    with pytest.raises(UserError, match="cannot lock"):
        exclusive(target).__enter__()
    assert not (elsewhere / "created").exists()


def test_temporary_files_are_removed_only_where_the_store_made_them(tmp_path: Path) -> None:
    run = RunDir(layout.network(tmp_path / "runs", "dense", "abc"))
    tmp = atomic.prepare(run.path / "final.safetensors", b"x")  # the store's own name: prefix and process id
    assert re.fullmatch(rf"\.final\.safetensors\.lottery-{os.getpid()}-[a-z0-9_]+\.tmp", tmp.name), tmp.name
    assert layout.TEMPORARY.match(tmp.name)["pid"] == str(os.getpid())
    tmp.unlink()
    dead = dead_pid()
    (run.path / "snapshots").mkdir()
    files = {
        f".final.safetensors.lottery-{dead}-abcdefgh.tmp": False,  # a killed process's: removed
        f"snapshots/.iter_5.safetensors.lottery-{dead}-x1y2z3w4.tmp": False,
        f".summary.json.lottery-{os.getpid()}-abcdefgh.tmp": True,  # a running process's (this one): kept
        ".final.safetensors.abc123.tmp": True,  # not a name the store makes: kept
        ".notes.tmp": True,
        "snapshots/.mine.tmp": True,
    }
    for name in files:
        (run.path / name).write_bytes(b"")
    (run.path / f".d.lottery-{dead}-abcdefgh.tmp").mkdir()  # a directory is never removed
    run.remove_temporary()
    assert {name: (run.path / name).exists() for name in files} == files
    assert (run.path / f".d.lottery-{dead}-abcdefgh.tmp").is_dir()


# --- 14: a deleted runs.json ----------------------------------------------------------------------------------------


def test_a_deleted_runs_json_is_written_again_by_run(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = experiment_dir(store)
    original = (experiment / layout.RUNS_FILE).read_bytes()
    (experiment / layout.RUNS_FILE).unlink()
    code, out, err = run_cli(["show", str(experiment)], capsys)
    assert code == 0 and "2 finished training run(s)" in out, err
    code, out, _ = run_cli(["verify", str(experiment)], capsys)
    assert code == 1 and f"{experiment / layout.RUNS_FILE}: missing" in out
    code, _, err = run_cli(cli_args(store, *OVERRIDES), capsys)
    assert code == 0 and "iteration" not in err, err  # nothing trained
    assert (experiment / layout.RUNS_FILE).read_bytes() == original
    assert run_cli(["verify", str(store)], capsys)[0] == 0


# --- recipes: a network is named by its key.json ---------------------------------------------------------------------


def test_digest_is_the_stores_and_names_every_network(store: Path) -> None:
    from lottery.store import identity  # (new: imported here, so that the other tests run on code without it)

    assert identity.digest({}) == hashlib.sha256(b"{}").hexdigest()[:20] == "44136fa355b3678a1146"
    assert identity.digest({"b": 1, "a": [1.5, "x"]}) == hashlib.sha256(b'{"a":[1.5,"x"],"b":1}').hexdigest()[:20]
    for path in (network(store, DENSE), network(store, LEVEL)):
        assert identity.digest(json.loads((path / layout.KEY_FILE).read_text())) == path.name


def _edit_seed(path: Path) -> None:
    key = json.loads((path / layout.KEY_FILE).read_text())
    key["training"]["init_seed"] = 5
    (path / layout.KEY_FILE).write_text(json.dumps(key))


@pytest.mark.parametrize(
    "damage, why",
    [
        (_edit_seed, "key.json hashes to"),
        (lambda path: (path / layout.KEY_FILE).unlink(), "key.json is missing"),
        (lambda path: (path / layout.KEY_FILE).write_text("{not json"), "key.json is unreadable"),
        (lambda path: shutil.move(path, path.parent / ("0" * 20)), "key.json hashes to"),  # a copy, renamed
        (lambda path: shutil.move(path, path.parent.parent / "imp" / path.name), "key.json names kind 'dense'"),
    ],
    ids=["edited", "deleted", "not-json", "renamed", "other-kind"],
)
def test_verify_reports_a_network_whose_key_does_not_name_it(
    store: Path, capsys: pytest.CaptureFixture[str], damage, why: str
) -> None:
    dense = network(store, DENSE)
    damage(dense)
    code, out, _ = run_cli(["verify", str(store)], capsys)
    lines = [line for line in problems(out) if "foreign or damaged network" in line]
    assert code == 1 and len(lines) == 1 and why in lines[0], out


# --- what the store trusts: no code of its own ---------------------------------------------------------------------


def test_reading_a_store_imports_no_code_from_it(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python files planted in the store, and a spec naming them as a plugin model, are never imported by `verify`,
    `show` or `export`: the store holds data only, and code runs only from `--import` or installed plugins."""
    experiment = experiment_dir(store)
    marker = tmp_path / "imported"
    planted = f"open({str(marker)!r}, 'w').close()\n"
    for where in (store, experiment, network(store, DENSE)):
        for name in ("lottery_planted.py", "sitecustomize.py", "torch.py", "__init__.py"):
            (where / name).write_text(planted)
    spec = json.loads((experiment / "spec.json").read_text())
    spec["model"]["name"] = "lottery_planted"
    RunDir(experiment).write_json("spec.json", spec)  # recorded: a spec that names the planted module
    modules = set(sys.modules)
    ticket = ["export", str(experiment), "--level", "1", "--out", str(tmp_path / "ticket")]
    for command in (["verify", str(store)], ["show", str(experiment)], ticket):  # (report: 10 s of figures)
        run_cli(command, capsys)
    assert not marker.exists()
    assert not any("lottery_planted" in name or "sitecustomize" in name for name in set(sys.modules) - modules)


# --- where a path lies: read from its spelling -----------------------------------------------------------------------

NAMES = st.sampled_from(["data", "runs", "replicate_3", "networks", "0123456789abcdef", "rewind_0it", "x y", "é"])


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.lists(NAMES, min_size=1, max_size=5),
    inside=st.sampled_from(
        [
            "0123456789abcdef",
            "fedcba9876543210/spec.json",
            "fedcba9876543210/replicate_0/level_0/snapshots/iter_5.safetensors",
            "fedcba9876543210/replicate_12/rewind_0it/controls/level_1/random_prune_seed0/.lock",
            "fedcba9876543210/replicate_1/rewind_0it/stability/level_0/dense_copy0/final.safetensors",
            "networks/dense/0123456789abcdef0123/key.json",
            "networks/imp/0123456789abcdef0123/snapshots/.iter_5.safetensors.lottery-1-ab.tmp",
        ]
    ),
)
def test_the_store_of_a_path_is_read_from_its_spelling(prefix: list[str], inside: str) -> None:
    """Whatever the directories above a store are called (names that look like a replicate, an experiment or
    networks/ included), a path inside it names that store; a path in no store names none."""
    store = Path("/", *prefix)
    assert layout.store_of_path(store / inside) == store
    assert layout.store_of_path(Path("/home/user/tickets/model.safetensors")) is None


EXPERIMENT, OTHER, NET = "0123456789abcdef", "fedcba9876543210", "0123456789abcdef0123"
LOCATIONS = [  # where a link may be planted (a directory of the store replaced by a link)
    f"{EXPERIMENT}/replicate_0/level_0",
    f"{EXPERIMENT}/replicate_0",
    EXPERIMENT,
    f"networks/dense/{NET}",
    "networks/dense",
    "networks",
    f"networks/dense/{NET}/snapshots",
]
TARGETS = ["../outside", f"networks/dense/{NET}", "networks/imp/other", OTHER, ".", "..", "../outside/deep"]
FILES = [
    f"{EXPERIMENT}/replicate_0/level_0/snapshots/iter_1.safetensors",
    f"{EXPERIMENT}/replicate_0/level_0/final.safetensors",
    f"{EXPERIMENT}/spec.json",
    f"networks/dense/{NET}/key.json",
    f"networks/dense/{NET}/snapshots/iter_1.safetensors",
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LOCATIONS), st.sampled_from(TARGETS)), min_size=1, max_size=3))
def test_a_path_the_store_accepts_never_resolves_outside_it(planted: list[tuple[str, str]]) -> None:
    """Whatever links are planted in a store (out of it, to a network, to another experiment, to the store itself
    or above), every path `layout.confined` accepts resolves inside the store."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs"
        for name in (f"{EXPERIMENT}/replicate_0", f"networks/dense/{NET}/snapshots", "networks/imp/other", OTHER):
            (store / name).mkdir(parents=True, exist_ok=True)
        (Path(tmp) / "outside" / "deep").mkdir(parents=True)
        for location, target in planted:
            where = store / location
            if not where.parent.is_dir() or where.is_symlink() or not where.resolve().is_relative_to(tmp):
                continue
            if where.is_dir():
                shutil.rmtree(where)
            os.symlink(os.path.relpath(store / target, where.parent), where)
        for name in FILES:
            try:
                accepted = layout.confined(store / name) is not None
            except UserError:
                continue
            assert accepted and not layout.outside((store / name).parent, store), (planted, name)
