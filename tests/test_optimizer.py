"""`exact_step` is `torch.optim`'s step bit for bit, and declines what it does not reproduce."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lottery.exact_step import exact_step
from lottery.models.lenet import LeNet
from lottery.pruning import Mask, attach


def random_mask(model: torch.nn.Module, density: float, seed: int) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask({name: torch.rand(m.shape, generator=g) < density for name, m in Mask.ones(model).items()})


@pytest.mark.parametrize(
    "kind, options",
    [
        ("adam", {}),
        ("adam", {"weight_decay": 1e-3}),
        ("adamw", {"weight_decay": 1e-2}),
        ("adam", {"weight_decay": 1e-2, "decoupled_weight_decay": True}),
        ("sgd", {}),
        ("sgd", {"weight_decay": 5e-4}),
        ("sgd", {"momentum": 0.9, "weight_decay": 1e-4}),
        ("sgd", {"momentum": 0.9, "nesterov": True}),
    ],
)
def test_exact_step_is_torch_step_bit_for_bit(kind: str, options: dict) -> None:
    torch.manual_seed(0)
    ours = LeNet((1, 8, 8), 10, (32, 16))
    theirs = copy.deepcopy(ours)

    def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        params = model.parameters()
        if kind == "adamw":
            return torch.optim.AdamW(params, 1e-2, **options)
        return torch.optim.Adam(params, 1e-2, **options) if kind == "adam" else torch.optim.SGD(params, 0.1, **options)

    ours_opt, theirs_opt = optimizer(ours), optimizer(theirs)
    mask = random_mask(ours, 0.3, 1)
    attach(mask, ours_opt, model=ours)  # exact_step runs the step hooks: gradients masked, no re-mask after it
    # the reference: torch's own step, then a re-mask
    attach(mask, theirs_opt, model=theirs, remask_weights=True, fast_step=False)
    for _ in range(60):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        for model, opt, fast in ((ours, ours_opt, True), (theirs, theirs_opt, False)):
            for group in opt.param_groups:
                group["lr"] *= 0.99
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if fast:
                assert exact_step(opt)  # and no re-mask: the pruned weights must not move
            else:
                opt.step()
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a.signbit(), b.signbit())  # every bit, signs of zeros included
    mine, reference = ours_opt.state_dict()["state"], theirs_opt.state_dict()["state"]
    assert mine.keys() == reference.keys()
    for i in reference:
        for key, value in reference[i].items():
            assert mine[i][key].dtype == value.dtype and torch.equal(mine[i][key], value), (i, key)


def test_exact_step_declines_what_it_does_not_reproduce() -> None:
    model = LeNet((1, 8, 8), 10, (8,))
    model(torch.zeros(1, 1, 8, 8)).sum().backward()
    for optimizer in (
        torch.optim.Adam(model.parameters(), amsgrad=True),
        torch.optim.Adam(model.parameters(), foreach=True),
        torch.optim.RAdam(model.parameters()),
        torch.optim.SGD(model.parameters(), lr=0.1, maximize=True),
    ):
        before = [p.detach().clone() for p in model.parameters()]
        assert not exact_step(optimizer)
        assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("scheduler", ["none", "before", "after"])
def test_attached_fast_step_is_torch_step_bit_for_bit(scheduler: str) -> None:
    """`attach` routes a CPU AdamW's step() through exact_step: every bit as torch's step, LR schedulers created
    before or after it still step, and `remove()` restores the optimizer's own step."""
    torch.manual_seed(0)
    ours = LeNet((1, 8, 8), 10, (32, 16))
    theirs = copy.deepcopy(ours)
    mask = random_mask(ours, 0.3, 2)
    opts, scheds = [], []
    for model, fast in ((ours, True), (theirs, False)):
        opt = torch.optim.AdamW(model.parameters(), 1e-2, weight_decay=1e-2)
        if scheduler == "before":
            scheds.append(torch.optim.lr_scheduler.StepLR(opt, 3, 0.5))
        handle = attach(mask, opt, model=model, fast_step=fast, remask_weights=not fast)
        if scheduler == "after":
            scheds.append(torch.optim.lr_scheduler.StepLR(opt, 3, 0.5))
        opts.append((model, opt, handle))
    assert "step" in opts[0][1].__dict__
    for _ in range(10):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        for model, opt, _ in opts:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        for sched in scheds:
            sched.step()
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a.signbit(), b.signbit())
    assert opts[0][1].param_groups[0]["lr"] == opts[1][1].param_groups[0]["lr"]
    opts[0][2].remove()
    assert ("step" in opts[0][1].__dict__) == (scheduler == "before")  # back to the scheduler's, or the class's
