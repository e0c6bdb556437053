"""`lottery.prunable` defaults (bare layers, nn.MultiheadAttention, Hugging Face models after Chen et al. 2020),
`where=` adding any floating-point parameter, and `names=` on the API functions."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lottery
from lottery.errors import UserError


def test_bare_layer_regression() -> None:
    """Was: ValueError: '.weight' is not in list (issue 24, item 12)."""
    layer = nn.Linear(3, 3)
    assert lottery.prunable(layer) == {"weight": "output"}
    mask = lottery.Mask.ones(layer)
    assert list(mask) == ["weight"] and mask.total() == 9 and mask.density == 1.0
    assert lottery.prunable(nn.Conv2d(2, 4, 3)) == {"weight": "conv"}
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, 10.0).reshape(3, 3))
    pruned = lottery.prune(layer, fraction=1 / 3)  # removes round(3) = 3 smallest: 1, 2, 3
    assert pruned["weight"].flatten().tolist() == [False] * 3 + [True] * 6


def test_multihead_attention_in_proj_is_prunable() -> None:
    attention = nn.MultiheadAttention(8, 2)
    assert lottery.prunable(attention) == {"in_proj_weight": "fc", "out_proj.weight": "output"}
    separate = nn.MultiheadAttention(8, 2, kdim=4, vdim=6)  # separate Q, K, V projections
    assert set(lottery.prunable(separate)) == {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"}
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    assert list(lottery.prunable(layer)) == [
        "self_attn.in_proj_weight",
        "self_attn.out_proj.weight",
        "linear1.weight",
        "linear2.weight",
    ]


def test_where_adds_and_removes_any_floating_point_parameter() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    assert lottery.prunable(model) == {"2.weight": "output"}
    added = lottery.prunable(model, where=lambda name, p: True if name == "0.weight" else None)
    assert added == {"0.weight": "fc", "2.weight": "output"}
    matrices = lottery.prunable(model, where=lambda name, p: p.dim() == 2)
    assert list(matrices) == ["0.weight", "2.weight"]  # LayerNorm (1-D) and biases left out
    assert lottery.prunable(model, where=lambda name, p: False) == {}
    assert lottery.prunable(model, names=["1.weight"]) == {"1.weight": "fc"}
    with pytest.raises(UserError, match="is not a parameter"):
        lottery.prunable(model, names=["nothing.weight"])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=6, max_size=6))
def test_where_decides_exactly_the_parameters_it_answers(answers: list[bool]) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # 0.weight, 0.bias, 1.weight, 1.bias
    params = [name for name, _ in model.named_parameters()]
    decisions = dict(zip(params, answers))
    chosen = lottery.prunable(model, where=lambda name, p: decisions[name])
    assert list(chosen) == [name for name in params if decisions[name]]  # in parameter order


def test_names_on_the_api_functions() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    names = ["0.weight", "0.bias"]
    mask = lottery.prune(model, names=names, fraction=0.5)
    assert list(mask) == names and mask.kept() == 20  # 40 weights and biases, half removed
    dense = lottery.distances(model, model, names=names)
    assert dense["l2"] == 0.0
    with pytest.raises(UserError, match="not both"):
        lottery.prune(model, mask, names=names, fraction=0.2)

    def train_fn(m: nn.Module, mask: lottery.Mask, start: int, end: int) -> None:
        optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(start, end):
            optimizer.zero_grad()
            m(torch.ones(2, 4)).sum().backward()
            optimizer.step()

    levels = list(lottery.imp(model, train_fn, levels=1, iterations=3, names=lottery.prunable(model, kinds=["fc"])))
    assert list(levels[1].mask) == ["0.weight"] and levels[1].mask.kept() == 26  # round(0.2 * 32) = 6 removed


def test_hugging_face_models_follow_chen_et_al(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    )
    chosen = lottery.prunable(bert)
    per_layer = [
        "attention.self.query.weight",
        "attention.self.key.weight",
        "attention.self.value.weight",
        "attention.output.dense.weight",
        "intermediate.dense.weight",
        "output.dense.weight",
    ]
    assert list(chosen) == [f"bert.encoder.layer.{i}.{name}" for i in range(2) for name in per_layer]
    assert set(chosen.values()) == {"fc"}
    assert not any(("embeddings" in n or "pooler" in n or "classifier" in n or "LayerNorm" in n) for n in chosen)
    with_head = lottery.prunable(bert, where=lambda name, p: True if name == "classifier.weight" else None)
    assert list(with_head) == [*chosen, "classifier.weight"]

    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    )
    assert list(lottery.prunable(gpt2)) == [
        "transformer.h.0.attn.c_attn.weight",  # HF Conv1D: Q, K and V in one transposed Linear
        "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.weight",
    ]
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_lottery_imports_without_lightning_or_transformers() -> None:
    """The integrations are optional extras, imported lazily: `import lottery` and `prunable` work without them,
    and importing an integration without its framework says which extra to install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['lightning'] = sys.modules['transformers'] = None\n"
        "import torch, lottery\n"
        "assert lottery.prunable(torch.nn.Linear(2, 2)) == {'weight': 'output'}\n"
        "for name in ('lightning', 'transformers'):\n"
        "    try:\n"
        "        __import__(f'lottery.integrations.{name}')\n"
        "    except ImportError as error:\n"
        "        assert f'lottery[{name}]' in str(error), error\n"
        "    else:\n"
        "        raise AssertionError(name)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_imp_prunes_and_holds_multihead_attention_projections() -> None:
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    x = torch.randn(4, 5, 8)

    def train_fn(m: nn.Module, mask: lottery.Mask, start: int, end: int) -> None:
        optimizer = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
        for _ in range(start, end):
            optimizer.zero_grad()
            m(x).pow(2).mean().backward()
            optimizer.step()

    levels = list(lottery.imp(model, train_fn, levels=1, iterations=4, rewind=1, controls=["random_reinit"]))
    mask = levels[1].mask
    assert "self_attn.in_proj_weight" in mask and mask["self_attn.in_proj_weight"].float().mean() < 1
    for run in (levels[1], levels[1].controls["random_reinit_seed0"]):
        assert all(bool((run.final[n][~m] == 0).all()) for n, m in run.mask.items())
