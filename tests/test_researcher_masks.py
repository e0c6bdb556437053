"""Issue 27, item 3: masks that hold wherever the user trains (attach without model=, masked / train_subnetwork,
distances that see drifted pruned weights)."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lottery
from lottery.api.analysis import PrunedWeightsWarning
from lottery.errors import UserError
from lottery.pruning.attachment import match_by_shape


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int = 3) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(n):
        optimizer.zero_grad()
        x, y = torch.randn(16, 6, generator=generator), torch.randint(0, 3, (16,), generator=generator)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _pruned_zero(model: nn.Module, mask: lottery.Mask) -> bool:
    params = dict(model.named_parameters())
    return all(bool((params[n].detach()[~m] == 0).all()) for n, m in mask.items())


def test_attach_to_an_optimizer_over_model_parameters_needs_no_model() -> None:
    """The most common call: AdamW over model.parameters(), with weight decay that would move pruned weights."""
    model = _net()
    mask = lottery.prune(model, fraction=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    handle = lottery.attach(mask, optimizer)
    assert {id(p) for p in handle.params} == {id(model[0].weight), id(model[4].weight)}
    _steps(model, optimizer)
    assert _pruned_zero(model, mask)
    assert bool((optimizer.state[model[0].weight]["exp_avg"][~mask["0.weight"]] == 0).all())


def test_attach_matches_same_shaped_layers_in_order() -> None:
    """Two masked layers of one shape: the optimizer lists them in the model's order, so the match is unique."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 2))
    mask = lottery.prune(model, fraction=0.6, scope="layerwise")
    mask["1.weight"][:] = True  # layer 1 entirely kept, so a swap of layers 0 and 1 would show
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    handle = lottery.attach(mask, optimizer)
    assert [id(p) for p in handle.params] == [id(model[0].weight), id(model[2].weight)]


def test_attach_refuses_only_when_ambiguous() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 2))
    mask = lottery.Mask({"1.weight": torch.rand(5, 5) > 0.5})  # one 5x5 masked, two 5x5 in the optimizer
    with pytest.raises(UserError, match="cannot tell.*model=your_model"):
        lottery.attach(mask, torch.optim.SGD(model.parameters(), lr=0.1))
    handle = lottery.attach(mask, torch.optim.SGD(model.parameters(), lr=0.1), model=model)  # model= decides
    assert handle.params[0] is model[1].weight
    with pytest.raises(UserError, match="does not step parameters of the mask's shapes"):
        lottery.attach(lottery.Mask({"x": torch.ones(7, 7, dtype=torch.bool)}), torch.optim.SGD(model.parameters()))


def test_masked_holds_in_an_optimizer_made_inside_and_train_subnetwork() -> None:
    model = _net()
    mask = lottery.prune(model, fraction=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def train_fn(m: nn.Module, mask_: lottery.Mask, begin: int, end: int) -> None:  # never calls attach
        _steps(m, torch.optim.AdamW(m.parameters(), lr=0.05, weight_decay=0.1), end - begin)

    with lottery.masked(model, mask) as held:
        train_fn(model, mask, 0, 4)
    assert held.steps == 4 and _pruned_zero(model, mask)
    model.load_state_dict(start)
    copy = lottery.train_subnetwork(model, mask, train_fn, start=2, end=6, weights=start)
    assert _pruned_zero(copy, mask) and copy is not model
    assert torch.equal(model[0].weight, start["0.weight"])  # the original is untouched
    assert not torch.equal(copy[0].weight, mask.apply_to(start)["0.weight"])  # it trained
    unheld = _net()
    train_fn(unheld, mask, 0, 4)  # outside `masked`: nothing holds the mask
    assert not _pruned_zero(unheld, mask)


def test_distances_warn_or_refuse_when_pruned_weights_drifted() -> None:
    model = _net()
    mask = lottery.prune(model, fraction=0.5)
    a = lottery.train_subnetwork(model, mask, lambda m, *_: _steps(m, torch.optim.SGD(m.parameters(), 0.1)), end=3)
    b = _net()  # dense: its pruned coordinates are not zero
    with pytest.warns(PrunedWeightsWarning, match="network b has .* non-zero weight"):
        lottery.distances(a, b, mask)
    with pytest.raises(UserError, match="pruned='ignore'"):
        lottery.distances(a, b, mask, pruned="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lottery.distances(a, b, mask, pruned="ignore")["l2"] > 0
        assert lottery.distances(a, a, mask)["l2"] == 0  # both masked: no warning
    with pytest.raises(UserError, match="pruned must be one of warn, raise, ignore"):
        lottery.distances(a, a, mask, pruned="maybe")


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.sampled_from([(2, 3), (3, 2), (2, 2), (4,)]), min_size=1, max_size=7),
    data=st.data(),
)
def test_match_by_shape_finds_the_masked_parameters_or_refuses_when_ambiguous(shapes, data) -> None:
    """Property: with the masked parameters a subsequence of the optimizer's (the model's order), the match is the
    true one whenever exactly one order-preserving choice of the masks' shapes exists, and refused otherwise."""
    params = [torch.zeros(shape) for shape in shapes]
    chosen = sorted(data.draw(st.sets(st.integers(0, len(shapes) - 1), min_size=1)))
    mask = lottery.Mask({f"p{i}": torch.ones(shapes[i], dtype=torch.bool) for i in chosen})
    wanted = [shapes[i] for i in chosen]
    ways = sum(
        [shapes[j] for j in combo] == wanted for combo in itertools.combinations(range(len(shapes)), len(chosen))
    )
    if ways == 1:
        found = match_by_shape(mask, params)
        assert [id(found[f"p{i}"]) for i in chosen] == [id(params[i]) for i in chosen]
    else:
        with pytest.raises(UserError, match="cannot tell"):
            match_by_shape(mask, params)


@settings(max_examples=25, deadline=None)
@given(a=st.floats(1e-6, 1.0), b=st.floats(1e-6, 1.0))
def test_fingerprint_tells_closure_values_apart(a: float, b: float) -> None:
    from lottery.api.fingerprint import fingerprint

    def make(lr: float):
        def train_fn(model, mask, start, end):
            return lr * (end - start)

        return train_fn

    model = nn.Linear(2, 2)
    same = fingerprint(make(a), model, None).digest == fingerprint(make(b), model, None).digest
    assert same == (a == b)
