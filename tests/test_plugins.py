"""Plugin models, datasets and losses: `--import` on the CLI, options tables, source hashes in the run's identity."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lottery import plugins
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.spec import resolve, spec_hash

PLUGIN = """
import torch
from torch import nn
from torch.utils.data import TensorDataset

import lottery.plugins


@lottery.plugins.register_model("{prefix}mlp")
def mlp(input_shape, num_classes, hidden=16):
    return nn.Sequential(nn.Linear(input_shape[0], hidden), nn.{activation}(), nn.Linear(hidden, num_classes))


@lottery.plugins.register_dataset("{prefix}table")
def table(rows=300, features=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows + 100, features, generator=g, dtype=torch.float64) * 3 + 5
    y = (x[:, 0] > 5).long() + (x[:, 1] > 5).long()
    return {{"train": TensorDataset(x[:rows], y[:rows]), "test": (x[rows:], y[rows:]), "num_classes": 3}}
"""

SPEC = """
[model]
name = "{prefix}mlp"
[model.options]
hidden = 12
[dataset]
name = "{prefix}table"
validation_size = 50
[dataset.options]
rows = 250
[training]
optimizer = "adamw"
lr = 0.01
betas = [0.8, 0.99]
weight_decay = 0.01
batch_size = 25
training_steps = "30it"
eval_every = "10it"
schedule = "cosine"
[imp]
levels = 1
"""


def write_plugin(tmp_path: Path, prefix: str, activation: str = "ReLU") -> tuple[Path, Path]:
    module = tmp_path / f"{prefix}plugin.py"
    module.write_text(PLUGIN.format(prefix=prefix, activation=activation))
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(prefix=prefix))
    return module, spec


def test_tabular_plugin_end_to_end_through_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A module in tmp_path registering an MLP and a TensorDataset: `lottery run --import` trains the dense network
    and an IMP level; the plugin's source hash is in spec.json; a changed model (ReLU -> Tanh) gets a new
    experiment and retrains, never the old results."""
    module, spec = write_plugin(tmp_path, "e2e_")
    out = tmp_path / "runs"
    argv = ["run", "--import", str(module), str(spec), "--out", str(out), "--progress", "log"]
    assert main(argv) == 0
    first = Path(capsys.readouterr().out.strip().splitlines()[-1])
    stored = json.loads((first / "spec.json").read_text())
    assert stored["model"]["source_hash"].startswith("sha256:")
    assert stored["model"]["options"] == {"hidden": 12} and stored["dataset"]["options"] == {"rows": 250}
    assert stored["dataset"]["source_hash"] == stored["model"]["source_hash"]  # one module defines both
    results = json.loads((first / "results.json").read_text())
    assert [r["kind"] for r in results["runs"]] == ["dense", "imp"]
    assert results["runs"][0]["final_test_accuracy"] > 0.5  # 3 classes; learnable from two features
    weights = first / "replicate_0" / "level_0" / "final.safetensors"
    assert weights.is_file()

    module.write_text(PLUGIN.format(prefix="e2e_", activation="Tanh"))  # a changed model, same names
    assert main(argv) == 0
    second = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert second != first and (second / "replicate_0" / "level_0" / "final.safetensors").is_file()
    assert json.loads((second / "spec.json").read_text())["model"]["source_hash"] != stored["model"]["source_hash"]

    # The first experiment's spec.toml names the old code's hash: rerunning it with the changed code is refused.
    copied = tmp_path / "copied.toml"
    copied.write_text((first / "spec.toml").read_text())
    assert main(["run", "--import", str(module), str(copied), "--out", str(out)]) == 2
    assert "now hashes to" in capsys.readouterr().err


def test_import_by_module_name_and_plugin_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module, spec = write_plugin(tmp_path, "named_")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    out = str(tmp_path / "runs")
    base = ["train", "--import", "named_plugin", "spec.toml", "--out", out, "--progress", "log"]
    cases = [
        (["--set", "model.options.width=3"], "do not fit plugin model 'named_mlp'"),
        (["--set", "model.width=3"], "model.width applies to built-in models"),
        (["--set", "dataset.augment=true"], "dataset.augment (random crop + flip) applies to images"),
        (["--set", "training.loss=focal"], "unknown training.loss 'focal'"),
        (["--set", "dataset.name=named_tabel"], "did you mean 'named_table'"),
    ]
    for extra, words in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, (extra, err)
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    assert main(["train", "--import", "no_such_module", "spec.toml", "--out", out]) == 2
    assert "No module named 'no_such_module'" in capsys.readouterr().err
    assert main([*base, "--set", "model.options.hidden=4"]) == 0  # a three-part --set reaches the options table


def test_plugin_loss_and_hash_identity(tmp_path: Path) -> None:
    source = tmp_path / "loss_plugin.py"
    source.write_text(
        "import torch.nn.functional as F\nimport lottery.plugins\n\n"
        "@lottery.plugins.register_loss('plugin_ce')\n"
        "def plugin_ce(output, target, reduction='mean'):\n"
        "    return F.cross_entropy(output, target, reduction=reduction)\n"
    )
    plugins.import_modules([str(source)])
    plugins.import_modules([str(source)])  # idempotent
    spec, _ = resolve(preset="lenet_300_100", overrides=["training.loss=plugin_ce"])
    assert spec.training.loss_source_hash.startswith("sha256:")
    builtin, _ = resolve(preset="lenet_300_100")
    assert builtin.training.loss_source_hash is None and builtin.model.source_hash is None
    assert spec_hash(spec) != spec_hash(resolve(preset="lenet_300_100", overrides=["training.loss=nll"])[0])
    from lottery.spec import TrainingSpec
    from lottery.training.losses import make

    assert make(spec.training) is plugins.find("loss", "plugin_ce")  # the entry: its failure is one line
    with pytest.raises(UserError, match="changed since"):  # a worker given a spec resolved against other code
        make(TrainingSpec(loss="plugin_ce", loss_source_hash="sha256:0000000000000000"))
    with pytest.raises(UserError, match="built-in model"):
        plugins.register_model("lenet_300_100")(lambda: None)
    with pytest.raises(UserError, match="registered twice"):
        plugins.register_loss("plugin_ce")(lambda output, target, reduction="mean": output.sum())
    with pytest.raises(UserError, match="applies to plugin"):
        resolve(preset="lenet_300_100", overrides=["model.source_hash=sha256:0"])


def test_entry_point_plugins_are_found_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package's entry points (groups lottery.models / lottery.datasets) name plugins in specs."""
    (tmp_path / "ep_models.py").write_text(PLUGIN.format(prefix="ep_", activation="ReLU"))
    info = tmp_path / "ep_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[lottery.models]\nep_mlp = ep_models:mlp\n\n[lottery.datasets]\nep_table = ep_models:table\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "ep_mlp" in plugins.names("model")
    spec, _ = resolve(overrides=["model.name=ep_mlp", "dataset.name=ep_table", "dataset.validation_size=50"])
    assert spec.model.source_hash == spec.dataset.source_hash == plugins.find("model", "ep_mlp").source_hash()
    from lottery.experiments.context import Context
    from lottery.training import Runtime

    ctx = Context(spec, Runtime(progress=False))
    ctx.validate()
    assert ctx.layer_kinds == {"0.weight": "fc", "2.weight": "output"}  # lottery.prunable's defaults
    assert ctx.data.input_shape == (6,)


def test_the_documented_example_plugin_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/plugins/tabular_plugin.py (shown in full in docs/extending.md) with its spec, shortened."""
    root = Path(__file__).resolve().parent.parent
    example = root / "examples" / "plugins" / "tabular_plugin.py"
    docs = (root / "docs" / "extending.md").read_text()
    assert example.read_text().strip() in docs  # the documentation shows the tested file
    short = [
        "training.training_steps=40it",
        "training.warmup_steps=5it",
        "training.eval_every=20it",
        "imp.levels=1",
        "imp.rewind=10it",
    ]
    argv = ["run", "--import", str(example), str(example.with_name("tabular.toml")), "--out", str(tmp_path)]
    assert main([*argv, *(a for s in short for a in ("--set", s)), "--progress", "log"]) == 0
    results = json.loads((Path(capsys.readouterr().out.strip().splitlines()[-1]) / "results.json").read_text())
    assert [r["kind"] for r in results["runs"]] == ["dense", "imp", "random_reinit"]
    assert results["runs"][0]["final_test_accuracy"] > 0.7  # two moons: learnable in 40 steps


def test_sweep_over_plugin_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lottery sweep --import` spans a plugin model's options: one experiment per value, each with its hash."""
    module, spec = write_plugin(tmp_path, "sweep_")
    text = spec.read_text().replace('training_steps = "30it"', 'training_steps = "10it"').replace("levels = 1", "")
    spec.write_text(text + "\n[sweep.model]\noptions = [{ hidden = 4 }, { hidden = 8 }]\n")
    out = tmp_path / "runs"
    assert main(["sweep", "--import", str(module), str(spec), "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(out))]
    widths = set()
    for line in lines:
        stored = json.loads((Path(line.split()[0]) / "spec.json").read_text())
        assert stored["model"]["source_hash"].startswith("sha256:")
        widths.add(stored["model"]["options"]["hidden"])
    assert widths == {4, 8}
