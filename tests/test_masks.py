"""Mask invariants: random-pruning controls and exact zeros under training with an attached mask."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.models.lenet import LeNet
from lottery.pruning import Mask, attach, random_global_like, random_like

STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq")


def random_mask(model: torch.nn.Module, density: float, seed: int) -> Mask:
    g = torch.Generator().manual_seed(seed)
    ones = Mask.ones(model)
    return Mask({name: torch.rand(m.shape, generator=g) < density for name, m in ones.items()})


def imp_like_mask() -> Mask:
    g = torch.Generator().manual_seed(7)
    return Mask(
        {
            "a.weight": torch.rand(40, 30, generator=g) < 0.3,
            "b.weight": torch.rand(20, 40, generator=g) < 0.6,
            "out.weight": torch.ones(10, 20, dtype=torch.bool),  # e.g. an ignored layer
        }
    )


def counts(mask: Mask) -> dict[str, int]:
    return {name: int(m.sum()) for name, m in mask.items()}


def test_random_like_keeps_exact_layer_counts_and_is_reproducible() -> None:
    imp = imp_like_mask()
    first = random_like(imp, None, torch.Generator().manual_seed(1))
    assert list(first) == list(imp) and counts(first) == counts(imp)
    assert all(first[n].shape == imp[n].shape and first[n].dtype == torch.bool for n in imp)
    again = random_like(imp, None, torch.Generator().manual_seed(1))
    other = random_like(imp, None, torch.Generator().manual_seed(2))
    assert all(torch.equal(first[n], again[n]) for n in imp)
    assert not torch.equal(first["a.weight"], other["a.weight"])
    assert not torch.equal(first["a.weight"], imp["a.weight"])


def test_random_like_nests_inside_previous() -> None:
    imp = imp_like_mask()
    previous = random_like(imp, None, torch.Generator().manual_seed(3))
    smaller = Mask({n: m & (torch.arange(m.numel()).reshape(m.shape) % 2 == 0) for n, m in imp.items()})
    nested = random_like(smaller, previous, torch.Generator().manual_seed(4))
    assert counts(nested) == counts(smaller)
    assert nested.is_subset_of(previous)
    with pytest.raises(ValueError):  # cannot keep more than the previous mask has
        random_like(imp, smaller, torch.Generator().manual_seed(5))


def test_random_global_like_keeps_total_over_pool() -> None:
    imp = imp_like_mask()
    pool = ["a.weight", "b.weight"]
    first = random_global_like(imp, torch.Generator().manual_seed(1), pool)
    assert list(first) == list(imp)
    assert sum(counts(first)[n] for n in pool) == sum(counts(imp)[n] for n in pool)
    assert counts(first) != counts(imp)  # per-layer counts are not preserved (30% vs 60% layers mix)
    assert torch.equal(first["out.weight"], imp["out.weight"])  # outside the pool: copied
    again = random_global_like(imp, torch.Generator().manual_seed(1), pool)
    other = random_global_like(imp, torch.Generator().manual_seed(2), pool)
    assert all(torch.equal(first[n], again[n]) for n in imp)
    assert not all(torch.equal(first[n], other[n]) for n in pool)


def make_optimizer(kind: str, params: list[torch.nn.Parameter], weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-2, weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=kind == "nesterov", weight_decay=weight_decay)


def train(model: LeNet, mask: Mask, optimizer: torch.optim.Optimizer, seed: int, steps: int, masked: bool) -> None:
    """A plain loop; `masked`: with the mask attached to the optimizer, else only the start weights masked."""
    handle = attach(mask, optimizer, model=model)
    if not masked:
        handle.remove()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 1, 4, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def tiny_model(seed: int) -> LeNet:
    model = LeNet((1, 4, 4), 3, (12, 8))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0.05, 0.95),
    kind=st.sampled_from(["sgd", "nesterov", "adam", "adamw"]),
    weight_decay=st.sampled_from([1e-4, 1e-2]),
    steps=st.integers(1, 6),
)
def test_pruned_weights_and_optimizer_state_stay_exactly_zero(
    seed: int, density: float, kind: str, weight_decay: float, steps: int
) -> None:
    model = tiny_model(seed)
    mask = random_mask(model, density, seed + 1)
    params = dict(model.named_parameters())
    before = {name: params[name].detach().clone() for name in mask}
    optimizer = make_optimizer(kind, list(model.parameters()), weight_decay)
    train(model, mask, optimizer, seed + 2, steps, masked=True)
    for name, m in mask.items():
        p = params[name]
        assert torch.equal(p[~m], torch.zeros_like(p[~m]))  # exactly zero, not merely small
        for key in STATE_KEYS:
            if key in optimizer.state[p]:
                buffer = optimizer.state[p][key]
                assert torch.equal(buffer[~m], torch.zeros_like(buffer[~m])), key
        negative = m & (before[name] < 0)
        assert torch.all(p[negative] != before[name][negative])  # negative surviving weights train too


def test_without_enforcement_pruned_coordinates_move() -> None:
    """The property above is not vacuous: masking only the initial weights lets momentum and decay leak."""
    model = tiny_model(0)
    mask = random_mask(model, 0.3, 1)
    optimizer = make_optimizer("sgd", list(model.parameters()), 1e-2)
    train(model, mask, optimizer, 2, 3, masked=False)
    p = dict(model.named_parameters())["hidden.0.weight"]
    assert bool((p[~mask["hidden.0.weight"]] != 0).any())
    assert bool((optimizer.state[p]["momentum_buffer"][~mask["hidden.0.weight"]] != 0).any())
