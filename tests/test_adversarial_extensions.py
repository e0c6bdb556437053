"""A hostile and a careless researcher on the extension points: plugins changed between runs, registered without a
source file, ... Each test failed before the fix it guards."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import lottery
from conftest import run_tiny
from lottery import events, measures, plugins, seeding
from lottery.cli.main import main
from lottery.data.base import load
from lottery.errors import UserError
from lottery.experiments.recipes import plugin_code
from lottery.extension_points import control_kinds, mask_sources, register_control, register_mask_source
from lottery.pruning import Mask
from lottery.registry import models
from lottery.spec import DatasetSpec, resolve

MODEL = """
from torch import nn
import lottery


@lottery.register_model("{name}")
def {name}(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.{activation}(), nn.Linear(8, num_classes))
"""


def spec_naming(model: str):  # noqa: ANN201
    spec, _ = resolve(preset=None, overrides=[f"model.name={model}", "dataset.name=synthetic"])
    return spec


def test_a_plugin_file_changed_and_imported_again_runs_its_new_code(tmp_path: Path) -> None:
    """`lottery run --import FILE` twice in one process (a notebook, a test) with FILE edited in between: the second
    run builds the new model, and the hash it records is the new code's (before: the old model ran under the new
    code's hash, so the store held ReLU networks named by Tanh code)."""
    module = tmp_path / "hostile_changed_model.py"
    module.write_text(MODEL.format(name="hostile_changed", activation="ReLU"))
    plugins.import_modules([str(module)])
    first = plugins.stamp(spec_naming("hostile_changed")).model.source_hash
    module.write_text(MODEL.format(name="hostile_changed", activation="Tanh"))
    plugins.import_modules([str(module)])
    second = plugins.stamp(spec_naming("hostile_changed")).model.source_hash
    built = models.get("hostile_changed")(input_shape=(1, 28, 28), num_classes=10)
    assert isinstance(built[2], nn.Tanh) and first != second


def test_a_plugin_file_edited_but_not_imported_again_is_refused(tmp_path: Path) -> None:
    """The file on disk is not the code the process runs: hashing the file would name old code's networks by the new
    code; refused in one line."""
    module = tmp_path / "hostile_edited_model.py"
    module.write_text(MODEL.format(name="hostile_edited", activation="ReLU"))
    plugins.import_modules([str(module)])
    plugins.stamp(spec_naming("hostile_edited"))
    module.write_text(MODEL.format(name="hostile_edited", activation="Tanh"))
    with pytest.raises(UserError, match="changed on disk since it was imported"):
        plugins.stamp(spec_naming("hostile_edited"))


def test_a_plugin_without_a_source_file_is_refused() -> None:
    """A model defined in an interactive session (`exec`, `<stdin>`) has no file to hash: before, its hash was its name
    ('builtin:<name>'), so a redefined model reused the networks of the old one."""
    for activation in ("ReLU", "Tanh"):
        namespace: dict = {}
        exec(compile(MODEL.format(name="hostile_repl", activation=activation), "<stdin>", "exec"), namespace)
        with pytest.raises(UserError, match="has no source file"):
            plugins.stamp(spec_naming("hostile_repl"))


SOURCE = """
import lottery


@lottery.register_mask_source("{name}", stream={stream})
def {name}(inp):
    return {{name: value.abs() * {scale} for name, value in inp.weights.items()}}
"""


def test_a_mask_source_edited_after_import_names_no_network(tmp_path: Path, own_registries: None) -> None:
    """A plugin mask source's recipe records its code: the code it was imported with, never a later file's."""
    module = tmp_path / "hostile_source.py"
    module.write_text(SOURCE.format(name="hostile_source", stream=7301, scale=1))
    plugins.import_modules([str(module)])
    score = mask_sources.get("hostile_source").score
    assert plugin_code(score).startswith("sha256:")
    module.write_text(SOURCE.format(name="hostile_source", stream=7301, scale=2))
    with pytest.raises(UserError, match="changed on disk since it was imported"):
        plugin_code(score)


@pytest.fixture
def own_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The measures a test registers are gone after it (every later analysis would compute them)."""
    monkeypatch.setattr(measures.measures, "_items", dict(measures.measures._items))


@pytest.fixture
def own_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test registers is gone after it (later tests list every control kind and mask source)."""
    for registry in (control_kinds, mask_sources):
        monkeypatch.setattr(registry, "_items", dict(registry._items))
    monkeypatch.setattr(seeding, "STREAMS", dict(seeding.STREAMS))


def score(inp: object) -> dict:
    return {}


@pytest.mark.parametrize(
    ("register", "name", "stream"),
    [
        (register_control, "rigl", 7311),  # a [dynamic] method's rows
        (register_control, "set_rewound", 7312),
        (register_mask_source, "dense", 7313),  # the dense network's rows
        (register_mask_source, "imp", 7314),
        (register_control, "magnitude", 7315),  # a mask source's rows
        (register_control, "snip_invert", 7316),  # an ablation's rows
        (register_mask_source, "random_prune", 7317),  # a control kind's rows
    ],
)
def test_a_plugin_may_not_name_another_kind_of_runs(
    register: Callable, name: str, stream: int, own_registries: None
) -> None:
    """Results rows, figures, `export --kind` and `stability.dynamic`'s summary tell runs apart by `kind`: before, a
    plugin control named 'rigl' was accepted and its rows mixed with RigL's."""
    with pytest.raises(ValueError, match="already names another kind of runs"):
        register(name, stream=stream)(score)
    assert stream not in seeding.STREAMS.values()


def test_a_mask_source_whose_ablation_is_a_control_is_refused(own_registries: None) -> None:
    register_control("hostile_ctl_reinit", stream=7321)(score)
    with pytest.raises(ValueError, match="'hostile_ctl_reinit' already names"):
        register_mask_source("hostile_ctl", stream=7322)(score)


def test_a_spec_whose_kinds_collide_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The built-ins meet too: the mask source 'random' with the ablation 'reinit' runs kind 'random_reinit', the
    control kind's name; before, both ran and shared one kind in results.json, the table and the figures."""
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[imp]\nlevels = 1\n[controls]\nkinds = ["random_reinit"]\n'
        '[masks]\nsources = ["random"]\nablations = ["reinit"]\ndensities = [0.5]\n'
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'random_reinit' would name two kinds of runs" in err
    assert not (tmp_path / "runs").exists()


ROOT = Path(__file__).resolve().parents[1]


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_of_the_readme_and_docs_exists() -> None:
    """A link of README.md or docs/**/*.md to a file names one that exists, and its #anchor a heading there (before:
    docs/dynamic.md linked api.md#dynamic-sparsity, a heading renamed)."""
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", link):
                continue  # https:, mailto:
            target, _, anchor = link.partition("#")
            file = (page.parent / target) if target else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", file.read_text(), re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, broken


def test_the_readme_python_example_runs_as_written() -> None:
    """README's Python example, copied verbatim, runs (before: `torch`, `model`, `loss` and `evaluate` were
    undefined, and level 0, which has no controls, raised KeyError on `level.controls['random_prune_seed0']`)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
        assert namespace["level"].level == 3 and 0.5 < namespace["level"].mask.density < 0.52


PLUGIN = """
import torch
from torch import nn
import lottery


@lottery.register_model("hostile_mlp")
def hostile_mlp(input_shape, num_classes, hidden=8):
    return nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


@lottery.register_dataset("hostile_table")
def hostile_table(rows=200):
    g = torch.Generator().manual_seed(0)
    return {"train": (torch.randn(rows, 4, generator=g), torch.randint(2, (rows,), generator=g)),
            "test": (torch.randn(50, 4, generator=g), torch.randint(2, (50,), generator=g))}


@lottery.register_loss("hostile_loss")
def hostile_loss(output, target, reduction="mean"):
    raise ValueError("this loss is broken")
"""


@pytest.fixture(scope="module")
def hostile_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One plugin file for the module's tests (the same names from two files would be registered twice)."""
    module = tmp_path_factory.mktemp("plugin") / "hostile_plugin.py"
    module.write_text(PLUGIN)
    return module


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ('model.options.hidden="abc"', "plugin model 'hostile_mlp' ("),
        ("dataset.options.rows=-5", "plugin dataset 'hostile_table' ("),
        ("training.loss=hostile_loss", "plugin loss 'hostile_loss' ("),
    ],
)
def test_a_plugin_failing_on_its_options_is_one_line(
    tmp_path: Path, hostile_plugin: Path, capsys: pytest.CaptureFixture[str], setting: str, words: str
) -> None:
    """Options of the wrong type reach the plugin's own code, which raises: before, a traceback from torch."""
    module = hostile_plugin
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[model]\nname = "hostile_mlp"\n[dataset]\nname = "hostile_table"\nvalidation_size = 50\n'
        '[training]\nbatch_size = 50\ntraining_steps = "4it"\neval_every = "2it"\n'
    )
    argv = ["train", "--import", str(module), str(spec), "--set", setting, "--out", str(tmp_path / "runs")]
    assert main([*argv, "--progress", "log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lottery: error: ") and words in err and "failed: " in err and "PosixPath" not in err


@pytest.mark.parametrize("code", ["sys.exit(0)", "sys.exit()", "sys.exit('usage: ...')"])
def test_a_plugin_that_exits_while_imported_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], code: str):
    """A plugin script that calls sys.exit at import (a script's own argument parsing, ...): before, `lottery run`
    ended with exit status 0 having run nothing."""
    module = tmp_path / "hostile_exits.py"
    module.write_text(f"import sys\n{code}\n")
    spec = tmp_path / "spec.toml"
    spec.write_text("[imp]\nlevels = 1\n")
    assert main(["run", "--import", str(module), str(spec), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exited (sys.exit(" in err and not (tmp_path / "runs").exists()


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))


@pytest.mark.parametrize(
    ("returns", "words"),
    [
        (lambda inp: 1 / 0, "mask source 'hostile_bad_source' failed: ZeroDivisionError"),
        (lambda inp: {}, "for 0.weight (shape (6, 4)) it returned NoneType"),
        (lambda inp: {name: torch.ones(3) for name in inp.names}, "it returned a tensor of shape (3,)"),
    ],
)
def test_a_plugin_mask_source_that_fails_or_returns_garbage_is_one_line(
    own_registries: None, returns: Callable, words: str
) -> None:
    """Before: the plugin's ZeroDivisionError, a KeyError or 'weights and mask shapes differ' as a traceback."""
    register_mask_source("hostile_bad_source", stream=7331)(returns)
    with pytest.raises(UserError, match=re.escape(words)):
        lottery.scores(tiny_model(), "hostile_bad_source")


@pytest.mark.parametrize(
    ("returns", "words"),
    [
        (lambda inp: 1 / 0, "control kind 'hostile_bad_control' failed: ZeroDivisionError"),
        (lambda inp: {"mask": inp.mask}, "must return a lottery.ControlStart, got dict"),
        (lambda inp: lottery.ControlStart(Mask({}), inp.rewound), "ControlStart's mask needs 0.weight of shape"),
    ],
)
def test_a_plugin_control_that_fails_or_returns_garbage_is_one_line(
    own_registries: None, returns: Callable, words: str
) -> None:
    """Before: the plugin's own error, or an AttributeError deep in the engine, as a traceback."""
    register_control("hostile_bad_control", stream=7332)(returns)
    x, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 2

    def train_fn(model: nn.Module, mask: Mask, start: int, end: int) -> dict:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        lottery.attach(mask, optimizer)
        for _ in range(start, end):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return {}

    with pytest.raises(UserError, match=re.escape(words)):
        list(lottery.imp(tiny_model(), train_fn, levels=1, iterations=4, controls=["hostile_bad_control"]))


class Vandal:
    """A subscriber that edits what it is given."""

    def on_evaluate(self, event: events.Evaluation) -> None:
        for row in event.rows:
            row["accuracy"] = -1.0

    def on_results(self, event: events.ResultsWritten) -> None:
        event.results["runs"].clear()


def test_a_subscriber_that_edits_its_events_changes_no_result(store: Path) -> None:
    """'A subscriber only reads': before, the rows it was given were the loop's own (metrics.jsonl is rewritten from
    them at each evaluation) and the results dict the one run_experiment returns."""
    with events.subscribed(Vandal()):
        experiment, results = run_tiny(store, "imp.levels=0")
    assert [r["kind"] for r in results["runs"]] == ["dense"]
    rows = [json.loads(line) for line in (experiment.path / "replicate_0" / "level_0" / "metrics.jsonl").open()]
    assert rows and all(r.get("accuracy", 0.0) >= 0 for r in rows)


def hostile_rows(dtype: torch.dtype, bad: float | None = None) -> dict:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(120, 5, generator=g) * 255).to(dtype)
    if bad is not None:
        x[3, 1] = bad
    return {"train": (x, torch.arange(120) % 2), "test": (x[:30].clone(), torch.arange(30) % 2)}


@lottery.register_dataset("hostile_nan")
def hostile_nan() -> dict:
    return hostile_rows(torch.float32, math.nan)


@lottery.register_dataset("hostile_inf")
def hostile_inf() -> dict:
    return hostile_rows(torch.float64, -math.inf)


@pytest.mark.parametrize("name", ["hostile_nan", "hostile_inf"])
def test_a_plugin_dataset_with_non_finite_inputs_is_refused(name: str) -> None:
    """Before: NaN inputs were normalised into NaN features and the run reported as diverged."""
    with pytest.raises(UserError, match="'train' inputs are not all finite"):
        load(DatasetSpec(name=name, validation_size=20))


@pytest.mark.parametrize(
    ("tag", "pruning", "taken"),
    [("angle_data_order", False, "angle_degrees"), ("angle", True, "angle_degrees"), ("l2_pruning", False, "l2")],
)
def test_a_measure_may_not_take_another_measures_tracker_name(
    own_measures: None, tag: str, pruning: bool, taken: str
) -> None:
    """Before: accepted, and the two measures wrote one scalar (`stability/<kind>_k<k>/angle`), each overwriting the
    other in TensorBoard, W&B and MLflow."""
    with pytest.raises(UserError, match=f"is that of '{taken}'"):
        lottery.register_measure("hostile_tagged", label="x", group="x", tag=tag, pruning=pruning)(lambda pair: 1.0)
    assert "hostile_tagged" not in measures.measures


class HostileFactory:
    """A callable instance as a model factory."""

    def __call__(self, input_shape: tuple, num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))


def hostile_wide(input_shape: tuple, num_classes: int, width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, num_classes))


@pytest.mark.parametrize(
    ("name", "factory"),
    [("hostile_partial", functools.partial(hostile_wide, width=8)), ("hostile_object", HostileFactory())],
)
def test_a_partial_or_a_callable_object_is_hashed_by_its_defining_file(name: str, factory: Callable) -> None:
    """A factory defined in a file but not a plain function has that file's code as its identity (not refused as
    having no source file, nor named by a repr holding a memory address, which no later process would reuse)."""
    lottery.register_model(name)(factory)
    stamped = plugins.stamp(spec_naming(name)).model.source_hash
    assert stamped == plugins.stamp(spec_naming(name)).model.source_hash and stamped.startswith("sha256:")
    assert models.get(name).source_file == Path(__file__).resolve()


CELL = """
import lottery


@lottery.register_control("hostile_cell_control", stream=7341)
def hostile_cell_control(inp):
    return {body}
"""


def test_a_control_redefined_in_another_cell_is_registered_twice(tmp_path: Path, own_registries: None) -> None:
    """A notebook cell run again with changed code (ipykernel gives each version its own file, in one module
    `__main__`): before, the second registration was taken for the first one again and silently dropped, so the
    old code kept running."""

    def run(cell: Path) -> None:
        exec(compile(cell.read_text(), str(cell), "exec"), {"__name__": "hostile_notebook"})

    cells = [tmp_path / "cell_0.py", tmp_path / "cell_1.py"]
    for cell, body in zip(cells, ["1", "2"], strict=True):
        cell.write_text(CELL.format(body=body))
    run(cells[0])
    run(cells[0])  # the same cell again: the same definition
    with pytest.raises(UserError, match="registered twice"):
        run(cells[1])
    assert control_kinds.get("hostile_cell_control").start(None) == 1


def test_every_python_block_of_the_readme_and_the_extending_pages_is_python() -> None:
    """A reader copies a ```python block as it is: before, the registration signatures of control.md and
    mask-source.md (`register_control(name, *, stream, ...)`) were python blocks that are not Python (now text)."""
    pages = [ROOT / "README.md", ROOT / "docs" / "extending.md", *sorted((ROOT / "docs" / "extending").glob("*.md"))]
    for page in pages:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            compile(block, str(page), "exec")  # SyntaxError: a block that is not Python


def test_a_plugin_measure_that_edits_its_pair_in_place_changes_nothing_else(own_measures: None) -> None:
    """A careless `w -= pair.b.final[name]` (meant `w - ...`): before, copy a's weights were edited for every later
    pair and curve that shares it (the built-in l2 of pair (0, 2) went from 0.032 to 11.9 on a tiny LeNet)."""

    @lottery.register_measure("hostile_careless", label="careless", group="odd", pruning=True)
    def careless(pair: measures.Pair) -> float:
        for name, w in pair.a.final.items():
            w -= pair.b.final[name]
        pair.a.log_probabilities.zero_()
        pair.mask["w"].logical_not_()
        pair.reference["w"].zero_()
        pair.curve["test_error"].append(100.0)
        return float(sum(w.norm() for w in pair.a.final.values()))

    def trained(value: float) -> measures.Trained:
        final = {"w": torch.full((3, 2), value)}
        return measures.Trained(final, {"w": torch.zeros(3, 2)}, lambda: torch.full((4, 2), -value), lambda: None)

    a, b = trained(1.0), trained(0.25)
    mask, reference, curve = (
        Mask({"w": torch.ones(3, 2, dtype=torch.bool)}),
        {"w": torch.ones(3, 2)},
        {"test_error": [1.0]},
    )
    pair = measures.Pair("data_order", a, b, mask, reference, curve)
    assert measures.measures.get("hostile_careless").value(pair) == pytest.approx(0.75 * 6**0.5)
    assert torch.equal(a.final["w"], torch.full((3, 2), 1.0)) and torch.equal(
        a.log_probabilities, torch.full((4, 2), -1.0)
    )
    assert bool(mask["w"].all()) and torch.equal(reference["w"], torch.ones(3, 2)) and curve == {"test_error": [1.0]}


def test_a_plugin_control_that_edits_its_input_in_place_changes_no_other_run(own_registries: None) -> None:
    """A careless `w.mul_(signs)` on `inp.rewound` and `inp.mask.logical_not_()`: before, lottery.imp's W_k (every
    later level's start) and the level's mask (the next level's pruning) were edited."""

    def careless(inp: lottery.ControlInput) -> lottery.ControlStart:
        for w in inp.rewound.values():
            w.mul_(-1)
        start = lottery.ControlStart(Mask({n: m.clone() for n, m in inp.mask.items()}), inp.mask.apply_to(inp.rewound))
        for m in inp.mask.values():
            m.logical_not_()
        for w in inp.initial().values():
            w.zero_()
        return start

    register_control("hostile_careless_control", stream=7351)(careless)
    x, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 2

    def train_fn(model: nn.Module, mask: Mask, start: int, end: int) -> dict:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        lottery.attach(mask, optimizer)
        for _ in range(start, end):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return {}

    def levels(controls: list[str]) -> list:
        return list(lottery.imp(tiny_model(), train_fn, levels=2, iterations=6, rewind=2, controls=controls))

    plain, with_control = levels([]), levels(["hostile_careless_control"])
    for a, b in zip(plain, with_control, strict=True):
        assert all(torch.equal(a.mask[n], b.mask[n]) for n in a.mask)
        assert all(torch.equal(a.start[n], b.start[n]) and torch.equal(a.final[n], b.final[n]) for n in a.final)


@pytest.mark.parametrize("label", [r"$\lVert a - b \rVert$", r"$x_{1$", None])
def test_a_measure_whose_label_no_figure_can_draw_is_refused(own_measures: None, label: object) -> None:
    """Before: registered, and `lottery.reports.write_report` (with the plugin imported) died in matplotlib's
    mathtext parser with a traceback."""
    with pytest.raises(UserError, match="stability measure 'hostile_labelled'"):
        lottery.register_measure("hostile_labelled", label=label, group="x")(lambda pair: 1.0)


@pytest.mark.parametrize("label", [r"$\ell_2$ distance", "cost in $", "plain"])
def test_a_measure_label_with_valid_or_no_math_is_accepted(own_measures: None, label: str) -> None:
    lottery.register_measure("hostile_labelled", label=label, group="x")(lambda pair: 1.0)
    assert measures.measures.get("hostile_labelled").label == label


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"label": r"$\lVert x\rVert$"}, "is not matplotlib mathtext"),
        ({"colormap": "NotAColourMap"}, "is not a matplotlib colour map"),
        ({"linestyle": "~~"}, "is not a matplotlib line style"),
    ],
)
def test_a_control_no_figure_can_draw_is_refused(own_registries: None, options: dict, words: str) -> None:
    """Before: registered, and the report's figures died in matplotlib with a traceback."""
    with pytest.raises(UserError, match=words):
        register_control("hostile_drawn", stream=7361, **options)(score)
    assert "hostile_drawn" not in control_kinds


@lottery.register_dataset("hostile_classes")
def hostile_classes(num_classes: object = 2) -> dict:
    return {**hostile_rows(torch.float32), "num_classes": num_classes}


@pytest.mark.parametrize("num_classes", ["2", 0, 2.0, True])
def test_a_plugin_dataset_with_a_bad_num_classes_is_refused(num_classes: object) -> None:
    """Before: num_classes = "2" was a TypeError traceback ('>=' between int and str), 0 'labels must lie in 0..-1'."""
    with pytest.raises(UserError, match="num_classes must be a whole number >= 1"):
        load(DatasetSpec(name="hostile_classes", validation_size=20, options={"num_classes": num_classes}))


MISMATCH_PLUGIN = """
import torch
from torch import nn
import lottery


@lottery.register_dataset("mismatch_u8")
def mismatch_u8():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (120, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (120,), generator=g)
    return {"train": (x, y), "test": (x[:30], y[:30])}


@lottery.register_dataset("mismatch_float")
def mismatch_float():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (120,), generator=g)
    return {"train": (x, y), "test": (x[:30], y[:30])}


@lottery.register_model("mismatch_fixed")
def mismatch_fixed(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))
"""


@pytest.fixture(scope="module")
def mismatch_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    module = tmp_path_factory.mktemp("plugin") / "mismatch_plugin.py"
    module.write_text(MISMATCH_PLUGIN)
    return module


@pytest.mark.parametrize(
    ("model", "dataset", "words"),
    [
        ("lenet_300_100", "mismatch_u8", "(shape (1, 8, 8), integer (token ids"),
        ("mismatch_fixed", "mismatch_float", "shapes cannot be multiplied (2x64 and 100x3)"),
    ],
)
def test_a_model_that_cannot_take_the_datasets_inputs_is_one_line_before_anything_is_written(
    tmp_path: Path, mismatch_plugin: Path, capsys: pytest.CaptureFixture[str], model: str, dataset: str, words: str
) -> None:
    """Before: torch's RuntimeError from the first training step, as a traceback, after the experiment was written."""
    module = mismatch_plugin
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'[model]\nname = "{model}"\n[dataset]\nname = "{dataset}"\nvalidation_size = 20\n'
        '[training]\nbatch_size = 20\ntraining_steps = "4it"\n[imp]\nlevels = 1\n'
    )
    argv = ["run", "--import", str(module), str(spec), "--out", str(tmp_path / "runs")]
    assert main([*argv, "--progress", "log"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"lottery: error: model '{model}' cannot train on dataset")
    assert words in err and not (tmp_path / "runs").exists()
