"""Dynamic sparsity (lottery.dynamic): RigL, SET and GMP against hand-computed answers, ERK's formula, exact counts
at every step, and a kill-and-resume of a RigL run that is bit-identical."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lottery
from lottery.dynamic import Config, erk_densities, gmp_density, gmp_update, layer_counts, rigl_update, set_update
from lottery.dynamic.distribution import allocate, initial_mask, kept_count
from lottery.dynamic.gmp import is_gmp_step
from lottery.dynamic.update import drop_fraction_at, is_update_step
from lottery.errors import UserError
from lottery.pruning.mask import Mask

TESTS = Path(__file__).resolve().parent


def _mask(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def test_one_rigl_update_on_a_4x4_layer() -> None:
    active = _mask([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    weights = torch.tensor(
        [[0.9, -0.8, 0.0, 0.0], [-0.05, 0.5, 0.0, 0.0], [0.7, 0.02, 0.0, 0.0], [0.6, -0.4, 0.0, 0.0]]
    )
    grads = torch.tensor([[5.0, 0.1, 0.3, -2.0], [1.0, 0.2, -0.4, 0.1], [0.1, 0.3, 0.2, 0.6], [0.2, 0.1, 1.5, -0.3]])
    # 8 active, fraction 0.25: 2 dropped, the smallest |w|: (2,1) 0.02 and (1,0) -0.05. Grown: the 2 largest |g|
    # among the 10 inactive ones (the dropped ones included): (0,3) 2.0 and (3,2) 1.5; (1,0)'s 1.0 is third.
    # (0,0)'s gradient 5.0 is on a kept weight, not a candidate.
    new = rigl_update({"w": weights}, {"w": grads}, Mask({"w": active}), 0.25)["w"]
    assert new.tolist() == _mask([[1, 1, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]).tolist()
    # A weight just dropped may be grown again when its gradient is among the largest.
    grads[2, 1] = -1.8
    new = rigl_update({"w": weights}, {"w": grads}, Mask({"w": active}), 0.25)["w"]
    assert new.tolist() == _mask([[1, 1, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]).tolist()


def test_rigl_drop_count_truncates_and_cosine_decay() -> None:
    # floor(n * fraction), as the reference's int32 cast: 7 active at 0.3 -> 2.1 -> 2 dropped.
    active = torch.zeros(10, dtype=torch.bool)
    active[:7] = True
    weights = torch.arange(1.0, 11.0)
    grads = torch.arange(10.0, 0.0, -1.0)  # largest gradients at the front: the dropped ones (0, 1) come back
    new = rigl_update({"w": weights}, {"w": grads}, Mask({"w": active}), 0.3)["w"]
    assert new.tolist() == active.tolist()
    grads = torch.arange(1.0, 11.0)  # largest at the back: 9 and 8 are grown, 0 and 1 stay dropped
    new = rigl_update({"w": weights}, {"w": grads}, Mask({"w": active}), 0.3)["w"]
    assert new.nonzero().reshape(-1).tolist() == [2, 3, 4, 5, 6, 8, 9]
    # Cosine decay of the drop fraction: alpha at 0, alpha / 2 halfway to stop, 0 at and after stop.
    assert drop_fraction_at(0, 0.3, "cosine", 750) == pytest.approx(0.3)
    assert drop_fraction_at(375, 0.3, "cosine", 750) == pytest.approx(0.15)
    assert drop_fraction_at(250, 0.3, "cosine", 750) == pytest.approx(0.3 * 0.75)  # (1 + cos(pi/3)) / 2 = 0.75
    assert drop_fraction_at(750, 0.3, "cosine", 750) == pytest.approx(0.0)
    assert drop_fraction_at(900, 0.3, "constant", 750) == 0.3
    # Every 100 steps, from step 100 up to and including stop.
    assert [t for t in range(1001) if is_update_step(t, 100, 750)] == [100, 200, 300, 400, 500, 600, 700]


def test_set_regrowth_count_and_seeding() -> None:
    active = torch.zeros(10, 10, dtype=torch.bool)
    active.view(-1)[torch.randperm(100, generator=torch.Generator().manual_seed(0))[:30]] = True
    weights = torch.randn(10, 10, generator=torch.Generator().manual_seed(1)) * active
    mask = Mask({"w": active})
    new = set_update({"w": weights}, mask, 0.3, seed=5, step=100)["w"]
    dropped, grown = active & ~new, new & ~active
    assert int(new.sum()) == 30 and int(dropped.sum()) == 9 and int(grown.sum()) == 9  # floor(30 * 0.3) = 9
    # The 9 dropped are the 9 active weights closest to zero.
    smallest = torch.sort(weights[active].abs()).values[:9]
    assert sorted(weights[dropped].abs().tolist()) == smallest.tolist()
    # Growth is a pure function of (seed, step): the same again, other positions for another seed or step.
    assert torch.equal(set_update({"w": weights}, mask, 0.3, seed=5, step=100)["w"], new)
    assert not torch.equal(set_update({"w": weights}, mask, 0.3, seed=6, step=100)["w"], new)
    assert not torch.equal(set_update({"w": weights}, mask, 0.3, seed=5, step=200)["w"], new)
    # Over many seeds the growth is spread over every inactive position (uniform, not a fixed order).
    reached = torch.zeros(10, 10, dtype=torch.bool)
    for seed in range(60):
        reached |= set_update({"w": weights}, mask, 0.3, seed=seed, step=1)["w"] & ~active
    assert bool(reached[~active].all())


def test_gmp_schedule_at_chosen_steps() -> None:
    # Zhu & Gupta eq. 1 with s_i = 0, s_f = 0.9 (density 0.1), t_0 = 100, n * dt = 1000.
    assert gmp_density(0, 0.1, 100, 1100) == 1.0
    assert gmp_density(100, 0.1, 100, 1100) == 1.0
    assert gmp_density(350, 0.1, 100, 1100) == pytest.approx(1 - 0.9 * (1 - 0.75**3))  # 0.4796875
    assert gmp_density(600, 0.1, 100, 1100) == pytest.approx(0.2125)  # 1 - 0.9 * (1 - 0.125)
    assert gmp_density(1100, 0.1, 100, 1100) == 0.1
    assert gmp_density(5000, 0.1, 100, 1100) == 0.1
    # Pruning steps: every 300 after start, and end itself.
    assert [t for t in range(2000) if is_gmp_step(t, 100, 1100, 300)] == [400, 700, 1000, 1100]
    config = Config.resolve("gmp", 0.1, 2000, {"start": 100, "end": 1100, "every": 300})
    assert config.target_density(399) == 1.0
    assert config.target_density(400) == config.target_density(699) == pytest.approx(gmp_density(400, 0.1, 100, 1100))
    assert config.target_density(1100) == 0.1
    # One pruning step on a toy layer pair, uniform: each layer to the density by magnitude.
    weights = {"a": torch.tensor([0.5, -0.1, 0.3, 0.9]), "b": torch.tensor([[0.2, -0.7], [0.05, 0.4]])}
    mask = Mask({"a": torch.ones(4, dtype=torch.bool), "b": torch.ones(2, 2, dtype=torch.bool)})
    new = gmp_update(weights, mask, 0.5, "uniform")
    assert new["a"].tolist() == [True, False, False, True] and new["b"].tolist() == [[False, True], [False, True]]
    # global: one ranking over the pool (0.9, 0.7, 0.5, 0.4 kept).
    new = gmp_update(weights, mask, 0.5, "global")
    assert new["a"].tolist() == [True, False, False, True] and new["b"].tolist() == [[False, True], [False, True]]
    new = gmp_update(weights, mask, 0.25, "global")
    assert new["a"].tolist() == [False, False, False, True] and new["b"].tolist() == [[False, True], [False, False]]


def test_erk_densities_against_the_formula() -> None:
    shapes = {"fc1": (32, 20), "fc2": (16, 32), "out": (3, 16)}
    # eps * sum((n_in + n_out) / (n_in n_out) * n_in n_out) = 0.2 * 1200  =>  eps = 240 / (52 + 48 + 19)
    eps = 240 / 119
    expected = {"fc1": eps * 52 / 640, "fc2": eps * 48 / 512, "out": eps * 19 / 48}
    assert erk_densities(shapes, 0.2) == pytest.approx(expected)
    counts = layer_counts(shapes, 0.2, "erk")
    assert sum(counts.values()) == 240
    assert all(abs(counts[n] - expected[n] * math.prod(shapes[n])) < 1 for n in shapes)
    # A layer whose ERK density would exceed 1 is dense, the rest solved again: 0.5 of 10020 = 5010 kept;
    # eps = 5010 / 212 gives the small layer 0.6 eps > 1, so it keeps its 20 and the big one 4990 of 10000.
    shapes = {"big": (100, 100), "small": (2, 10)}
    assert erk_densities(shapes, 0.5) == pytest.approx({"big": 0.499, "small": 1.0})
    assert layer_counts(shapes, 0.5, "erk") == {"big": 4990, "small": 20}
    # A conv kernel's ratio counts its kernel dimensions: (8 + 4 + 3 + 3) / (8 * 4 * 3 * 3).
    conv = {"conv": (8, 4, 3, 3), "fc": (10, 288)}
    densities = erk_densities(conv, 0.3)
    assert densities["conv"] / densities["fc"] == pytest.approx((18 / 288) / (298 / 2880))
    # uniform: every layer at the density, the counts exact.
    assert layer_counts({"a": (3, 3), "b": (5,)}, 0.5, "uniform") == {"a": 5, "b": 2}  # 4.5, 2.5: tie to a


def test_allocate_is_exact_and_respects_caps() -> None:
    assert allocate(7, [4.5, 2.5], [9, 5]) == [5, 2]  # equal fractions: the earlier layer gets the extra one
    assert allocate(10, [6.0, 4.0], [5, 10]) == [5, 5]  # a capped layer's excess goes elsewhere
    with pytest.raises(ValueError):
        allocate(20, [10.0, 10.0], [5, 10])


def test_initial_masks_are_exact_and_seeded() -> None:
    shapes = {"a": (20, 10), "b": (10, 20), "c": (3, 10)}
    for distribution in ("erk", "uniform", "global"):
        mask = initial_mask(shapes, 0.25, distribution, seed=4)
        assert mask.kept() == kept_count(0.25, 430)
        assert all(torch.equal(mask[n], initial_mask(shapes, 0.25, distribution, seed=4)[n]) for n in shapes)
        assert not all(torch.equal(mask[n], initial_mask(shapes, 0.25, distribution, seed=5)[n]) for n in shapes)
    assert {n: int(m.sum()) for n, m in initial_mask(shapes, 0.25, "uniform", 0).items()} == {"a": 50, "b": 50, "c": 8}


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@settings(max_examples=12, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=2, max_size=4),
    density=st.floats(0.05, 0.95),
    method=st.sampled_from(["rigl", "set", "gmp"]),
    distribution=st.sampled_from(["erk", "uniform", "global"]),
    optimizer=st.sampled_from(["sgd", "adam"]),
)
def test_exact_counts_at_every_step(
    widths: list[int], density: float, method: str, distribution: str, optimizer: str
) -> None:
    torch.manual_seed(0)
    model = _mlp([5, *widths, 3])
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.01)
    )
    options = {"start": 2, "end": 10, "every": 3} if method == "gmp" else {"update_every": 2, "drop_fraction": 0.5}
    handle = lottery.dynamic(model, opt, method, density=density, total_steps=12, distribution=distribution, **options)
    total = handle.mask.total()
    params = dict(model.named_parameters())
    for t in range(12):
        loss = model(torch.randn(4, 5)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mask = handle.mask
        target = kept_count(handle.config.target_density(t), total)
        assert mask.kept() == target, (t, mask.kept(), target)
        for name, m in mask.items():
            assert bool((params[name].detach()[~m] == 0).all())
            for value in opt.state[params[name]].values():
                if value.shape == m.shape:
                    assert bool((value[~m] == 0).all())
    assert handle.step == 12
    assert len(handle.history) == sum(handle.config.is_update_step(t) for t in range(12))
    for entry in handle.history:
        dropped, grown = sum(entry["dropped"].values()), sum(entry["grown"].values())
        assert grown == (0 if method == "gmp" else dropped)
    handle.remove()


def test_grown_weights_start_at_zero_with_zero_state() -> None:
    torch.manual_seed(0)
    model = _mlp([6, 16, 3])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    handle = lottery.dynamic(model, opt, "rigl", density=0.3, total_steps=40, update_every=5)
    params = dict(model.named_parameters())
    seen = 0
    for _ in range(20):
        before = handle.mask
        model(torch.randn(8, 6)).square().mean().backward()
        snapshot = {n: (params[n].detach().clone(), opt.state[params[n]].get("exp_avg")) for n in before}
        snapshot = {n: (w, None if s is None else s.clone()) for n, (w, s) in snapshot.items()}
        opt.step()
        opt.zero_grad()
        for name, m in handle.mask.items():
            grown = m & ~before[name]
            seen += int(grown.sum())
            weight, state = snapshot[name]
            assert bool((weight[grown] == 0).all())  # inactive until now: exactly zero before the step
            if state is not None:
                assert bool((state[grown] == 0).all())
    assert seen > 0


def test_options_and_errors() -> None:
    model = _mlp([4, 8, 2])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError, match="applies to gmp"):
        lottery.dynamic(model, opt, "rigl", density=0.5, total_steps=100, every=10)
    with pytest.raises(UserError, match="applies to rigl and set"):
        lottery.dynamic(model, opt, "gmp", density=0.5, total_steps=100, drop_fraction=0.2)
    with pytest.raises(UserError, match="unknown option 'update_evry'"):
        lottery.dynamic(model, opt, "rigl", density=0.5, total_steps=100, update_evry=10)
    with pytest.raises(UserError, match="density"):
        lottery.dynamic(model, opt, "set", density=1.5, total_steps=100)
    with pytest.raises(UserError, match="after the end of training"):
        lottery.dynamic(model, opt, "rigl", density=0.5, total_steps=100, stop="200it")
    with pytest.raises(UserError, match="steps_per_epoch"):
        lottery.dynamic(model, opt, "rigl", density=0.5, total_steps=100, stop="1ep")
    with pytest.raises(UserError, match="more than 100%"):
        lottery.dynamic(model, opt, "rigl", density=0.5, total_steps=100, stop="150%")
    with pytest.raises(UserError, match="unknown dynamic sparsity method"):
        lottery.dynamic(model, opt, "rigel", density=0.5, total_steps=100)
    config = Config.resolve("rigl", 0.5, 1000, {"stop": "75%", "update_every": "50it"})
    assert (config.stop, config.update_every, config.drop_schedule) == (750, 50, "cosine")
    assert Config.resolve("rigl", 0.5, 1000, {"stop": "2ep"}, steps_per_epoch=100).stop == 200
    handle = lottery.dynamic(model, opt, "set", density=0.5, total_steps=100, seed=1)
    model_2 = _mlp([4, 8, 2])
    other = lottery.dynamic(model_2, torch.optim.SGD(model_2.parameters(), lr=0.1), "set", density=0.4, total_steps=100)
    with pytest.raises(UserError, match="other settings"):
        handle.load_state_dict(other.state_dict())
    handle.remove()
    other.remove()


def test_remove_detaches() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))  # every weight's gradient of sum(y) is the input's sum: not zero
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = lottery.dynamic(model, opt, "rigl", density=0.25, total_steps=10, update_every=1)
    assert int((model[0].weight == 0).sum()) == 9
    handle.remove()
    model(torch.rand(3, 4) + 0.5).sum().backward()
    opt.step()
    assert handle.step == 0 and handle.history == []
    assert bool((model[0].weight != 0).all())


def test_kill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    script = TESTS / "dynamic_resume_script.py"
    spec = importlib.util.spec_from_file_location("dynamic_resume_script", script)
    assert spec is not None and spec.loader is not None
    resume_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(resume_script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "kill"], env=env, timeout=120, capture_output=True
    )
    assert killed.returncode == -9, killed.stderr.decode()  # SIGKILL after step 37; the last checkpoint is step 30
    assert not (tmp_path / "kill.pt").exists()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 30
    resume_script.main(tmp_path, "resume")  # in this process: the same code, one thread (tests/conftest.py)
    resume_script.main(tmp_path, "full")  # uninterrupted
    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert a["step"] == b["step"] == 60
    assert len(a["history"]) == 9 and a["history"] == b["history"]  # updates at 5, 10, ..., 45 (stop: 75% of 60)
    assert all(torch.equal(a["mask"][n], b["mask"][n]) for n in a["mask"])
    assert all(torch.equal(a["model"][n], b["model"][n]) for n in a["model"])
