"""A new mask source and a new control kind, each its own module: the complete examples of
docs/extending/mask-source.md and docs/extending/control.md, written to files and loaded with `lottery run --import`,
run end to end through the CLI on the tiny synthetic setup and `lottery report`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from conftest import TINY
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.extension_points import control_kinds, mask_sources, register_control, register_mask_source
from lottery.spec import build, resolve, spec_hash, to_dict
from lottery.store import layout

DOCS = Path(__file__).resolve().parent.parent / "docs" / "extending"
SPEC = """preset = "lenet_300_100"
replicates = 1

[imp]
levels = 1

[controls]
kinds = ["random_sign_flip"]

[masks]
sources = ["jittered_magnitude"]
densities = [0.2]
jitter = 0.05
"""


def example(page: str) -> str:
    """The Python block of the page's "A complete example" section: the code the page shows is the code run here."""
    section = (DOCS / page).read_text().split("## A complete example", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, page
    return found.group(1)


def write_plugins(tmp_path: Path) -> list[str]:
    (tmp_path / "jittered_magnitude.py").write_text(example("mask-source.md"))
    (tmp_path / "random_sign_flip.py").write_text(example("control.md"))
    return ["--import", str(tmp_path / "jittered_magnitude.py"), "--import", str(tmp_path / "random_sign_flip.py")]


def recipe(run: Path) -> dict:
    return json.loads((run.resolve() / layout.KEY_FILE).read_text())


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """(the `lottery run` arguments, the experiment) of the plugins' spec, run once through the CLI."""
    tmp_path = tmp_path_factory.mktemp("extending")
    imports = write_plugins(tmp_path)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    tiny = [arg for setting in TINY for arg in ("--set", setting)]
    argv = ["run", *imports, str(spec), *tiny, "--out", str(tmp_path / "runs"), "--progress", "log"]
    out = tmp_path / "stdout.txt"
    with out.open("w") as stdout, contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return argv, Path(out.read_text().strip().splitlines()[-1])


def test_plugin_mask_source_and_control_end_to_end(
    plugin_run: tuple[list[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv, experiment = plugin_run

    # Registered by their modules alone, with their seed streams in the one table.
    from lottery import seeding

    assert seeding.STREAMS["masks.jittered_magnitude"] == 1001 and seeding.STREAMS["control.random_sign_flip"] == 1002
    assert "jittered_magnitude" in mask_sources and control_kinds.get("random_sign_flip").stability
    stable, _ = resolve(overrides=['stability.rewind=["0it"]', 'stability.controls=["random_sign_flip"]'])
    assert stable.stability.controls == ("random_sign_flip",)  # registered as analysable
    with pytest.raises(UserError, match="stability.controls"):
        resolve(overrides=['stability.rewind=["0it"]', 'stability.controls=["random_prune_global"]'])

    results = json.loads((experiment / "results.json").read_text())
    rows = {row["kind"]: row for row in results["runs"]}
    assert {"dense", "imp", "random_sign_flip", "jittered_magnitude"} <= set(rows)
    for kind in ("random_sign_flip", "jittered_magnitude"):
        assert 0 <= rows[kind]["final_test_accuracy"] <= 1
    assert rows["jittered_magnitude"]["target_density"] == 0.2

    replicate = layout.replicate(experiment, 0)
    k = layout.rewind_points(replicate)[0]
    # The control: the IMP level's mask, W_k's magnitudes with some signs flipped (a seeded draw).
    control = layout.control(replicate, k, 1, "random_sign_flip", 0)
    level = layout.level(replicate, k, 1)
    masks = [load_file(run / "mask.safetensors") for run in (control, level)]
    assert masks[0].keys() == masks[1].keys() and all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
    start, imp_start = load_file(control / "start.safetensors"), load_file(level / "start.safetensors")
    flipped = [name for name in start if not torch.equal(start[name], imp_start[name])]
    assert flipped and all(torch.equal(start[n].abs(), imp_start[n].abs()) for n in flipped)

    # Their recipes: the source's option and each plugin's code, in their own networks only.
    mask_run = layout.mask_run(replicate, "jittered_magnitude", 0.2, 0)
    reads = recipe(mask_run)["reads"]
    assert reads["jitter"] == 0.05 and reads["code"].startswith("sha256:")
    assert "snip_batches" not in reads and "grasp_temperature" not in reads
    assert recipe(control)["code"].startswith("sha256:") and "code" not in recipe(level)
    assert "jitter" not in json.dumps(recipe(level))

    assert main(["report", str(experiment)]) == 0
    capsys.readouterr()
    html = (experiment / "report" / "report.html").read_text()
    assert "jittered_magnitude" in html and "random_sign_flip" in html  # their rows
    figure = (experiment / "report" / "accuracy_vs_remaining.svg").read_text()
    assert "random signs" in figure  # the control's registered label

    # A bad option value is one line and exit 2, and nothing computed is lost.
    assert main([*argv, "--set", "masks.jitter=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "masks.jitter must be in [0, 1], got 2" in err
    assert (experiment / "results.json").is_file() and (experiment / "report" / "report.html").is_file()


@pytest.mark.slow
def test_plugin_experiment_read_without_import_and_option_changes(
    plugin_run: tuple[list[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv, experiment = plugin_run
    # A reader needs no --import: a fresh process shows the experiment with the plugins' rows (unregistered there).
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    shown = subprocess.run(
        [sys.executable, "-m", "lottery", "show", str(experiment)], capture_output=True, text=True, env=env, timeout=300
    )
    assert shown.returncode == 0, shown.stderr
    assert "random_sign_flip" in shown.stdout and "jittered_magnitude" in shown.stdout

    # A changed option is another experiment, and its mask network another network (the IMP chain is shared).
    assert main([*argv, "--set", "masks.jitter=0.06"]) == 0
    other = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert other != experiment
    mask_runs = [layout.mask_run(layout.replicate(e, 0), "jittered_magnitude", 0.2, 0) for e in (experiment, other)]
    assert recipe(mask_runs[1])["reads"]["jitter"] == 0.06 and mask_runs[0].resolve() != mask_runs[1].resolve()
    k = layout.rewind_points(layout.replicate(experiment, 0))[0]
    levels = [layout.level(layout.replicate(e, 0), k, 1).resolve() for e in (experiment, other)]
    assert levels[0] == levels[1]


def test_plugin_option_needs_its_import_and_registrations_refuse_collisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without its module, a plugin's option or kind is one line and exit 2; a stream id another purpose holds, a
    second definition of a name, or an option redefining a shared key's default raise at registration."""
    spec = tmp_path / "spec.toml"
    spec.write_text('[masks]\nsources = ["magnitude"]\ndensities = [0.5]\nnot_an_option = 3\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not_an_option" in err and "--import" in err

    def score(inp: object) -> dict:
        return {}

    with pytest.raises(ValueError, match="already"):
        register_mask_source("collides", stream=31)(score)  # snip's stream
    with pytest.raises(ValueError, match="already"):
        register_control("collides", stream=1)(score)  # data_order's stream
    with pytest.raises(UserError, match="registered twice"):
        register_mask_source("snip", stream=31)(score)
    assert "collides" not in mask_sources and "collides" not in control_kinds

    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Other:
        snip_batches: int = 2

    with pytest.raises(ValueError, match="snip_batches"):
        register_mask_source("other_batches", stream=5001, options=Other, needs_data=True)(score)
    with pytest.raises(ValueError, match="snip_batches"):
        register_mask_source("no_batches", stream=5002, needs_data=True)(score)


@settings(max_examples=40, deadline=None)
@given(st.integers(-3, 40), st.floats(-5, 500, allow_nan=False))
def test_source_options_are_flat_masks_keys_whose_defaults_never_enter_the_hash(batches: int, temperature: float):
    """The snip and grasp options stay the keys `masks.snip_batches` and `masks.grasp_temperature`: a value at its
    default leaves the spec (and its hash) as if unset, another changes the hash and survives the round trip; a bad
    value is one line."""
    overrides = [f"masks.snip_batches={batches}", f"masks.grasp_temperature={temperature!r}"]
    if batches < 1 or temperature <= 0:
        with pytest.raises(UserError, match=r"masks\.(snip_batches|grasp_temperature) must be > 0") as error:
            resolve(overrides=overrides)
        assert "\n" not in str(error.value)
        return
    spec, _ = resolve(overrides=overrides)
    assert spec.masks.option("snip_batches") == batches and spec.masks.option("grasp_temperature") == temperature
    flat = to_dict(spec)["masks"]
    assert flat["snip_batches"] == batches and flat["grasp_temperature"] == temperature
    assert build(to_dict(spec)) == spec
    changed = {
        key
        for key, value in (("snip_batches", batches), ("grasp_temperature", temperature))
        if value != {"snip_batches": 1, "grasp_temperature": 1.0}[key]
    }
    assert set(to_dict(spec, omit_defaults=True).get("masks", {})) == changed
    assert (spec_hash(spec) == spec_hash(resolve()[0])) == (not changed)
