"""`pruning.structure`: channel masks of every supported built-in family stay consistent (a removed channel is
removed from every layer reading it, so the smaller network computes the same function), N:M masks keep exactly n
of every m, the random controls keep the structure, unsupported models and layers are refused in one line, and
the default ('unstructured') is what it was: no new setting enters an existing spec's hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import lottery
from conftest import run_tiny, tiny_spec
from lottery.errors import UserError
from lottery.export import compact
from lottery.models import registry
from lottery.pruning import Mask, random_global_like, random_like
from lottery.pruning.channels import alive, is_channel_mask, shapes_of, units
from lottery.pruning.structure import Structure, groups_view, is_nm, recipe_reads
from lottery.spec import ModelSpec, PruningSpec, spec_hash, to_dict

FAMILIES = [  # (name, input shape) of every family that supports channel pruning, and each depth's variant
    ("lenet", (1, 6, 6)),
    ("conv2", (3, 8, 8)),
    ("conv4", (3, 8, 8)),
    ("conv6", (3, 8, 8)),
    ("vgg11", (3, 16, 16)),
    ("vgg16", (3, 16, 16)),
    ("resnet20", (3, 8, 8)),
    ("resnet32", (3, 8, 8)),
]


def build(name: str, width: int, shape: tuple[int, ...], shortcut: str = "projection") -> nn.Module:
    spec = ModelSpec(name=f"lenet_{width}_{max(1, width // 2)}") if name == "lenet" else None
    spec = spec or ModelSpec(name=name, width=width, shortcut=shortcut)
    model = registry.build(spec, shape, 5, 0)
    with torch.no_grad():  # BatchNorm statistics and affine terms that are not the identity: a removed channel's
        for module in model.modules():  # constant must really be unread for the outputs to agree
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(generator=torch.Generator().manual_seed(1))
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    return model.eval()


def unit_counts(mask: Mask) -> dict[str, int]:
    all_units = units(shapes_of(mask))
    counts: dict[str, int] = {}
    for unit, keep in zip(all_units, alive(mask, all_units).tolist(), strict=True):
        counts[unit.group] = counts.get(unit.group, 0) + int(keep)
    return counts


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(FAMILIES),
    width=st.integers(2, 6),
    fraction=st.sampled_from([0.2, 0.5, 0.8]),
    levels=st.integers(1, 3),
    scope=st.sampled_from(["global", "layerwise"]),
    shortcut=st.sampled_from(["projection", "padding"]),
)
def test_channel_masks_keep_every_shape_consistent(
    family: tuple[str, tuple[int, ...]], width: int, fraction: float, levels: int, scope: str, shortcut: str
) -> None:
    name, shape = family
    model = build(name, width, shape, shortcut)
    mask = Mask.ones(model)
    for _ in range(levels):
        new = lottery.prune(model, mask, fraction=fraction, scope=scope, structure="channel")
        assert new.is_subset_of(mask) and is_channel_mask(new)
        assert all(count >= 1 for count in unit_counts(new).values())  # no layer loses its last channel
        mask = new
    mask.apply_(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    small = compact.compact_state(state, Mask({n: mask[n] for n in mask}))
    info = compact.describe(to_dict(tiny_spec())["model"] | {"name": "x"}, mask, state, small)
    for layer, widths in info["widths"].items():  # each layer's kept rows and columns are its channels' counts
        rows = mask[layer].reshape(mask[layer].shape[0], -1).any(1)
        cols = mask[layer].transpose(0, 1).reshape(mask[layer].shape[1], -1).any(1)
        assert widths["compact"] == [int(rows.sum()), int(cols.sum())]
    smaller = compact.shrink(build(name, width, shape, shortcut), small).eval()  # every shape fits (strict load)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = model(x), smaller(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in smaller.parameters()) <= sum(p.numel() for p in model.parameters())


def test_channel_units_by_hand_lenet_and_resnet_stream() -> None:
    lenet = build("lenet", 4, (1, 2, 2))  # 4 -> 4 -> 2 -> 5
    mask = Mask.ones(lenet)
    with torch.no_grad():
        lenet.hidden[0].weight.copy_(torch.tensor([[1.0] * 4, [4.0] * 4, [0.1] * 4, [3.0] * 4]))
        lenet.hidden[1].weight.copy_(torch.tensor([[9.0] * 4, [0.5] * 4]))
    pruned = lottery.prune(lenet, mask, fraction=0.5, scope="layerwise", structure="channel", ignore=["output"])
    # hidden.0: units of mean |w| 1, 4, 0.1, 3 -> the two lowest (rows 0 and 2) go, and hidden.1's columns 0 and 2
    assert pruned["hidden.0.weight"].all(1).tolist() == [False, True, False, True]
    assert pruned["hidden.1.weight"][:, [0, 2]].sum() == 0 and pruned["hidden.1.weight"][0, [1, 3]].all()
    # hidden.1 (2 units): rounded_count(0.5, 2) = 1, the unit of mean 0.5 goes, with out's column 1
    assert pruned["hidden.1.weight"].any(1).tolist() == [True, False] and not pruned["out.weight"][:, 1].any()
    resnet = build("resnet20", 2, (3, 4, 4))
    stream = [u for u in units(shapes_of(Mask.ones(resnet))) if u.group == "conv.weight"]
    assert len(stream) == 2  # the stem's channels, written by every stage-1 block's conv2 too
    assert {name for name, _, _ in stream[0].producers} == {"conv.weight"} | {
        f"blocks.{b}.conv2.weight" for b in (0, 1, 2)
    }
    assert {name for name, _, _ in stream[0].consumers} == {f"blocks.{b}.conv1.weight" for b in (0, 1, 2, 3)} | {
        "blocks.3.shortcut.0.weight"
    }


@pytest.mark.parametrize(
    "name", ["resnet18", "squeezenet1_1", "inception_v3"]
)  # ImageNet families: no channel plan; refused before any work
def test_channel_refuses_other_models_in_one_line(name: str) -> None:
    with torch.device("meta"):
        model = registry.build(ModelSpec(name=name), (3, 299, 299) if "inception" in name else (3, 64, 64), 10, 0)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n in lottery.prunable(model)}
    with pytest.raises(UserError, match="supports the built-in lenet_\\*, conv2/conv4/conv6") as error:
        units(shapes)
    assert "\n" not in str(error.value)
    plain = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(UserError, match="pruning.structure = 'channel' supports"):
        lottery.prune(plain, structure="channel")


@settings(max_examples=25, deadline=None)
@given(
    nm=st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 2), (3, 16)]),
    rows=st.integers(1, 6),
    groups=st.integers(1, 5),
    fraction=st.sampled_from([0.2, 0.5]),
)
def test_nm_masks_keep_exactly_n_in_every_group(nm: tuple[int, int], rows: int, groups: int, fraction: float) -> None:
    n, m = nm
    weights = {"a.weight": torch.randn(rows, groups * m), "b.weight": torch.randn(3, 2, m, 1)}  # conv: in × kh × kw
    mask = Mask({k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items()})
    previous = mask
    for _ in range(m):  # at least one weight per group per level: m levels always reach n
        mask = lottery.prune(weights, mask, fraction=fraction, structure="n:m", n=n, m=m, kinds={k: "fc" for k in mask})
        assert mask.is_subset_of(previous) and all(is_nm(t, Structure("n:m", n, m)) for t in mask.values())
        previous = mask
    for name, t in mask.items():
        assert torch.equal(groups_view(t, m, name).sum(-1), torch.full(groups_view(t, m, name).shape[:2], n))
        kept = groups_view(weights[name].abs(), m, name)  # the n largest |w| of every group are the kept ones
        threshold = torch.where(groups_view(t, m, name), kept, torch.inf).amin(-1, keepdim=True)
        assert bool((torch.where(groups_view(t, m, name), -torch.inf, kept) <= threshold).all())
    ones = Mask({k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items()})
    one_shot = lottery.prune(weights, ones, density=n / m, structure="n:m", n=n, m=m)
    assert all(is_nm(t, Structure("n:m", n, m), exact=True) for t in one_shot.values())


def test_nm_refusals_in_one_line() -> None:
    weights = {"a.weight": torch.randn(4, 6)}
    ones = Mask({"a.weight": torch.ones(4, 6, dtype=torch.bool)})
    with pytest.raises(UserError, match="multiple of m = 4: a.weight has 6; list it in pruning.layers_to_ignore"):
        lottery.prune(weights, ones, structure="n:m")
    with pytest.raises(UserError, match="keeps at least 2 of every 4 weights"):
        lottery.prune(
            {"a.weight": torch.randn(4, 8)},
            Mask({"a.weight": torch.ones(4, 8, dtype=torch.bool)}),
            density=0.25,
            structure="n:m",
        )
    for bad in (dict(structure="n:m", n=4, m=4), dict(structure="n:m", n=0, m=4), dict(structure="unstructured", n=1)):
        with pytest.raises(UserError, match="pruning.n"):
            PruningSpec(**bad).validate()
    with pytest.raises(UserError, match="pruning.structure"):
        PruningSpec(structure="blocks").validate()


@pytest.mark.parametrize("structure", ["channel", "n:m"])
def test_random_controls_keep_the_structure(structure: str) -> None:
    model = build("lenet", 8, (1, 4, 4))
    imp = Mask.ones(model)
    for _ in range(2):
        imp = lottery.prune(model, imp, fraction=0.4, structure=structure)
    spec = PruningSpec(structure=structure)
    draws = [random_like(imp, None, torch.Generator().manual_seed(s), spec) for s in range(3)]
    glob = random_global_like(imp, torch.Generator().manual_seed(0), list(imp), spec)
    assert not all(torch.equal(draws[0][k], draws[1][k]) for k in imp)  # random: seeds give different masks
    assert all(
        torch.equal(a[k], b[k])
        for a, b in [(draws[0], random_like(imp, None, torch.Generator().manual_seed(0), spec))]
        for k in imp
    )
    for r in draws:
        if structure == "channel":
            assert is_channel_mask(r) and unit_counts(r) == unit_counts(imp)  # same channels per layer, elsewhere
        else:
            for name in imp:  # every group keeps the IMP group's count
                assert torch.equal(groups_view(r[name], 4, name).sum(-1), groups_view(imp[name], 4, name).sum(-1))
    if structure == "channel":
        assert is_channel_mask(glob) and sum(unit_counts(glob).values()) == sum(unit_counts(imp).values())
    nested = random_like(imp, draws[0], torch.Generator().manual_seed(9), spec)  # `previous`: the draw nests
    assert nested.is_subset_of(draws[0])


def test_default_is_unchanged_and_hashes_stay() -> None:
    spec = tiny_spec("imp.levels=1")
    assert "structure" not in json.dumps(to_dict(spec, omit_defaults=True))
    assert spec_hash(spec) != spec_hash(tiny_spec("imp.levels=1", "pruning.structure=channel"))
    explicit = tiny_spec("pruning.structure='n:m'", "pruning.n=2", "pruning.m=4")
    assert spec_hash(tiny_spec("pruning.structure='n:m'")) == spec_hash(explicit)
    model = build("lenet", 8, (1, 4, 4))
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            lottery.prune(model, fraction=0.3).values(),
            lottery.prune(model, fraction=0.3, structure="unstructured").values(),
            strict=True,
        )
    )


def test_engine_runs_structured_imp_controls_and_sources(tmp_path: Path) -> None:
    run, _ = run_tiny(
        tmp_path,
        "imp.levels=2",
        "pruning.structure=channel",
        "controls.kinds=['random_prune']",
        "masks.sources=['magnitude']",
        "masks.densities=[0.5]",
    )
    masks = {
        p.parent.parent.name + str(i): Mask.load(p) for i, p in enumerate(sorted(tmp_path.glob("**/mask.safetensors")))
    }
    masks = {k: m for k, m in masks.items() if m.density < 1}
    kinds = {k.rstrip("0123456789") for k in masks}
    assert kinds == {"imp", "random_prune", "magnitude"} and all(is_channel_mask(m) for m in masks.values())


def test_a_structured_masks_run_is_never_the_unstructured_one(tmp_path: Path) -> None:
    """The [masks] run of a channel spec trains its own network: the unstructured one already in the store (same
    source, density, seed) is not reused; `recipe_reads` is what its recipe adds, nothing at the default."""
    masks = ("masks.sources=['magnitude']", "masks.densities=[0.5]")
    run_tiny(tmp_path, *masks)
    before = set(tmp_path.glob("networks/magnitude/*"))
    run_tiny(tmp_path, *masks, "pruning.structure=channel")
    (new,) = set(tmp_path.glob("networks/magnitude/*")) - before
    assert is_channel_mask(Mask.load(new / "mask.safetensors"))
    assert not is_channel_mask(Mask.load(next(iter(before)) / "mask.safetensors"))
    assert recipe_reads(PruningSpec()) == {} and recipe_reads(PruningSpec(structure="n:m", m=8)) == {
        "structure": "n:m",
        "m": 8,
    }
