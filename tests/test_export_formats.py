"""Exports that shrink: `--format sparse` round-trips bit for bit and is about density × dense + mask bits in size,
readable with plain safetensors + NumPy as the model card shows; `--format compact` of a channel ticket is a smaller
network whose outputs equal the masked network's; 2:4 tickets have the layout torch's semi-structured kernels take."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lottery
from conftest import run_tiny, tiny_spec
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.experiments.context import Context
from lottery.export import semistructured, sparse
from lottery.export.card import LOAD
from lottery.pruning import Mask
from lottery.pruning.structure import groups_view
from lottery.store import RunDir
from lottery.store.atomic import tensors_from_bytes, tensors_to_bytes
from lottery.training import Runtime

CHANNEL = ("imp.levels=2", "pruning.structure=channel", "pruning.fraction=0.5")


def random_state(density: float, seed: int, rows: int = 64, cols: int = 256) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=g)
    conv = torch.randn(16, 8, 3, 3, generator=g)
    mask = {"fc.weight": torch.rand(rows, cols, generator=g) < density}
    mask["conv.weight"] = torch.rand(16, 8, 3, 3, generator=g) < density
    state = {
        "fc.weight": weight * mask["fc.weight"],
        "fc.bias": torch.randn(rows, generator=g),
        "conv.weight": conv * mask["conv.weight"],
    }
    return state, mask


def roundtrip(state: dict, mask: dict) -> tuple[bytes, dict, dict]:
    tensors, metadata = sparse.encode(state, mask)
    data = tensors_to_bytes(tensors, metadata)
    back, back_mask = sparse.decode(tensors_from_bytes(data), metadata)
    return data, back, back_mask


@settings(max_examples=30, deadline=None)
@given(density=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_sparse_roundtrips_bit_for_bit_and_is_small(density: float, seed: int) -> None:
    state, mask = random_state(density, seed)
    data, back, back_mask = roundtrip(state, mask)
    assert back.keys() == state.keys() and back_mask.keys() == mask.keys()
    for name, value in state.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        if name in mask:
            assert torch.equal(back_mask[name], mask[name])
            kept = mask[name]  # kept values: the same bits; pruned coordinates: zero
            assert torch.equal(back[name][kept].view(torch.int32), value[kept].view(torch.int32))
            assert not back[name][~kept].any()
        else:
            assert torch.equal(back[name].view(torch.int32), value.view(torch.int32))
    masked = sum(m.numel() for m in mask.values())
    kept = sum(int(m.sum()) for m in mask.values())
    dense = sum(v.numel() * 4 for v in state.values())
    unmasked = dense - masked * 4
    bound = 1.3 * ((kept / masked) * masked * 4 + masked / 8) + unmasked + 1024  # + the header's JSON
    assert len(data) <= bound


def test_sparse_picks_csr_at_low_density_and_bits_at_high() -> None:
    low, high = torch.zeros(64, 256, dtype=torch.bool), torch.ones(64, 256, dtype=torch.bool)
    low[::7, ::31] = True
    assert sparse.layout_sizes(low)["csr"] < sparse.layout_sizes(low)["bitmask"]
    assert sparse.layout_sizes(high)["bitmask"] < sparse.layout_sizes(high)["csr"]
    state = {"a": torch.randn(64, 256) * low, "b": torch.randn(64, 256)}
    _, metadata = sparse.encode(state, {"a": low, "b": high})
    assert {k: v["layout"] for k, v in json.loads(metadata[sparse.KEY]).items()} == {"a": "csr", "b": "bitmask"}


@pytest.fixture(scope="module")
def channel_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run, _ = run_tiny(tmp_path_factory.mktemp("runs"), *CHANNEL)
    return run.path


def test_sparse_export_reads_with_plain_numpy_as_documented(channel_experiment: Path, tmp_path: Path) -> None:
    out = tmp_path / "sparse"
    assert main(["export", str(channel_experiment), "--level", "2", "--format", "sparse", "--out", str(out)]) == 0
    run = RunDir(channel_experiment / "replicate_0/rewind_0it/level_2")
    expected, stored_mask = run.read_tensors("start.safetensors"), run.read_tensors("mask.safetensors")
    code = re.sub(r"^```python\n|```$", "", LOAD["sparse"].format(out=out).strip())
    scope: dict = {}
    exec(code, scope)  # the model card's own NumPy reader  # noqa: S102
    assert scope["state"].keys() == expected.keys()
    for name, value in expected.items():
        assert (torch.from_numpy(scope["state"][name]) == value).all()
    model = Context(tiny_spec(*CHANNEL), Runtime()).model(7)
    mask = lottery.load_ticket(out, model)
    assert all(torch.equal(mask[k], stored_mask[k]) for k in stored_mask)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    sizes = json.loads((out / "export.json").read_text())["sizes"]
    assert sizes["export_bytes"] == (out / "sparse.safetensors").stat().st_size < sizes["dense_bytes"]
    assert "of the dense safetensors file" in (out / "README.md").read_text()


def test_compact_export_equals_the_masked_network(channel_experiment: Path, tmp_path: Path) -> None:
    out = tmp_path / "compact"
    for what in ("ticket", "trained"):
        target = out / what
        args = ["export", str(channel_experiment), "--level", "2", "--what", what, "--format", "compact"]
        assert main([*args, "--out", str(target)]) == 0
        small = lottery.load_ticket(target)
        assert isinstance(small, torch.nn.Module) and not small.training
        masked = Context(tiny_spec(*CHANNEL), Runtime()).model(3)
        source = "start.safetensors" if what == "ticket" else "final.safetensors"
        masked.load_state_dict(RunDir(channel_experiment / "replicate_0/rewind_0it/level_2").read_tensors(source))
        x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(small(x), masked.eval()(x), rtol=1e-4, atol=1e-5)
        widths = json.loads((target / "compact.json").read_text())["widths"]
        card = (target / "README.md").read_text()
        assert "## Compact widths" in card and f"| `hidden.0.weight` | {widths['hidden.0.weight']['dense']} |" in card
        assert widths["hidden.0.weight"]["compact"][0] < widths["hidden.0.weight"]["dense"][0]
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in masked.parameters())
        with pytest.raises(UserError, match="compact ticket"):
            lottery.load_ticket(target, masked)


def test_compact_refuses_an_unstructured_ticket(tmp_path: Path) -> None:
    run, _ = run_tiny(tmp_path / "runs", "imp.levels=1")
    with pytest.raises(UserError, match="--format compact needs a channel ticket"):
        lottery.export_ticket(run.path, 1, fmt="compact", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_two_four_ticket_has_the_semi_structured_layout() -> None:
    weights = {"a.weight": torch.randn(40, 96), "b.weight": torch.randn(8, 4, 2, 2)}
    mask = lottery.prune(
        weights,
        Mask({k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items()}),
        density=0.5,
        structure="n:m",
    )
    for name, weight in weights.items():
        matrix = semistructured.layout(weight, mask[name])
        assert matrix.dtype == torch.float16 and matrix.dim() == 2
        assert matrix.shape[0] % 32 == 0 and matrix.shape[1] % 64 == 0  # CUTLASS float16 shape constraint
        assert semistructured.is_two_four(matrix)
        rows, cols = weight.shape[0], weight[0].numel()
        assert torch.equal(matrix[:rows, :cols], (weight * mask[name]).reshape(rows, cols).half())
        assert not matrix[rows:].any() and not matrix[:, cols:].any()
        assert torch.equal(groups_view(mask[name], 4, name).sum(-1), torch.full((rows, cols // 4), 2))
    with pytest.raises(UserError, match="2:4 mask"):
        semistructured.layout(torch.randn(4, 8), torch.ones(4, 8, dtype=torch.bool))
    with pytest.raises(UserError, match="CUDA"):
        semistructured.to_semi_structured(weights["a.weight"], mask["a.weight"])
