"""Issue 27, item 6: whole-run progress, "network i of N", elapsed and ETA, on the bar and in log mode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import TINY
from lottery.cli.main import main
from lottery.training import overall


def _run(store: Path, mode: str, *more: str) -> None:
    args = ["run", "--preset", "lenet_300_100", "--out", str(store), "--progress", mode]
    for override in (*TINY, "imp.levels=1", 'controls.kinds=["random_prune"]', *more):
        args += ["--set", override]
    assert main(args) == 0


def test_log_lines_say_network_i_of_n_with_elapsed_and_eta(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    _run(tmp_path / "runs", "log")
    err = capsys.readouterr().err
    found = re.findall(r"\[network (\d) of (\d), elapsed \d+:\d\d, ETA (\?|\d+:\d\d)\]", err)
    assert {(i, n) for i, n, _ in found} == {("1", "3"), ("2", "3"), ("3", "3")}  # dense, level 1, its control
    assert found[-1][2] == "0:00"  # the last line: nothing left
    assert any(eta not in ("?", "0:00") for _, _, eta in found)
    _run(tmp_path / "runs", "log", "imp.levels=2")  # resumed with one more level: only what is left counts
    err = capsys.readouterr().err
    assert set(re.findall(r"network (\d) of (\d)", err)) == {("1", "2"), ("2", "2")}


def test_the_bar_shows_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path / "runs", "bar")
    err = capsys.readouterr().err
    assert re.search(r"\[network 3 of 3, elapsed \d+:\d\d, ETA \d+:\d\d\] r0 k=0 level 1 random_prune", err)


def test_prefix_outside_a_run_is_empty_and_groups_are_ranges(tmp_path: Path) -> None:
    assert overall.prefix() == ""
    (tmp_path / "exp").mkdir()
    with overall.tracking(tmp_path / "exp"):
        overall.started(3)  # a stacked group of 3; an empty view: the total grows to what started
        assert overall.prefix().startswith("networks 1-3 of 3, elapsed 0:00, ETA ?")
        overall.advance(0.5)
        overall.finished(3)
        overall.started(1)
        assert overall.prefix().startswith("network 4 of 4")
    assert overall.prefix() == ""
