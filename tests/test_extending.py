"""The plugin test: one file registering a model, a dataset, a loss and a stability measure -- the examples of
docs/extending/*.md, concatenated -- run end to end through the CLI (`lottery run --import`, `lottery report`)."""

from __future__ import annotations

import csv
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

from lottery import measures
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.registry import datasets, losses, models

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ("model", "dataset", "loss", "stability-measure")
MASK_PAGES = ("mask-source", "control")  # their examples are in a section "A complete example"
SRC = Path(__file__).resolve().parents[1] / "src"

SPEC = """
[model]
name = "tiny_mlp"
[model.options]
hidden = 16
[dataset]
name = "blobs"
validation_size = 100
[dataset.options]
rows = 500
[training]
loss = "poly1"
optimizer = "adam"
lr = 0.01
batch_size = 50
training_steps = "20it"
eval_every = "10it"
[imp]
levels = 1
rewind = "10it"
[stability]
rewind = ["10it"]
copies = 2
interpolation_points = 5
train_subset = 200
"""


def example(page: str) -> str:
    """The one ```python block of docs/extending/<page>.md: the page's complete example."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "extending" / f"{page}.md").read_text(), re.S)
    assert len(blocks) == 1, page
    return blocks[0]


@pytest.fixture
def own_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The measures a test registers are gone after it (every later stability analysis would compute them)."""
    monkeypatch.setattr(measures.measures, "_items", dict(measures.measures._items))


def test_one_plugin_file_registers_each_kind_and_runs_through_the_cli_and_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], own_measures: None
) -> None:
    plugin = tmp_path / "extending_plugin.py"
    plugin.write_text("\n\n".join(example(page) for page in PAGES))
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "runs"
    assert main(["run", "--import", str(plugin), str(spec), "--out", str(out), "--progress", "log"]) == 0
    experiment = Path(capsys.readouterr().out.strip().splitlines()[-1])

    # The model, dataset and loss are the plugin's: named in the spec with the hash of the plugin file.
    stored = json.loads((experiment / "spec.json").read_text())
    assert (stored["model"]["name"], stored["dataset"]["name"], stored["training"]["loss"]) == (
        "tiny_mlp",
        "blobs",
        "poly1",
    )
    hashes = {stored["model"]["source_hash"], stored["dataset"]["source_hash"], stored["training"]["loss_source_hash"]}
    assert len(hashes) == 1 and hashes.pop().startswith("sha256:")  # one file defines all three
    for kind, name in (("model", "tiny_mlp"), ("dataset", "blobs"), ("loss", "poly1")):
        entry = {"model": models, "dataset": datasets, "loss": losses}[kind].find(name)
        assert entry is not None and not entry.builtin and entry.source_file == plugin.resolve()
    # The network trained is tiny_mlp (Flatten, Linear(8 -> 16), ReLU, Linear(16 -> 3)) on blobs' 8 features, 3 classes.
    weights = load_file(experiment / "replicate_0" / "level_0" / "final.safetensors")
    assert {name: tuple(w.shape) for name, w in weights.items()} == {
        "1.weight": (16, 8),
        "1.bias": (16,),
        "3.weight": (3, 16),
        "3.bias": (3,),
    }
    results = json.loads((experiment / "results.json").read_text())
    assert [r["kind"] for r in results["runs"]] == ["dense", "imp"]
    assert results["runs"][0]["final_test_accuracy"] > 0.6  # three separated blobs: learnable in 20 steps

    # The measure is computed for every pair, between copies and (pruning=True) between full network and subnetwork.
    analyses = sorted(experiment.glob("replicate_0/rewind_10it/stability/level_*/analysis.json"))
    assert len(analyses) == 2  # levels 0 (the dense network) and 1 (IMP)
    points = [p for path in analyses for p in json.loads(path.read_text())["points"]]
    assert {p["kind"] for p in points} == {"dense", "imp"}
    for p in points:
        for pair in p["data_order"]["pairs"]:
            assert -1 <= pair["cosine"] <= 1 and pair["l2"] > 0
        assert p["data_order"]["cosine"]["min"] <= p["data_order"]["cosine"]["mean"] <= p["data_order"]["cosine"]["max"]
    imp = next(p for p in points if p["kind"] == "imp")
    assert len(imp["pruning"]["pairs"]) == 2 and all(0 < pair["cosine"] <= 1 for pair in imp["pruning"]["pairs"])
    # By hand: the cosine of the first data-order pair's copies, from their stored weights, over the IMP mask.
    pair = imp["data_order"]["pairs"][0]
    mask = load_file(experiment / pair["a"] / "mask.safetensors")
    a, b = (load_file(experiment / pair[x] / "final.safetensors") for x in ("a", "b"))
    va = torch.cat([a[n].double().flatten()[mask[n].bool().flatten()] for n in mask])
    vb = torch.cat([b[n].double().flatten()[mask[n].bool().flatten()] for n in mask])
    assert pair["cosine"] == pytest.approx(float(va @ vb / (va.norm() * vb.norm())), rel=1e-9)

    with open(experiment / "stability.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert "cosine" in rows[0] and all(row["cosine"] for row in rows)
    assert {row["measure"] for row in rows} == {"data_order", "pruning"}

    assert main(["report", str(experiment)]) == 0
    report = experiment / "report"
    page = (report / "report.html").read_text()
    assert "cosine similarity" in page and "<h3>similarity</h3>" in page  # its column, in its group's table
    assert (report / "stability_cosine_vs_rewind.png").read_bytes().startswith(b"\x89PNG")
    predictors = {row["measure"] for row in results["predictors"]["table"]}
    assert {"data_order.cosine", "pruning.cosine"} <= predictors


def test_every_extension_kind_from_one_plugin_file_in_a_fresh_process(tmp_path: Path) -> None:
    """Issue 25's plugin test: one file holding the complete examples of every page of docs/extending/ -- a model, a
    dataset, a loss, a stability measure, a mask source and a control kind -- run by `lottery run --import` and
    `lottery report` in a fresh process (so the registrations of other tests are not there): each one's results
    reach results.json, analysis.json, stability.csv and report.html."""
    from test_extending_masks import example as complete_example

    plugin = tmp_path / "every_kind.py"
    plugin.write_text(
        "\n\n".join([*(example(page) for page in PAGES), *(complete_example(f"{page}.md") for page in MASK_PAGES)])
    )
    spec = tmp_path / "spec.toml"
    spec.write_text(
        SPEC.replace("[stability]", '[controls]\nkinds = ["random_sign_flip"]\n[stability]')
        + 'controls = ["random_sign_flip"]\n'
        + '[masks]\nsources = ["jittered_magnitude"]\ndensities = [0.5]\njitter = 0.05\n'
    )
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "lottery"]
    done = subprocess.run(
        [*command, "run", "--import", str(plugin), str(spec), "--out", str(out), "--progress", "log"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    experiment = Path(done.stdout.strip().splitlines()[-1])
    results = json.loads((experiment / "results.json").read_text())
    kinds = {r["kind"] for r in results["runs"]}
    assert {"dense", "imp", "random_sign_flip", "jittered_magnitude"} <= kinds  # the control and the mask source
    stored = json.loads((experiment / "spec.json").read_text())
    assert (stored["model"]["name"], stored["dataset"]["name"], stored["training"]["loss"]) == (
        "tiny_mlp",
        "blobs",
        "poly1",
    )
    analyses = experiment.glob("replicate_0/rewind_10it/stability/level_*/analysis.json")
    points = [p for path in analyses for p in json.loads(path.read_text())["points"]]
    assert {"dense", "imp", "random_sign_flip"} <= {p["kind"] for p in points}
    assert all("cosine" in pair for p in points for pair in p["data_order"]["pairs"])  # the plugin measure
    with open(experiment / "stability.csv", newline="") as file:
        assert {row["kind"] for row in csv.DictReader(file)} >= {"random_sign_flip"}
    done = subprocess.run(
        [*command, "report", str(experiment)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    page = (experiment / "report" / "report.html").read_text()
    # read without --import: the measure under its column name, the control and the mask source under their kinds
    assert [text for text in ("cosine", "random_sign_flip", "jittered_magnitude") if text not in page] == []


def test_readers_show_a_measure_they_do_not_know_under_its_column() -> None:
    """A report of an experiment whose plugin measure is not imported: its column is found in the stored results."""
    stats = {"mean": 0.5, "min": 0.4, "max": 0.6}
    stored = {"pairs": [], "l2": stats, "not_imported": stats, "../escape": stats, "stable": True}
    points = [{"data_order": stored, "pruning": None}]
    found = {m.column: m for m in measures.present(points)}
    assert list(found)[: len(measures.registered())] == [m.column for m in measures.registered()]
    assert found["not_imported"].label == "not_imported" and found["not_imported"].parts() == ("data_order",)
    assert "not_imported" in measures.pair_fields(points) and "stable" not in found
    assert "../escape" not in found  # not a column (columns name the report's figure files)


def test_a_measure_is_refused_in_one_line_where_it_clashes_or_fails(own_measures: None) -> None:
    with pytest.raises(UserError, match="name of a built-in"):
        measures.register_measure("l2", label="mine", group="distance")(lambda pair: 0.0)
    with pytest.raises(UserError, match="column 'l2' is the column of 'l2'"):
        measures.register_measure("my_l2", label="mine", group="distance", column="l2")(lambda pair: 0.0)
    with pytest.raises(UserError, match="reserved"):
        measures.register_measure("my_a", label="mine", group="distance", column="a")(lambda pair: 0.0)
    with pytest.raises(UserError, match="letters, digits"):
        measures.register_measure("my measure", label="mine", group="distance")(lambda pair: 0.0)
    broken = measures.Measure("broken", lambda pair: 1 / 0, "broken", "other", "broken")
    with pytest.raises(UserError, match="stability measure 'broken' failed: ZeroDivisionError"):
        broken.value(None)  # type: ignore[arg-type]
    assert "my_l2" not in measures.measures and "broken" not in measures.measures


FAMILIES = [entry for entry in (models.find(name) for name in models.builtin_names()) if entry and entry.pattern]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_name_a_built_in_family_builds_is_built_in_and_closed_to_plugins(data: st.DataObject) -> None:
    """One registry holds built-ins and plugins: a name any built-in family's pattern matches is built in, found
    there, and refused to a plugin; a name no family matches is neither."""
    family = data.draw(st.sampled_from(FAMILIES))
    name = data.draw(st.from_regex(family.pattern, fullmatch=True))
    assert models.is_builtin(name) and models.find(name) is not None and models.find(name).builtin
    with pytest.raises(UserError, match="name of a built-in model"):
        models.register(name)(lambda input_shape, num_classes: torch.nn.Linear(1, num_classes))
    other = data.draw(st.from_regex(r"plugin_[a-z]{1,8}", fullmatch=True))
    assert not models.is_builtin(other) and other not in models


def test_a_factory_receives_its_spec_group_where_its_signature_names_it() -> None:
    """One signature per kind: what lottery passes is what the factory's signature names (`spec`, input_shape,
    num_classes, its options), built-in or plugin."""
    from lottery.data import load
    from lottery.models import build
    from lottery.spec import DatasetSpec, ModelSpec, TrainingSpec
    from lottery.training.losses import make

    x, y = torch.arange(24.0).reshape(12, 2), torch.arange(12) % 2
    if datasets.find("ext_rooted") is None:

        @datasets.register("ext_rooted")
        def rooted(spec: DatasetSpec, scale: float = 1.0) -> dict:
            assert spec.root == "/somewhere"  # a factory that reads its spec may take dataset.root
            return {"train": (x * scale, y), "test": (x, y)}

        @datasets.register("ext_plain")
        def plain() -> dict:
            return {"train": (x, y), "test": (x, y)}

        @models.register("ext_wide_[0-9]+", pattern=r"ext_wide_[0-9]+")
        def wide(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
            return torch.nn.Linear(input_shape[0] * int(spec.name.rsplit("_", 1)[1]), num_classes)

        @losses.register("ext_scaled")
        def scaled(output: torch.Tensor, target: torch.Tensor, reduction: str = "mean", *, spec: TrainingSpec):
            return (1 + spec.label_smoothing) * torch.nn.functional.cross_entropy(output, target, reduction=reduction)

    splits = load(DatasetSpec(name="ext_rooted", root="/somewhere", validation_size=2, options={"scale": 2.0}))
    assert splits.num_classes == 2 and len(splits.train_x) == 10
    with pytest.raises(UserError, match="dataset.root applies to built-in datasets"):
        load(DatasetSpec(name="ext_plain", root="/somewhere", validation_size=2))
    with pytest.raises(UserError, match=r"\[dataset.options\] do not fit"):
        load(DatasetSpec(name="ext_plain", validation_size=2, options={"rows": 3}))
    model = build(ModelSpec(name="ext_wide_3"), (2,), 5, init_seed=0)  # a family: the name is read from spec
    assert model.weight.shape == (5, 6)
    with pytest.raises(UserError, match="model.init applies to lottery.models.Network models"):
        build(ModelSpec(name="ext_wide_3", init="glorot_normal"), (2,), 5, init_seed=0)
    assert torch.equal(
        build(ModelSpec(name="ext_wide_3"), (2,), 5, 7).weight, build(ModelSpec(name="ext_wide_3"), (2,), 5, 7).weight
    )
    output, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    plain_loss = torch.nn.functional.cross_entropy(output, target)
    smoothing = TrainingSpec(loss="ext_scaled", label_smoothing=0.5)  # (built directly: the spec's checks aside)
    torch.testing.assert_close(make(TrainingSpec(loss="ext_scaled"))(output, target), plain_loss)
    torch.testing.assert_close(make(smoothing)(output, target), 1.5 * plain_loss)
