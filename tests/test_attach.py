"""`lottery.attach`: after one call, every step of any torch.optim optimizer leaves pruned weights, their gradients
and their optimizer state exactly zero (property-tested), and the engine's exact step runs the same hooks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lottery
from lottery.errors import UserError
from lottery.exact_step import exact_step


class Net(nn.Module):
    """A model the project does not ship: Conv1d over a sequence, then two Linear layers."""

    def __init__(self, channels: int, hidden: int, length: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, channels, 3, padding=1)
        self.fc = nn.Linear(channels * length, hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def optimizers(draw, params) -> torch.optim.Optimizer:
    """One of the listed optimizers with drawn hyperparameters and implementation (single-tensor or foreach)."""
    kind = draw(st.sampled_from(KINDS))
    lr = draw(st.sampled_from([1e-3, 1e-2, 0.1]))
    wd = draw(st.sampled_from([0.0, 1e-4, 1e-2]))
    foreach = draw(st.sampled_from([None, True, False]))
    o = torch.optim
    if kind == "sgd":
        momentum = draw(st.sampled_from([0.0, 0.9]))
        nesterov = momentum > 0 and draw(st.booleans())
        return o.SGD(params, lr, momentum=momentum, nesterov=nesterov, weight_decay=wd, foreach=foreach)
    if kind == "adam":
        return o.Adam(params, lr, weight_decay=wd, amsgrad=draw(st.booleans()), foreach=foreach)
    if kind == "adamw":
        return o.AdamW(params, lr, weight_decay=wd, amsgrad=draw(st.booleans()), foreach=foreach)
    if kind == "radam":
        return o.RAdam(params, lr, weight_decay=wd, decoupled_weight_decay=draw(st.booleans()), foreach=foreach)
    if kind == "nadam":
        return o.NAdam(params, lr, weight_decay=wd, decoupled_weight_decay=draw(st.booleans()), foreach=foreach)
    if kind == "adamax":
        return o.Adamax(params, lr, weight_decay=wd, foreach=foreach)
    if kind == "rmsprop":
        momentum = draw(st.sampled_from([0.0, 0.9]))
        return o.RMSprop(params, lr, momentum=momentum, centered=draw(st.booleans()), weight_decay=wd, foreach=foreach)
    if kind == "adagrad":
        initial = draw(st.sampled_from([0.0, 0.1]))
        return o.Adagrad(params, lr, weight_decay=wd, initial_accumulator_value=initial, foreach=foreach)
    return o.Adadelta(params, lr=1.0, rho=draw(st.sampled_from([0.9, 0.99])), weight_decay=wd, foreach=foreach)


KINDS = ["sgd", "adam", "adamw", "radam", "nadam", "adamax", "rmsprop", "adagrad", "adadelta"]


@settings(max_examples=90, deadline=None)
@given(
    data=st.data(),
    channels=st.integers(1, 5),
    hidden=st.integers(1, 7),
    density=st.floats(0.05, 0.95),
    steps=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_masks_hold_under_every_optimizer(data, channels: int, hidden: int, density: float, steps: int, seed: int):
    torch.manual_seed(seed)
    model = Net(channels, hidden)
    g = torch.Generator().manual_seed(seed)
    mask = lottery.Mask({n: torch.rand(m.shape, generator=g) < density for n, m in lottery.Mask.ones(model).items()})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = optimizers(data.draw, model.parameters())
    lottery.attach(mask, optimizer, model=model)
    for _ in range(steps):  # the user's loop: no other call
        x, y = torch.randn(8, 2, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        optimizer.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    for name, m in mask.items():
        p = params[name]
        assert torch.equal(p[~m], torch.zeros_like(p[~m])), name  # exactly zero
        assert torch.equal(p.grad[~m], torch.zeros_like(p.grad[~m])), name
        for key, value in optimizer.state[p].items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                assert torch.equal(value[~m], torch.zeros_like(value[~m])), (type(optimizer).__name__, key)
    assert any(not torch.equal(p, before[n]) for n, p in params.items())  # the optimizer did step


def test_without_attach_adamw_moves_pruned_weights() -> None:
    """The property is not vacuous: masking only the start weights lets AdamW's moments move them."""
    torch.manual_seed(0)
    model = Net(3, 5)
    mask = lottery.prune(model, fraction=0.5)
    mask.apply_(model)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(8, 2, 6)), torch.randint(0, 3, (8,))).backward()
        optimizer.step()
    assert bool((model.fc.weight[~mask["fc.weight"]] != 0).any())


def test_attach_by_parameter_names_and_remove() -> None:
    torch.manual_seed(0)
    model = Net(3, 5)
    mask = lottery.prune(model, fraction=0.5)
    optimizer = torch.optim.SGD(model.named_parameters(), lr=0.1, momentum=0.9)  # names: no model= needed
    handle = lottery.attach(mask, optimizer)
    assert bool((model.fc.weight[~mask["fc.weight"]] == 0).all())  # zeroed at once
    handle.remove()
    optimizer.zero_grad()
    F.cross_entropy(model(torch.randn(8, 2, 6)), torch.randint(0, 3, (8,))).backward()
    optimizer.step()
    assert bool((model.fc.weight[~mask["fc.weight"]] != 0).any())  # detached: no longer enforced
    lottery.attach(mask, torch.optim.SGD(model.parameters(), lr=0.1)).remove()  # matched by order and shape
    with pytest.raises(UserError, match="does not have"):
        lottery.attach(lottery.Mask({"nope.weight": torch.ones(2, dtype=torch.bool)}), optimizer)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_exact_step_runs_the_step_hooks(kind: str) -> None:
    """The engine's fast step keeps an attached mask: it runs the optimizer's pre- and post-hooks."""
    torch.manual_seed(0)
    model = Net(3, 5)
    mask = lottery.prune(model, fraction=0.6)
    make = torch.optim.Adam if kind == "adam" else torch.optim.SGD
    optimizer = make(model.parameters(), lr=0.05, weight_decay=1e-2)
    lottery.attach(mask, optimizer, model=model)
    calls = []
    optimizer.register_step_post_hook(lambda *args: calls.append("post"))
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(8, 2, 6)), torch.randint(0, 3, (8,))).backward()
        assert exact_step(optimizer)
    assert calls == ["post"] * 3
    for name, m in mask.items():
        p = dict(model.named_parameters())[name]
        assert torch.equal(p[~m], torch.zeros_like(p[~m]))
        assert torch.equal(p.grad[~m], torch.zeros_like(p.grad[~m]))
