"""A command's start: importing lottery pauses the cyclic garbage collector and leaves it as it was; only the
`lottery` executable (`entry`: the console script and `python -m lottery`) freezes what the imports created
(docs/performance.md, "Fixed costs of a command")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def python(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter with this checkout's lottery; the JSON it prints last."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


STATE = "json.dumps({'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count(), 'threshold': gc.get_threshold()})"


def test_importing_lottery_leaves_the_collector_on_and_nothing_frozen():
    before = python(f"import gc, json; print({STATE})")
    after = python(f"import gc, json, weakref\nimport lottery\nprint({STATE})")
    assert after == before
    assert after["enabled"] and after["frozen"] == 0


def test_the_garbage_made_while_importing_is_still_collected():
    """freeze + unfreeze moves the imports' objects to the oldest generation without keeping anything alive: a
    cycle created during the import (here: by a module lottery imports) is freed by the next full collection."""
    code = """
import gc, json, sys, types, weakref
class Node: pass
def make_cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)
# a cycle created while lottery imports: at the import of its first module, before torch
import importlib.abc
ref = []
class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "lottery.wiring" and not ref:
            ref.append(make_cycle())
        return None
sys.meta_path.insert(0, Finder())
import lottery
assert ref, "the finder did not run"
alive_after_import = ref[0]() is not None
gc.collect()
print(json.dumps({"alive_after_import": alive_after_import, "alive_after_collect": ref[0]() is not None}))
"""
    result = python(code)
    assert result["alive_after_import"]  # no collection ran during the import (the collector was paused)
    assert not result["alive_after_collect"]  # and none of it is kept: a full collection frees it


def test_a_disabled_collector_stays_disabled_and_frozen_objects_stay_frozen():
    result = python(
        f"import gc, json\ngc.disable()\nkeep = [[] for _ in range(10)]\ngc.freeze()\nimport lottery\nprint({STATE})"
    )
    assert result["enabled"] is False
    assert result["frozen"] >= 10  # the process's own frozen objects were not released


def test_the_executable_freezes_and_main_called_in_process_does_not():
    code = """
import gc, json, sys
from lottery.cli.main import entry, main
code = main(["show", "/nonexistent/experiment"])
in_process = gc.get_freeze_count()
sys.argv = ["lottery", "show", "/nonexistent/experiment"]
code2 = entry()
print(json.dumps({"codes": [code, code2], "in_process": in_process, "frozen": gc.get_freeze_count()}))
"""
    result = python(code)
    assert result["codes"] == [2, 2]  # bad input: one line, exit 2, either way
    assert result["in_process"] == 0
    assert result["frozen"] > 10_000  # torch's and lottery's module objects


@pytest.mark.parametrize("where", ["console script", "python -m lottery"])
def test_both_ways_of_starting_lottery_go_through_entry(where):
    if where == "console script":
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        assert scripts["lottery"] == "lottery.cli.main:entry"
    else:
        text = (ROOT / "src" / "lottery" / "__main__.py").read_text()
        assert "entry()" in text and "main()" not in text
