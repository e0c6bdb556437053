"""`lottery export` and `lottery.load_ticket`: a ticket or trained subnetwork leaves the store in a form plain PyTorch
loads (strict), torch.nn.utils.prune's convention included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

import lottery
from conftest import run_tiny, tiny_spec
from lottery.cli.main import main
from lottery.experiments.context import Context
from lottery.store import RunDir
from lottery.store.atomic import tensors_from_bytes
from lottery.store.provenance import read_metadata
from lottery.training import Runtime

OVERRIDES = ("imp.levels=2", "imp.rewind=['20it']", "controls.kinds=['random_reinit']")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run, _ = run_tiny(tmp_path_factory.mktemp("runs"), *OVERRIDES)
    return run.path


def fresh_model(seed: int = 123) -> torch.nn.Module:
    return Context(tiny_spec(*OVERRIDES), Runtime()).model(seed)


def export(experiment: Path, out: Path, *args: str) -> Path:
    assert main(["export", str(experiment), "--out", str(out), *args]) == 0
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "state-dict"])
@pytest.mark.parametrize("what,source", [("ticket", "start.safetensors"), ("trained", "final.safetensors")])
def test_export_loads_strictly(experiment: Path, tmp_path: Path, fmt: str, what: str, source: str) -> None:
    out = export(experiment, tmp_path / "t", "--level", "2", "--what", what, "--format", fmt)
    run = RunDir(experiment / "replicate_0/rewind_20it/level_2")
    expected, stored_mask = run.read_tensors(source), run.read_tensors("mask.safetensors")
    weights = out / ("model.safetensors" if fmt == "safetensors" else "model.pt")
    state = tensors_from_bytes(weights.read_bytes()) if fmt == "safetensors" else torch.load(weights, weights_only=True)
    model = fresh_model()
    model.load_state_dict(state, strict=True)  # plain PyTorch, exactly the model's keys
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)
    mask = lottery.load_ticket(out, fresh_model())
    assert mask.keys() == stored_mask.keys() and all(torch.equal(mask[k], stored_mask[k]) for k in mask)
    for name, m in mask.items():  # the ticket is exactly m ⊙ W: zero wherever the mask prunes
        assert not expected[name][~m].any()
    card = (out / "README.md").read_text()
    assert "hidden.0.weight" in card and "load_ticket" in card and f"{100 * mask.density:.2f}%" in card
    if fmt == "safetensors":
        metadata = read_metadata(weights)
        assert metadata["kind"] == "imp" and metadata["level"] == "2" and metadata["exported"] == what


def test_torch_prune_format_matches_after_remove(experiment: Path, tmp_path: Path) -> None:
    out = export(experiment, tmp_path / "p", "--level", "1", "--what", "trained", "--format", "torch-prune")
    state = torch.load(out / "model.pt", weights_only=True)
    model = fresh_model()
    masked = [k[: -len("_mask")] for k in state if k.endswith("_mask")]
    assert masked and all(f"{name}_orig" in state for name in masked)
    for name in masked:  # the convention torch.nn.utils.prune itself produces
        module, _, param = name.rpartition(".")
        prune.custom_from_mask(model.get_submodule(module), param, state[f"{name}_mask"])
    model.load_state_dict(state, strict=True)
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        before = model(x)
    for name in masked:
        module, _, param = name.rpartition(".")
        prune.remove(model.get_submodule(module), param)
    plain = fresh_model(7)
    plain.load_state_dict(RunDir(experiment / "replicate_0/rewind_20it/level_1").read_tensors("final.safetensors"))
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x), before)
        assert torch.equal(plain(x), before)
    assert set(model.state_dict()) == set(plain.state_dict())
    loaded = fresh_model(9)
    mask = lottery.load_ticket(out / "model.pt", loaded)  # load_ticket applies the pruning itself
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), before)
    assert mask.density < 1


def test_export_control_and_dense(experiment: Path, tmp_path: Path) -> None:
    out = export(experiment, tmp_path / "c", "--level", "1", "--kind", "random_reinit")
    assert read_metadata(out / "model.safetensors")["kind"] == "random_reinit"
    out = export(experiment, tmp_path / "d", "--level", "0")
    assert read_metadata(out / "model.safetensors")["kind"] == "dense"


@pytest.mark.parametrize(
    "args,words",
    [
        (["--level", "5"], ["no finished run"]),
        (["--level", "1", "--rewind", "7"], ["no rewind point 7"]),
        (["--level", "1", "--kind", "nonsense"], ["unknown kind"]),
        (["--level", "1", "--format", "onnx"], ["invalid choice"]),
    ],
)
def test_export_refuses_bad_input(
    experiment: Path, tmp_path: Path, args: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(experiment), "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "Traceback" not in err
    assert not (tmp_path / "x").exists()
