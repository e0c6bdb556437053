"""Magnitude pruning: thresholds and ties by hand, exact counts per level, ignored layers, one-shot, errors."""

from __future__ import annotations

import pytest
import torch

from lottery.errors import UserError
from lottery.models.lenet import LeNet
from lottery.pruning import Mask, layer_pool, prune, strategies
from lottery.spec import PruningSpec

KINDS = {"a.weight": "fc", "b.weight": "output"}


def toy_weights() -> dict[str, torch.Tensor]:
    # Flattened and concatenated in key order: positions 0..6 with |w| = .5 .1 .3 .3 | .1 2 .3
    return {
        "a.weight": torch.tensor([[0.5, -0.1], [0.3, -0.3]]),
        "b.weight": torch.tensor([[0.1, -2.0, 0.3]]),
        "a.bias": torch.tensor([9.0, 9.0]),  # not in the mask: never looked at
    }


def toy_mask(a: list[list[bool]] | None = None, b: list[list[bool]] | None = None) -> Mask:
    return Mask(
        {
            "a.weight": torch.tensor(a if a is not None else [[True, True], [True, True]]),
            "b.weight": torch.tensor(b if b is not None else [[True, True, True]]),
        }
    )


def assert_mask(mask: Mask, a: list[list[bool]], b: list[list[bool]]) -> None:
    assert list(mask) == ["a.weight", "b.weight"]
    assert mask["a.weight"].dtype == torch.bool
    assert mask["a.weight"].tolist() == a
    assert mask["b.weight"].tolist() == b


def test_global_threshold_and_ties_by_hand() -> None:
    # 7 surviving, fraction .5 -> floor(3.5 + .5) = 4 removed: sorted stably by |w| the order is
    # pos 1 (.1), pos 4 (.1), pos 2 (.3), pos 3 (.3), pos 6 (.3), pos 0 (.5), pos 5 (2.0).
    # The three-way tie at .3 goes to the earlier positions 2 and 3; -2.0 is the largest magnitude.
    new = prune(toy_weights(), toy_mask(), KINDS, PruningSpec("global_magnitude", 0.5))
    assert_mask(new, [[True, False], [False, False]], [[False, True, True]])


def test_global_never_counts_already_pruned_weights() -> None:
    weights = toy_weights()
    weights["a.weight"][0, 0] = 0.0  # pruned and zero: must not be "removed" again
    weights["b.weight"][0, 1] = 100.0  # pruned and large: must not come back or count as surviving
    mask = toy_mask([[False, True], [True, True]], [[True, False, True]])
    before = {k: v.clone() for k, v in mask.items()}
    # 5 surviving (pos 1 2 3 4 6), fraction .4 -> 2 removed: the two .1s at pos 1 and 4.
    new = prune(weights, mask, KINDS, PruningSpec("global_magnitude", 0.4))
    assert_mask(new, [[False, False], [True, True]], [[False, False, True]])
    assert all(torch.equal(mask[k], before[k]) for k in mask)  # input not mutated
    assert new.is_subset_of(mask)


def test_layerwise_by_hand_with_module_rate() -> None:
    # a: 4 surviving at .5 -> 2 removed: pos 1 (.1) and pos 2 (first of the tied .3s).
    # b: rate 1/3 by module name 'b' -> floor(1 + .5) = 1 removed: the .1, not the -2.0.
    spec = PruningSpec("layerwise_magnitude", 0.5, rates={"b": 1 / 3})
    new = prune(toy_weights(), toy_mask(), KINDS, spec)
    assert_mask(new, [[True, False], [False, True]], [[False, True, True]])


def test_rate_precedence_name_over_module_over_kind() -> None:
    spec = PruningSpec("layerwise_magnitude", 0.5, rates={"fc": 0.01, "a": 0.01, "a.weight": 0.75, "output": 0.01})
    new = prune(toy_weights(), toy_mask(), KINDS, spec)
    assert_mask(new, [[True, False], [False, False]], [[True, True, True]])  # a: floor(3.5) = 3; b: 0


def lenet() -> LeNet:
    return LeNet((1, 28, 28), 10, (300, 100))


def trained(model: LeNet, level: int) -> dict[str, torch.Tensor]:
    """Stand-in trained weights: fresh values each level, pruned coordinates included."""
    g = torch.Generator().manual_seed(level)
    return {name: torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}


def removed(fraction: float, surviving: int) -> int:
    return int(fraction * surviving + 0.5)


def test_layerwise_lenet_exact_counts_per_level() -> None:
    model = lenet()
    kinds = model.layer_kinds()
    assert kinds == {"hidden.0.weight": "fc", "hidden.1.weight": "fc", "out.weight": "output"}
    spec = PruningSpec("layerwise_magnitude", 0.2, rates={"output": 0.1})
    mask = Mask.ones(model)
    expected = {name: m.numel() for name, m in mask.items()}
    for level in range(1, 6):
        new = prune(trained(model, level), mask, kinds, spec)
        for name, kind in kinds.items():
            expected[name] -= removed(0.1 if kind == "output" else 0.2, expected[name])
        assert {name: int(m.sum()) for name, m in new.items()} == expected
        assert new.is_subset_of(mask) and list(new) == list(mask)
        mask = new
    assert expected == {"hidden.0.weight": 77070, "hidden.1.weight": 9830, "out.weight": 590}


@pytest.mark.parametrize("ignore", [(), ("out.weight",), ("out",), ("output",), ("fc",), ("hidden.0", "out")])
def test_global_lenet_exact_counts_per_level(ignore: tuple[str, ...]) -> None:
    model = lenet()
    kinds = model.layer_kinds()
    spec = PruningSpec("global_magnitude", 0.2, layers_to_ignore=ignore)
    mask = Mask.ones(model)
    pool = layer_pool(mask, kinds, spec)
    ignored = [n for n in mask if n not in pool]
    assert ignored == [n for n in mask if any(e in (n, n.removesuffix(".weight"), kinds[n]) for e in ignore)]
    kept = sum(mask[n].numel() for n in pool)
    for level in range(1, 5):
        weights = trained(model, level)
        new = prune(weights, mask, kinds, spec)
        kept -= removed(0.2, kept)
        assert sum(int(new[n].sum()) for n in pool) == kept
        assert all(bool(new[n].all()) for n in ignored)
        assert new.is_subset_of(mask)
        # one threshold: every surviving pool weight is at least as large as every newly removed one
        gone = torch.cat([weights[n].abs()[mask[n] & ~new[n]] for n in pool])
        assert torch.cat([weights[n].abs()[new[n]] for n in pool]).min() >= gone.max()
        mask = new


def test_global_rejects_differing_rates_unless_ignored() -> None:
    model = lenet()
    mask, kinds, weights = Mask.ones(model), model.layer_kinds(), trained(model, 0)
    with pytest.raises(UserError, match="layerwise_magnitude"):
        prune(weights, mask, kinds, PruningSpec("global_magnitude", 0.2, rates={"output": 0.1}))
    with pytest.raises(UserError, match="layerwise_magnitude"):  # also one-shot, where rates go unused
        prune(weights, mask, kinds, PruningSpec("global_magnitude", 0.2, rates={"output": 0.1}), 0.5)
    spec = PruningSpec("global_magnitude", 0.2, rates={"output": 0.1}, layers_to_ignore=("out",))
    assert prune(weights, mask, kinds, spec)["out.weight"].all()
    same = prune(weights, mask, kinds, PruningSpec("global_magnitude", 0.2, rates={"fc": 0.2, "output": 0.2}))
    assert same.kept() == mask.total() - removed(0.2, mask.total())


@pytest.mark.parametrize("strategy", ["global_magnitude", "layerwise_magnitude"])
@pytest.mark.parametrize("target", [0.5, 0.107, 0.01])
def test_one_shot_hits_target(strategy: str, target: float) -> None:
    model = lenet()
    kinds = model.layer_kinds()
    spec = PruningSpec(strategy, 0.2, layers_to_ignore=("output",))
    start = prune(trained(model, 1), Mask.ones(model), kinds, PruningSpec(strategy, 0.2))  # not from dense
    new = prune(trained(model, 2), start, kinds, spec, target_density=target)
    pool = ["hidden.0.weight", "hidden.1.weight"]
    assert torch.equal(new["out.weight"], start["out.weight"])
    assert new.is_subset_of(start)
    if strategy == "layerwise_magnitude":
        for n in pool:
            assert abs(int(new[n].sum()) - target * new[n].numel()) <= 1
    else:
        total = sum(new[n].numel() for n in pool)
        assert abs(sum(int(new[n].sum()) for n in pool) - target * total) <= 1
    # a target above the current density removes nothing
    assert prune(trained(model, 3), new, kinds, spec, target_density=0.9).kept() == new.kept()


def test_errors() -> None:
    model = lenet()
    mask, kinds, weights = Mask.ones(model), model.layer_kinds(), trained(model, 0)
    with pytest.raises(UserError, match="did you mean 'global_magnitude'"):
        prune(weights, mask, kinds, PruningSpec("global_magnitud"))
    with pytest.raises(UserError, match=r"'fc3'.*hidden\.0\.weight, hidden\.1\.weight, out\.weight"):
        prune(weights, mask, kinds, PruningSpec(layers_to_ignore=("fc3",)))
    with pytest.raises(UserError, match="'conv'"):  # LeNet has no conv layer
        prune(weights, mask, kinds, PruningSpec("layerwise_magnitude", rates={"conv": 0.1}))
    with pytest.raises(UserError, match="did you mean 'out'"):
        prune(weights, mask, kinds, PruningSpec("layerwise_magnitude", rates={"outt": 0.1}))
    with pytest.raises(UserError, match="no layer to prune"):
        prune(weights, mask, kinds, PruningSpec(layers_to_ignore=("fc", "output")))
    with pytest.raises(UserError, match="target density"):
        prune(weights, mask, kinds, PruningSpec(), target_density=1.5)
    assert strategies.names() == ["global_magnitude", "layerwise_magnitude"]
