"""Adversarial inputs (issue 24): values that size processes, image files built to hurt, a report's results.json
written by someone else. Each case ends in one stderr line (exit 2 where it is refused) or a bounded run, never in
a traceback or a machine taken down."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_spec
from lottery import loggers
from lottery.cli.main import main
from lottery.data import imaging
from lottery.data import stream as streaming
from lottery.data.imaging import decode_many
from lottery.data.jpegs import write_folder
from lottery.errors import UserError
from lottery.experiments.context import default_workers
from lottery.experiments.run import run_experiment
from lottery.reports import figures, html, masks_figures
from lottery.reports.html import render_report
from lottery.reports.load import MALFORMED, load_experiment
from lottery.training import Runtime
from reliability_helpers import cli_args, files, one_error_line, run_cli, subprocess_env, tree

SIZE = 16
CPUS = len(os.sched_getaffinity(0))


def folder_args(out: Path, root: Path, *extra: str, workers: int = 1) -> list[str]:
    """`lottery train` of a 4-iteration conv2 on the image folder `root`."""
    args = ["train", "--out", str(out), "--progress", "log", "--device", "cpu", "--data-workers", str(workers)]
    settings = [
        f"dataset.root={root}",
        "dataset.name=imagefolder",
        f"dataset.image_size={SIZE}",
        "dataset.validation_size=0",
        "dataset.augment=true",
        "model.name=conv2",
        "training.batch_size=6",
        "training.training_steps=4it",
        "training.eval_every=2it",
        *extra,
    ]
    for setting in settings:
        args += ["--set", setting]
    return args


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("jpegs"), classes=2, train_per_class=6, val_per_class=2)


# 1. --data-workers sizes a process pool: capped at the CPUs this process may use ------------------------------
def test_data_workers_are_capped_at_the_usable_cpus(capsys: pytest.CaptureFixture[str]) -> None:
    assert default_workers(Runtime(data_workers=100000)) == CPUS
    assert capsys.readouterr().err == f"lottery: --data-workers 100000 cut to {CPUS}, the CPUs this process may use\n"
    assert default_workers(Runtime(data_workers=CPUS)) == CPUS
    assert default_workers(Runtime(data_workers=0)) == 0
    assert capsys.readouterr().err == ""  # a value that fits is taken as it is, silently


def test_huge_data_workers_run_with_a_bounded_pool(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lottery train --data-workers 100000` trains with at most CPUS decoding processes (the pool is checked
    before it forks anything: on the unbounded code this test fails instead of forking 100000 processes)."""
    sizes = []
    real = streaming.ProcessPoolExecutor

    def bounded(workers: int, **kwargs: object) -> streaming.ProcessPoolExecutor:
        sizes.append(workers)
        assert workers <= CPUS, f"a pool of {workers} processes on {CPUS} CPUs"
        return real(workers, **kwargs)

    monkeypatch.setattr(streaming, "ProcessPoolExecutor", bounded)
    monkeypatch.setattr(streaming, "_pools", {})  # this process's pools: a fresh one is made here
    try:
        assert main(folder_args(tmp_path / "out", images, workers=100000)) == 0
    finally:
        for pool in streaming._pools.values():
            pool.shutdown(wait=True)
    err = capsys.readouterr().err
    assert err.count(f"lottery: --data-workers 100000 cut to {CPUS}") == 1
    assert sizes == [CPUS]


# 6. Every string in report.html escaped: each section rendered from a results.json full of script tags ---------
SCRIPT = "\"'><script>alert(1)</script>"
RICH = (
    "imp.levels=1",
    "replicates=2",
    "imp.rewind=['20it']",
    "stability.rewind=['20it']",
    "stability.levels=[1]",
    "stability.controls=[]",
    "stability.interpolation_points=3",
    "stability.train_subset=100",
    "stability.batchnorm_batches=1",
    'masks.sources=["early_bird"]',
    "masks.densities=[0.2]",
    "masks.early_bird_every=20it",
    'controls.kinds=["random_reinit"]',
    'dynamic.methods=["rigl"]',  # and the stability of dynamic sparsity (its own section)
    "dynamic.densities=[0.3]",
    "dynamic.update_every=10it",
    'stability.dynamic=["rigl"]',
)
# what `lottery rewind-search` writes (its report section reads this file, not results.json)
REWIND_SEARCH = {
    "level": 1,
    "grid": [0, 20, 40],
    "threshold": 2.0,
    "tolerance": 0.2,
    "refine": 2,
    "max_trainings": None,
    "max_copies": 4,
    "dense": {
        "k": 20,
        "bracket": [0, 20],
        "interval": [0, 20],
        "monotone": True,
        "offending": [],
        "complete": True,
        "matching": "matching",
        "accuracy": 0.9,
        "probes": [
            {
                "k": 0,
                "copies": 2,
                "pairs": [[3.0]],
                "barrier_mean": 3.0,
                "barrier_interval": [2.5, 3.5],
                "decision": "unstable",
                "unit": "replicate",
                "accuracy": 0.9,
                "gap_mean": 0.1,
                "gap_interval": [0.0, 0.2],
                "matching": "matching",
                "trainings": 2,
            },
            {
                "k": 20,
                "copies": 2,
                "pairs": [[0.5]],
                "barrier_mean": 0.5,
                "barrier_interval": [0.2, 0.8],
                "decision": "stable",
                "unit": "replicate",
                "accuracy": 0.9,
                "gap_mean": 0.1,
                "gap_interval": [0.0, 0.2],
                "matching": "matching",
                "trainings": 2,
            },
        ],
    },
    "imp": {
        "k": 20,
        "bracket": [0, 20],
        "interval": [0, 20],
        "monotone": None,
        "offending": [],
        "complete": False,
        "matching": "not_matching",
        "accuracy": 0.8,
        "probes": [
            {
                "k": 20,
                "copies": 2,
                "pairs": [[0.1]],
                "barrier_mean": 0.1,
                "barrier_interval": [0.0, 0.2],
                "decision": "stable",
                "unit": "replicate",
                "accuracy": 0.8,
                "gap_mean": 1.5,
                "gap_interval": [1.0, 2.0],
                "matching": "not_matching",
                "control": {"kind": "random_prune", "barrier_mean": 4.0, "barrier_interval": [3.0, 5.0]},
                "trainings": 3,
            }
        ],
    },
    "dense_accuracy": 0.95,
    "cost": {
        "trainings": 4,
        "iterations": 100,
        "probed": {"trainings": 4, "iterations": 100},
        "full_sweep": {"trainings": 9, "iterations": 300},
    },
}


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished experiment whose results fill every report section: IMP with a control, two replicates (the
    replicates' mask distance), stability and its predictors, an early-bird mask, a RigL run's stability, and a
    rewind search's file."""
    from conftest import run_tiny

    experiment, _ = run_tiny(tmp_path_factory.mktemp("rich"), *RICH)
    (experiment.path / "rewind_search.json").write_text(json.dumps(REWIND_SEARCH))
    figures.load_plugins()  # every section registers itself (as `lottery report` does before rendering)
    return experiment.path


def scripted(value: Any, key: str | None = None, only: str | None = None, keep: tuple[str, ...] = ()) -> Any:
    """`value` with a script tag for every string in it (layer names, which are keys, included) but those under the
    keys `keep`; or, given `only`, for every value, of any type, under the key `only`."""
    if isinstance(value, dict):
        return {
            (f"{SCRIPT}{i}" if key == "layer_densities" and only is None else k): scripted(v, k, only, keep)
            for i, (k, v) in enumerate(value.items())
        }
    if isinstance(value, list):
        return [scripted(v, key, only, keep) for v in value]
    if only is None:
        return SCRIPT if isinstance(value, str) and key not in keep else value
    return SCRIPT if key == only else value


def keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {k for k, v in value.items() if not isinstance(v, (dict, list))} | {
            k for v in value.values() for k in keys(v)
        }
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def render(experiment_dir: Path, results: dict[str, Any], rewind_search: dict[str, Any]) -> str:
    """report.html's page for `results` (figures left out: they are pictures, not text in the page)."""
    (experiment_dir / "rewind_search.json").write_text(json.dumps(rewind_search))
    experiment = load_experiment(experiment_dir)
    experiment.results, experiment.preset = results, SCRIPT
    return render_report(experiment, {})


def assert_no_script(page: str) -> None:
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page  # the value is shown, as text


@pytest.mark.parametrize("keep", [(), ("kind",)], ids=["every string", "every string but the kinds"])
def test_every_section_escapes_every_string(rich: Path, tmp_path: Path, keep: tuple[str, ...]) -> None:
    """Every string of results.json and rewind_search.json a script tag (but the kinds, which choose the rows some
    sections show): no tag reaches the page unescaped, searched in the whole HTML."""
    copy = tmp_path / rich.name
    shutil.copytree(rich, copy, symlinks=False)
    results = json.loads((rich / "results.json").read_text())
    sections = {name: section(results, copy) for name, section in html._SECTIONS.items()}
    assert len(sections) >= 7 and all(sections.values()), sections  # every section shows something
    hostile = scripted(results, keep=keep)
    (copy / "rewind_search.json").write_text(json.dumps(scripted(REWIND_SEARCH, keep=keep)))
    shown = {name: section(hostile, copy) or "" for name, section in html._SECTIONS.items()}
    assert not [name for name, fragment in shown.items() if "<script" in fragment.lower()]
    # sections that show a file's strings (a predictors section of too few points is one line of its own words)
    assert len([name for name, fragment in shown.items() if "&lt;script&gt;" in fragment]) >= 4
    page = render(copy, hostile, scripted(REWIND_SEARCH, keep=keep))
    assert_no_script(page)


def test_mask_section_escapes_numbers_replaced_by_scripts(rich: Path) -> None:
    """The attack of issue 24: the early-bird and replicate-distance tables' numbers replaced by script tags."""
    results = json.loads((rich / "results.json").read_text())
    for trace in results["masks"]["early_bird"]:
        trace["replicate"] = SCRIPT
        for entry in trace["densities"]:
            entry["settled_at"] = SCRIPT
    for row in results["masks"]["imp_replicate_distance"]:
        row.update(rewind_iteration=SCRIPT, level=SCRIPT, a=SCRIPT, b=SCRIPT)
    fragment = masks_figures.mask_section(results, rich)
    assert fragment is not None and "<script" not in fragment and fragment.count("&lt;script&gt;") == 2 * 2 + 4


def test_any_field_replaced_by_a_script_is_escaped_or_refused(rich: Path, tmp_path: Path) -> None:
    """Each field of results.json and rewind_search.json, whatever its type, replaced by a script tag in turn: the
    page shows it escaped, or rendering stops with an error of a malformed file (`reading` makes it one line)."""
    copy = tmp_path / rich.name
    shutil.copytree(rich, copy, symlinks=False)
    results = json.loads((rich / "results.json").read_text())
    shown = 0
    for name in sorted(keys(results)):
        try:
            page = render(copy, scripted(results, only=name), REWIND_SEARCH)
        except MALFORMED:
            continue
        assert "<script" not in page.lower(), name
        shown += "&lt;script&gt;" in page
    for name in sorted(keys(REWIND_SEARCH)):
        try:
            page = render(copy, results, scripted(REWIND_SEARCH, only=name))
        except MALFORMED:
            continue
        assert "<script" not in page.lower(), name
        shown += "&lt;script&gt;" in page
    assert shown > 20


# 13. A checksummed but malformed results.json: one line, exit 2 -----------------------------------------------
def rewrite_checksummed(experiment: Path, name: str, data: bytes) -> None:
    """Replace `name` and its manifest entry: an edit the checksums cannot catch."""
    (experiment / name).write_bytes(data)
    manifest = json.loads((experiment / "manifest.json").read_text())
    manifest[name] = hashlib.sha256(data).hexdigest()
    (experiment / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def damaged_store(rich: Path, tmp_path: Path, damage: str) -> tuple[Path, Path]:
    """A copy of the rich store whose experiment's results.json is damaged (checksum updated): (store, experiment)."""
    store = tmp_path / "store"
    shutil.copytree(rich.parent, store, symlinks=True)
    experiment = store / rich.name
    results = json.loads((experiment / "results.json").read_text())
    if damage == "missing key":
        del results["summary"][0]["rewind_iteration"]
    elif damage == "string for a number":
        results["stability"]["points"][0]["density"] = "high"
    data = b'{"runs": [' if damage == "not JSON" else json.dumps(results).encode()
    rewrite_checksummed(experiment, "results.json", data)
    return store, experiment


@pytest.mark.parametrize("damage", ["missing key", "string for a number", "not JSON"])
def test_report_on_a_malformed_results_json(
    rich: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store, experiment = damaged_store(rich, tmp_path, damage)
    before = tree(store)
    code, out, err = run_cli(["report", str(experiment)], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert f"{experiment / 'results.json'} is malformed" in line and "delete it" in line
    assert tree(store) == before  # not a figure written


def test_compare_with_a_malformed_results_json(rich: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, experiment = damaged_store(rich, tmp_path, "missing key")
    code, out, err = run_cli(["compare", str(rich), str(experiment), "--out", str(tmp_path / "comparison")], capsys)
    assert code == 2 and f"{experiment / 'results.json'} is malformed" in one_error_line(err)
    assert not (tmp_path / "comparison").exists()


@pytest.mark.slow
def test_malformed_results_json_deleted_is_rebuilt(
    rich: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the line advises: delete results.json, and `lottery report` rebuilds it from the store."""
    _, experiment = damaged_store(rich, tmp_path, "missing key")
    (experiment / "results.json").unlink()
    code, out, err = run_cli(["report", str(experiment)], capsys)
    assert code == 0 and (experiment / "report" / "report.html").is_file()
    assert json.loads((experiment / "results.json").read_text()) == json.loads((rich / "results.json").read_text())


# 10, 11. Image files built to hurt: one line naming the file ------------------------------------------------------
def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG whose header claims width x height pixels, in about 120 bytes (its data is cut short)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress((b"\x00" + bytes((width + 7) // 8)) * 16, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture
def folder_copy(images: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(images, tmp_path / "images"))


@pytest.mark.parametrize("workers", [0, 1], ids=["in the process", "in a decoding worker"])
def test_decompression_bomb_is_one_line(
    folder_copy: Path, tmp_path: Path, workers: int, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = folder_copy / "train" / "n00000001" / "bomb.png"
    bomb.write_bytes(png_bomb(20000, 20000))
    assert bomb.stat().st_size < 200
    code, out, err = run_cli(folder_args(tmp_path / "out", folder_copy, workers=workers), capsys)
    assert code == 2 and "Traceback" not in err
    line = err.splitlines()[-1]  # images are decoded as their batch comes: progress lines may precede it
    assert line.startswith("lottery: error: ")
    assert f"cannot decode image {bomb}" in line and "decompression bomb" in line and "400000000 pixels" in line


@pytest.mark.parametrize("where", ["an image", "a class folder", "a test image"])
def test_self_referencing_link_is_one_line(
    folder_copy: Path, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    link = {
        "an image": folder_copy / "train" / "n00000000" / "loop.JPEG",
        "a class folder": folder_copy / "train" / "loop",
        "a test image": folder_copy / "val" / "n00000001" / "loop.jpg",
    }[where]
    link.symlink_to(link.name)  # points to itself: ELOOP
    code, out, err = run_cli(folder_args(tmp_path / "out", folder_copy), capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"cannot read {link}: Too many levels of symbolic links" in line and "remove it" in line
    assert not (tmp_path / "out").exists()  # refused while listing, before anything is written


# 7. --import MODULE: the working directory does not shadow other modules -----------------------------------------
SHADOW = "open({marker!r}, 'a').write(__name__ + '\\n')\nraise RuntimeError('a file of the working directory ran')\n"


def plugin_directory(directory: Path, shadows: tuple[str, ...]) -> Path:
    """A working directory holding a plugin module (which imports a sibling file) and files named like other
    modules, each of which records that it ran (in `ran.txt`) and fails."""
    directory.mkdir()
    (directory / "adv_helper.py").write_text("WIDTH = 7\n")
    (directory / "adv_plugin.py").write_text(
        "import adv_helper\nfrom lottery.plugins import register_model\nfrom torch import nn\n\n\n"
        "@register_model('adv_import_mlp')\ndef adv_import_mlp(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1] ** 2, adv_helper.WIDTH), nn.ReLU(),\n"
        "                         nn.Linear(adv_helper.WIDTH, num_classes))\n"
    )
    for package in ("adv_pkg", "adv_namespace"):  # a package, and a folder without __init__.py
        (directory / package).mkdir()
        (directory / package / "helper.py").write_text("VALUE = 3\n")
        (directory / package / "models.py").write_text(f"from {package} import helper\nVALUE = helper.VALUE\n")
    (directory / "adv_pkg" / "__init__.py").write_text("")
    for name in shadows:
        (directory / f"{name}.py").write_text(SHADOW.format(marker=str(directory / "ran.txt")))
    return directory


def test_import_module_leaves_sys_path_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin comes from the working directory (its sibling imports too), and sys.path is as it was after:
    a later import of a module named like a file there (stdlib's tabnanny) gets the real module."""
    from lottery import plugins

    here = plugin_directory(tmp_path / "work", ("tabnanny",))
    monkeypatch.chdir(here)
    monkeypatch.delitem(sys.modules, "tabnanny", raising=False)
    before = list(sys.path)
    entries = ("adv_plugin", "adv_pkg.models", "adv_namespace.models")
    try:
        assert plugins.import_modules(entries) == entries
        assert sys.path == before
        assert sys.modules["adv_pkg.models"].VALUE == sys.modules["adv_namespace.models"].VALUE == 3
        assert Path(sys.modules["adv_plugin"].__file__).resolve() == here / "adv_plugin.py"
        assert plugins.find("model", "adv_import_mlp") is not None
        import tabnanny

        assert Path(tabnanny.__file__).parent != here and not (here / "ran.txt").exists()
    finally:
        for name in [m for m in sys.modules if m.startswith(("adv_plugin", "adv_helper", "adv_pkg", "adv_namespace"))]:
            sys.modules.pop(name, None)


def test_plugin_file_named_like_a_module_does_not_replace_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--import plugins/tabnanny.py` imports the file under a name of its own, not as the stdlib's tabnanny."""
    from lottery import plugins

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "tabnanny.py").write_text("MINE = True\n")
    monkeypatch.delitem(sys.modules, "tabnanny", raising=False)
    plugins.import_modules([str(tmp_path / "plugins" / "tabnanny.py")])
    assert sys.modules["_lottery_tabnanny"].MINE
    import tabnanny

    assert not hasattr(tabnanny, "MINE")


@pytest.mark.slow
def test_import_on_the_command_line_runs_no_file_named_like_a_module(tmp_path: Path) -> None:
    """Issue 24's case, as the installed `lottery` script runs it (its own directory first on sys.path, not the
    working directory): `--import adv_plugin --log tensorboard` in a directory holding a `matplotlib.py`; the
    tracker then imports matplotlib, which must be the installed one."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    here = plugin_directory(tmp_path / "work", ("matplotlib",))
    script = tmp_path / "bin" / "lottery_script.py"
    script.parent.mkdir()
    script.write_text("import sys\nfrom lottery.cli.main import main\nsys.exit(main())\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    argv = cli_args(tmp_path / "out", command="train")
    result = subprocess.run(
        [sys.executable, str(script), *argv, "--import", "adv_plugin", "--log", "tensorboard"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=300,
        env={**subprocess_env(), "PYTHONPATH": src},
    )
    assert not (here / "ran.txt").exists(), (here / "ran.txt").read_text()
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "out").glob("*/tensorboard/summary"))


# 8. A tracker that fails never kills the run; --log-strict stops it in one line ---------------------------------
def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then closed): connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def trackers_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh process's trackers: none turned off by an earlier failure."""
    monkeypatch.setattr(loggers, "_disabled", {}, raising=False)


def tracked(root: Path, log: tuple[str, ...], strict: bool = False) -> Path:
    """A dense-only tiny experiment logged to `log`; returns its directory."""
    runtime = Runtime(progress=False, log=log, log_strict=strict)
    experiment, _ = run_experiment(tiny_spec(), "lenet_300_100", root, runtime, dense_only=True)
    return experiment.path


def one_warning(err: str, tracker: str) -> str:
    lines = [line for line in err.splitlines() if "warning" in line]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"lottery: warning: --log {tracker}: start failed (") and "off for the rest" in lines[0]
    return lines[0]


@pytest.fixture
def broken_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `wandb` package that raises on import (a broken install), first on sys.path."""
    fake = tmp_path / "fake" / "wandb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('this wandb install is broken')\n")
    monkeypatch.syspath_prepend(str(fake.parent))
    for name in [m for m in sys.modules if m == "wandb" or m.startswith("wandb.")]:
        monkeypatch.delitem(sys.modules, name)


def test_broken_tracker_install_is_turned_off_and_the_run_goes_on(
    broken_wandb: None, trackers_reset: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tracked(tmp_path / "out", ("wandb",))
    line = one_warning(capsys.readouterr().err, "wandb")
    assert "RuntimeError: this wandb install is broken" in line
    assert (experiment / "results.json").is_file()
    plain = tracked(tmp_path / "plain", ())
    assert files(experiment, ".safetensors") == files(plain, ".safetensors")  # the same training


def test_log_strict_stops_with_one_line(
    broken_wandb: None, trackers_reset: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = cli_args(tmp_path / "out", command="train", extra=("--log", "wandb", "--log-strict"))
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    line = [line for line in err.splitlines() if line.strip()][-1]
    assert "Traceback" not in err and line.startswith("lottery: error: --log wandb: start failed (RuntimeError")
    assert "without --log-strict the run goes on" in line


def test_unreachable_mlflow_server_is_turned_off_quickly(
    trackers_reset: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tracking server that refuses connections: MLflow's own retries wait about 4 minutes; bounded here."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    for name in (
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    experiment = tracked(tmp_path / "out", ("mlflow",))
    assert time.monotonic() - start < 60
    assert "MlflowException" in one_warning(capsys.readouterr().err, "mlflow")
    assert (experiment / "results.json").is_file()


@pytest.mark.parametrize("case", ["no API key", "unreachable server"])
def test_wandb_failures_are_turned_off(
    case: str, trackers_reset: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_INIT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))  # no login of this machine's user
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc
    if case == "unreachable server":
        monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setattr(loggers, "TIMEOUT", 3.0)  # W&B's own wait is 90 s
    start = time.monotonic()
    try:
        experiment = tracked(tmp_path / "out", ("wandb",))
    finally:
        wandb.teardown()  # W&B keeps this process's settings (this test's server, directories) until told
    assert time.monotonic() - start < 60
    line = one_warning(capsys.readouterr().err, "wandb")
    assert ("UsageError" if case == "no API key" else "CommError") in line
    assert (experiment / "results.json").is_file()


def test_a_logger_that_fails_mid_run_is_turned_off_once(
    trackers_reset: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A logger whose writes fail after it started (a full disk, a server gone): one warning, nothing more."""

    class Failing:
        calls = 0

        def log_metrics(self, metrics: Any, step: int) -> None:
            Failing.calls += 1
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            Failing.calls += 1

    logger = loggers.Guarded("tensorboard", strict=False)
    logger.inner = Failing()
    for step in range(3):
        logger.log_metrics({"a": 1.0}, step)
    logger.close()
    assert Failing.calls == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "lottery: warning: --log tensorboard: logging metrics failed (OSError: [Errno 28] No space left on device); "
        "tensorboard is off for the rest of this process"
    ]
    strict = loggers.Guarded("mlflow", strict=True)
    strict.inner = Failing()
    with pytest.raises(UserError, match=r"--log mlflow: logging metrics failed \(OSError"):
        strict.log_metrics({"a": 1.0}, 0)


# 9. A SIGKILLed image-decoding worker: the pool is replaced (bounded), or the run stops with one line ------------
DIE: dict[str, Any] = {"counter": None, "after": 0, "always": False}  # read by the forked workers


def dying_decode(items: list[imaging.Item], size: int) -> Any:
    """imaging.decode_many in a worker that SIGKILLs itself at its call number `after` + 1 (`always`: and after)."""
    counter = DIE["counter"]
    count = int(counter.read_text() or 0) + 1
    counter.write_text(str(count))
    if count > DIE["after"] and (DIE["always"] or count == DIE["after"] + 1):
        os.kill(os.getpid(), signal.SIGKILL)
    return decode_many(items, size)


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The final weights of the image-folder run, decoded in the training process."""
    out = tmp_path_factory.mktemp("reference")
    assert main(folder_args(out, images, workers=0)) == 0
    (final,) = out.glob("networks/dense/*/final.safetensors")
    return final.read_bytes()


@pytest.fixture
def killer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Decoding workers that die as DIE says, in fresh pools, with this process's restarts counted from 0."""
    monkeypatch.setattr(imaging, "decode_many", dying_decode)
    monkeypatch.setattr(streaming, "_pools", {})
    monkeypatch.setattr(streaming, "_restarts", 0, raising=False)
    monkeypatch.setitem(DIE, "counter", tmp_path / "calls")
    (tmp_path / "calls").write_text("0")
    yield DIE
    for pool in streaming._pools.values():
        pool.shutdown(wait=True)


def final_weights(out: Path) -> bytes:
    (final,) = out.glob("networks/dense/*/final.safetensors")
    return final.read_bytes()


def test_killed_decoding_worker_is_replaced_and_the_run_is_unchanged(
    images: Path, tmp_path: Path, reference: bytes, killer: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    killer.update(after=2, always=False)  # the third batch's worker dies once
    code, _, err = run_cli(folder_args(tmp_path / "out", images, workers=1), capsys)
    assert code == 0 and "Traceback" not in err
    assert err.count("lottery: an image decoding worker process died; restarting the pool of 1 (1/3)") == 1
    assert final_weights(tmp_path / "out") == reference


def test_workers_that_keep_dying_stop_the_run_in_one_line_and_it_resumes_identically(
    images: Path,
    tmp_path: Path,
    reference: bytes,
    killer: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    killer.update(after=3, always=True)
    argv = [*folder_args(tmp_path / "out", images, workers=1), "--checkpoint-every", "1"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.count("lottery: an image decoding worker process died; restarting") == streaming.RESTARTS
    line = err.splitlines()[-1]
    assert line.startswith("lottery: error: image decoding worker processes died 4 times") and "resume" in line
    killer.update(after=10**9)  # workers that live: the same command resumes
    assert main(argv) == 0
    assert "resuming from iteration" in capsys.readouterr().err
    assert final_weights(tmp_path / "out") == reference
