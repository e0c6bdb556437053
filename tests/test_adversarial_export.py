"""Issue 24, items 2 and 15: `lottery export --out DIR` never replaces a user's file nor mixes two exports, and
`load_ticket` of an empty, cut-off or pickled file is one clear line (UserError), never the raw library error."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import lottery
from conftest import run_tiny, tiny_spec
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.experiments.context import Context
from lottery.training import Runtime

OVERRIDES = ("imp.levels=2",)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run, _ = run_tiny(tmp_path_factory.mktemp("runs"), *OVERRIDES)
    return run.path


def export(experiment: Path, out: Path, *args: str) -> int:
    return main(["export", str(experiment), "--out", str(out), *args])


def model() -> torch.nn.Module:
    return Context(tiny_spec(*OVERRIDES), Runtime()).model(5)


def test_export_never_replaces_a_users_file(experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    assert export(experiment, out, "--level", "1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an export" in err and "new or empty directory" in err
    assert (out / "README.md").read_text() == "my notes\n" and sorted(p.name for p in out.iterdir()) == ["README.md"]
    link = tmp_path / "link"
    link.symlink_to(out)
    assert export(experiment, link, "--level", "1") == 2  # a link to a directory: refused too
    assert (out / "README.md").read_text() == "my notes\n"


def test_two_exports_never_mix_and_the_same_export_may_be_redone(experiment: Path, tmp_path: Path) -> None:
    out = tmp_path / "ticket"
    assert export(experiment, out, "--level", "0") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert export(experiment, out, "--level", "2") == 2  # another level: refused, nothing changed
    assert export(experiment, out, "--level", "0", "--format", "state-dict") == 2  # another format: refused
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    mask = lottery.load_ticket(out, model())
    assert mask.density == 1.0  # the dense ticket, not a stale mix
    assert export(experiment, out, "--level", "0") == 0  # the same ticket and format again: rewritten, same bytes
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(experiment, empty, "--level", "2") == 0 and (empty / "export.json").is_file()


@pytest.mark.parametrize("case", ["empty", "truncated", "pickle", "not_a_state_dict", "truncated_pt"])
def test_load_ticket_of_a_bad_file_is_one_line(experiment: Path, tmp_path: Path, case: str) -> None:
    good = tmp_path / "good"
    assert export(experiment, good, "--level", "1") == 0
    assert export(experiment, tmp_path / "pt", "--level", "1", "--format", "state-dict") == 0
    target = (
        tmp_path
        / "bad"
        / ("model.pt" if case in ("pickle", "not_a_state_dict", "truncated_pt") else "model.safetensors")
    )
    target.parent.mkdir()
    data = (good / "model.safetensors").read_bytes()
    if case == "empty":
        target.write_bytes(b"")
    elif case == "truncated":
        target.write_bytes(data[: len(data) // 3])
    elif case == "truncated_pt":
        pt = (tmp_path / "pt" / "model.pt").read_bytes()
        target.write_bytes(pt[: len(pt) // 2])
    elif case == "pickle":

        class Payload:
            def __reduce__(self) -> tuple:
                return (os.system, (f"touch {tmp_path / 'ran'}",))

        target.write_bytes(pickle.dumps({"hidden.0.weight": Payload()}))
    else:
        torch.save({"hidden.0.weight": 3}, target)
    for path in (target, target.parent):  # the file itself, or its export directory
        with pytest.raises(UserError) as error:
            lottery.load_ticket(path, model())
        message = str(error.value)
        assert "\n" not in message and str(target) in message
    assert not (tmp_path / "ran").exists()  # the pickle's code never ran
