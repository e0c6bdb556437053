"""Every example runs (in this process: the test session's thread settings, no second torch import)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    "script, args",
    [
        ("masks.py", []),
        ("controls.py", []),
        ("imp_tabular.py", []),
        ("sequence_tickets.py", ["--quick"]),
        ("dynamic_sparsity.py", []),
    ],
)
def test_example_runs(script: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert capsys.readouterr().out  # it reported something
