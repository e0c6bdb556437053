"""Mask sources (magnitude, SNIP, GraSP, SynFlow, random), mask_from_scores, early-bird helpers: hand-computed
answers on toy models, the papers' invariants, exact counts and reproducibility."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lottery
from lottery.errors import UserError
from lottery.pruning import Mask, prune
from lottery.pruning.early_bird import mask_distance, random_expectation, settled_at
from lottery.pruning.sources import density_schedule, find_mask
from lottery.spec import PruningSpec


def linear_chain(widths: tuple[int, ...], seed: int = 0, bias: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def data(n: int = 8, d: int = 3, classes: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def test_snip_equals_hand_computed_gradient_times_weight_for_a_two_layer_linear_model() -> None:
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)).double()
    x, y = data()
    w1, w2 = model[0].weight.detach(), model[1].weight.detach()
    h = x @ w1.T
    logits = h @ w2.T
    delta = (torch.softmax(logits, 1) - F.one_hot(y, 2).double()) / len(x)  # d mean-CE / d logits
    g2, g1 = delta.T @ h, (delta @ w2).T @ x
    scores = lottery.scores(model, "snip", batches=[(x, y)])
    assert torch.allclose(scores["0.weight"], (g1 * w1).abs(), atol=1e-12)
    assert torch.allclose(scores["1.weight"], (g2 * w2).abs(), atol=1e-12)
    assert scores["0.weight"].dtype == torch.float64
    halves = lottery.scores(model, "snip", batches=[(x[:4], y[:4]), (x[4:], y[4:])])  # the mean over batches
    assert torch.allclose(halves["1.weight"], (g2 * w2).abs(), atol=1e-12)


def test_grasp_hessian_gradient_product_equals_explicit_hessian_times_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = data()
    w1, b1, w2, b2 = (p.detach().clone() for p in model.parameters())
    sizes = [w1.numel(), w2.numel()]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        a, b = flat.split(sizes)
        return F.cross_entropy(torch.tanh(x @ a.view_as(w1).T + b1) @ b.view_as(w2).T + b2, y)

    flat = torch.cat([w1.reshape(-1), w2.reshape(-1)])
    hessian = torch.autograd.functional.hessian(loss, flat)
    gradient = torch.autograd.functional.jacobian(loss, flat)
    hg = (hessian @ gradient).split(sizes)
    scores = lottery.scores(model, "grasp", batches=[(x, y)])
    # keep score = θ ⊙ Hg = −S(−θ) of Wang et al. (they remove the highest S)
    assert torch.allclose(scores["0.weight"], (w1 * hg[0].view_as(w1)), atol=1e-12)
    assert torch.allclose(scores["2.weight"], (w2 * hg[1].view_as(w2)), atol=1e-12)
    assert not torch.allclose(scores["0.weight"], -scores["0.weight"])  # the sign test is not vacuous


def test_synflow_conserves_the_score_sum_of_every_layer_of_a_bias_free_relu_chain() -> None:
    model = linear_chain((10, 30, 50, 20, 5))
    scores = lottery.scores(model, "synflow", input_shape=(10,))
    sums = [float(s.sum()) for s in scores.values()]
    with torch.no_grad():  # R = 1ᵀ |W_4| |W_3| |W_2| |W_1| 1
        r = torch.ones(10, dtype=torch.float64)
        for layer in model[::2]:
            r = layer.weight.abs() @ r
    assert sums == pytest.approx([float(r.sum())] * 4, rel=1e-10)
    assert all(bool((s >= 0).all()) for s in scores.values())
    assert torch.equal(model[0].weight, linear_chain((10, 30, 50, 20, 5))[0].weight)  # signs untouched


def test_iterative_synflow_avoids_the_layer_collapse_of_one_shot_synflow() -> None:
    model = linear_chain((10, 100, 100, 100, 10))
    one_shot = find_mask(model, "synflow", density=0.003, rounds=1, input_shape=(10,))
    iterative = find_mask(model, "synflow", density=0.003, input_shape=(10,))  # 100 rounds, exponential
    assert min(int(m.sum()) for m in one_shot.values()) == 0  # a whole hidden layer pruned: no path left
    assert min(int(m.sum()) for m in iterative.values()) > 0
    assert iterative.kept() == one_shot.kept() == round(0.003 * one_shot.total())
    r = lottery.scores(model, "synflow", mask=iterative, input_shape=(10,))  # flow survives: scores not all 0
    assert all(float(s.sum()) > 0 for s in r.values())


def test_magnitude_source_matches_one_shot_magnitude_pruning_exactly() -> None:
    model = linear_chain((20, 30, 10), seed=3)
    kinds = lottery.prunable(model)
    weights = {k: v.detach().float() for k, v in model.state_dict().items()}
    for strategy, scope in (("global_magnitude", "global"), ("layerwise_magnitude", "layerwise")):
        spec = PruningSpec(strategy=strategy, layers_to_ignore=("output",))
        expected = prune(weights, Mask.ones(model), kinds, spec, target_density=0.137)
        got = lottery.mask_from_scores(
            lottery.scores(model, "magnitude"), density=0.137, scope=scope, ignore=["output"], layer_kinds=kinds
        )
        assert all(torch.equal(got[n], expected[n]) for n in expected)
        assert bool(got["2.weight"].all())  # ignored: kept whole


def test_mask_from_scores_counts_and_breaks_ties_by_position() -> None:
    scores = {"a": torch.zeros(2, 5, dtype=torch.float64), "b": torch.zeros(5, dtype=torch.float64)}
    mask = lottery.mask_from_scores(scores, density=0.4)  # remove round(0.6 * 15) = 9, earliest first
    assert mask.kept() == 6 and isinstance(mask.density, float)
    assert mask["a"].reshape(-1).tolist() == [False] * 9 + [True]
    assert bool(mask["b"].all())
    layerwise = lottery.mask_from_scores(scores, density=0.4, scope="layerwise")
    assert [int(m.sum()) for m in layerwise.values()] == [4, 2]
    with pytest.raises(UserError, match="not all finite"):
        lottery.mask_from_scores({"a": torch.tensor([1.0, float("nan")])}, density=0.5)
    with pytest.raises(UserError, match="scope"):
        lottery.mask_from_scores(scores, density=0.5, scope="per_kind")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), density=st.floats(0.05, 0.95), scope=st.sampled_from(["global", "layerwise"]))
def test_invert_keeps_the_complement_ranking(seed: int, density: float, scope: str) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = {"a": torch.randn(6, 7, generator=g, dtype=torch.float64), "b": torch.randn(9, generator=g)}
    kept = lottery.mask_from_scores(scores, density=density, scope=scope)
    inverted = lottery.mask_from_scores(scores, density=density, scope=scope, invert=True)
    negated = lottery.mask_from_scores({n: -s for n, s in scores.items()}, density=density, scope=scope)
    assert all(torch.equal(inverted[n], negated[n]) for n in scores)
    assert inverted.kept() == kept.kept()
    pools = [list(scores)] if scope == "global" else [[n] for n in scores]
    for pool in pools:  # every inverted survivor scores at most every pruned weight; the original the opposite
        values = torch.cat([scores[n].reshape(-1).double() for n in pool])
        inv = torch.cat([inverted[n].reshape(-1) for n in pool])
        orig = torch.cat([kept[n].reshape(-1) for n in pool])
        if inv.any() and (~inv).any():
            assert values[inv].max() <= values[~inv].min()
        if orig.any() and (~orig).any():
            assert values[orig].min() >= values[~orig].max()


def test_scores_are_reproducible_from_the_seed_and_leave_the_model_unchanged() -> None:
    model = linear_chain((6, 8, 3), seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = lottery.scores(model, "random", seed=4), lottery.scores(model, "random", seed=4)
    c = lottery.scores(model, "random", seed=5)
    assert all(torch.equal(a[n], b[n]) for n in a) and not torch.equal(a["0.weight"], c["0.weight"])
    x, y = data(d=6, classes=3)
    for method in ("snip", "grasp", "synflow"):
        first = lottery.scores(model, method, batches=[(x, y)])
        again = lottery.scores(model, method, batches=[(x, y)])
        assert all(torch.equal(first[n], again[n]) for n in first), method
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="needs training batches"):
        lottery.scores(model, "snip")


def test_float32_scores_rank_like_float64() -> None:
    model = linear_chain((20, 30, 10), seed=2).float()
    x, y = data(n=16, d=20, classes=10)
    for method in ("snip", "synflow"):
        mask = find_mask(model, method, density=0.2, batches=[(x.float(), y)], rounds=1)
        reference = find_mask(copy.deepcopy(model).double(), method, density=0.2, batches=[(x, y)], rounds=1)
        assert mask_distance(mask, reference) < 1e-3, method  # scores are computed in float64 either way


def test_density_schedule_and_early_bird_helpers() -> None:
    assert density_schedule(0.01, 2) == pytest.approx([0.1, 0.01])
    assert density_schedule(0.2, 4, "linear") == pytest.approx([0.8, 0.6, 0.4, 0.2])
    a = Mask({"w": torch.tensor([True, True, False, False])})
    b = Mask({"w": torch.tensor([True, False, True, False])})
    assert mask_distance(a, b) == 0.5 and mask_distance(a, a) == 0.0
    iterations = [0, 10, 20, 30, 40]
    assert settled_at(iterations, [None, 0.3, 0.05, 0.2, 0.01], 0.1) == 40
    assert settled_at(iterations, [None, 0.05, 0.04, 0.03, 0.01], 0.1) == 10
    assert settled_at(iterations, [None, 0.05, 0.04, 0.03, 0.2], 0.1) is None


def kept(n: int, positions: range | list[int]) -> Mask:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[list(positions)] = True
    return Mask({"w": mask})


def test_early_bird_distance_is_normalised_by_the_weights_kept() -> None:
    # by hand: 10 weights, a keeps {0, 1}, b keeps {0, 2}: they differ at 1 and 2 -> 2 / (2 + 2) kept, 2 / 10 considered
    a, b = kept(10, [0, 1]), kept(10, [0, 2])
    assert mask_distance(a, b) == 0.5 and mask_distance(a, b, "considered") == 0.2
    assert mask_distance(a, kept(10, [5, 6])) == 1.0 and mask_distance(a, kept(10, [])) == 1.0  # nothing shared
    assert mask_distance(kept(10, []), kept(10, [])) == 0.0
    # the same 10% of the kept weights replaced at 50% and at 10% remaining: one kept distance, two considered ones
    dense_a, dense_b = kept(100, range(0, 50)), kept(100, range(5, 55))  # 5 of 50 kept weights replaced
    sparse_a, sparse_b = kept(100, range(0, 10)), kept(100, range(1, 11))  # 1 of 10
    assert mask_distance(dense_a, dense_b) == mask_distance(sparse_a, sparse_b) == 0.1
    assert mask_distance(dense_a, dense_b, "considered") == 0.1
    assert mask_distance(sparse_a, sparse_b, "considered") == 0.02
    # so one threshold settles both at the same trace point
    iterations = [0, 10, 20]
    for x, y in ((dense_a, dense_b), (sparse_a, sparse_b)):
        assert settled_at(iterations, [None, 1.0, mask_distance(x, y)], 0.15) == 20
    with pytest.raises(ValueError, match="normalise"):
        mask_distance(a, b, "total")


def test_random_expectation_matches_random_masks() -> None:
    assert random_expectation(0.5, 0.5) == 0.5 and random_expectation(0.1, 0.1) == pytest.approx(0.9)
    assert random_expectation(0.1, 0.1, "considered") == pytest.approx(0.18)
    g = torch.Generator().manual_seed(0)
    for density in (0.5, 0.05):
        n, k = 20000, round(density * 20000)
        draws = [kept(n, torch.randperm(n, generator=g)[:k].tolist()) for _ in range(2)]
        assert mask_distance(*draws) == pytest.approx(random_expectation(density, density), abs=0.02)


def test_score_mode_is_the_references_by_default_and_an_option() -> None:
    """SNIP and GraSP score in train mode, SynFlow in eval mode by default; `score_mode` changes it, which matters
    with BatchNorm (batch statistics in train mode, running statistics in eval mode)."""
    from lottery.pruning.sources import scores, sources

    assert {name: sources.get(name).default_mode for name in ("snip", "grasp", "synflow")} == {
        "snip": "train",
        "grasp": "train",
        "synflow": "eval",
    }
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)  # running statistics far from the batch's: the modes must disagree
        model[1].running_var.fill_(9.0)
    batches = [(torch.randn(16, 6, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 3)]
    names = ["0.weight", "3.weight"]
    train = scores(model, "snip", batches=batches, names=names)
    assert all(
        torch.equal(train[n], scores(model, "snip", batches=batches, names=names, score_mode="train")[n]) for n in names
    )
    evaluated = scores(model, "snip", batches=batches, names=names, score_mode="eval")
    assert not torch.allclose(train["0.weight"], evaluated["0.weight"])
    flow = scores(model, "synflow", names=names, input_shape=(6,))
    assert all(
        torch.equal(flow[n], scores(model, "synflow", names=names, input_shape=(6,), score_mode="eval")[n])
        for n in names
    )
    assert model.training  # the caller's model is untouched
    with pytest.raises(UserError, match="score_mode"):
        scores(model, "snip", batches=batches, names=names, score_mode="test")
