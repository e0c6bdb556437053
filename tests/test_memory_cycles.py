"""A finished network's tensors are freed by reference counting, not left to Python's cyclic garbage collector.

Tensors held in a reference cycle live until the next full collection; in one process training many networks
(the demo: 62) they piled up to ~80 MB between collections and fragmented the C heap, raising the peak memory by
~2 MiB a network (docs/performance.md). The cycle was the mask attachment's: hooks and a bound `step` on the
optimizer that led back to the optimizer (and through it to the weights, gradients and Adam moments)."""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lottery
from conftest import run_tiny


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """Run the block with the cyclic collector off; then the list of what only a collection would have freed."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    found: list[object] = []
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        gc.set_debug(0)
        found.extend(gc.garbage)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def steps(model: nn.Module, optimizer: torch.optim.Optimizer, count: int = 3) -> None:
    for _ in range(count):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(4, 12)), torch.randint(0, 3, (4,))).backward()
        optimizer.step()


@pytest.mark.parametrize("scheduler", ["none", "before", "after"])
@pytest.mark.parametrize("kind", ["adam", "sgd", "adamax"])
def test_attached_optimizer_is_freed_without_a_collection(kind: str, scheduler: str) -> None:
    """attach (fast step, hooks), with or without an LR scheduler wrapping step before or after: dropping the
    optimizer frees it and its state at once; the mask held in every step and the scheduler saw them."""
    model = net()
    mask = lottery.prune(model, fraction=0.5)
    make = {
        "adam": lambda params: torch.optim.Adam(params, lr=0.01),
        "sgd": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
        "adamax": lambda params: torch.optim.Adamax(params, lr=0.01),  # not zero-preserving: re-masked after steps
    }[kind]
    make(model.parameters())  # torch's first optimizer in a process stays in a cycle (a lazy import's frames)
    with cyclic_garbage() as garbage:
        optimizer = make(model.parameters())
        lr = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5) if scheduler == "before" else None
        lottery.attach(mask, optimizer, model=model)  # the handle is not kept: the mask must hold regardless
        lr = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5) if scheduler == "after" else lr
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
            for _ in range(2):
                steps(model, optimizer, 1)
                if lr is not None:
                    lr.step()
        state = next(iter(optimizer.state.values()))
        alive = weakref.ref(optimizer), [weakref.ref(t) for t in state.values() if isinstance(t, torch.Tensor)]
        del optimizer, state, lr
        assert alive[0]() is None, "the optimizer is kept alive by a reference cycle"
        assert all(t() is None for t in alive[1])
    assert not any(isinstance(o, (torch.optim.Optimizer, torch.Tensor)) for o in garbage)
    for name, m in mask.items():
        weight = dict(model.named_parameters())[name]
        assert torch.equal(weight[~m], torch.zeros_like(weight[~m]))
    if scheduler != "none":
        assert model[1].weight.grad is not None


def test_attachment_outlives_its_optimizer_clearly() -> None:
    """The attachment holds its optimizer weakly: once the optimizer is gone, using it says so in one line, and
    remove() is a no-op."""
    model = net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    handle = lottery.attach(lottery.prune(model, fraction=0.5), optimizer, model=model)
    assert handle.optimizer is optimizer
    del optimizer
    with pytest.raises(RuntimeError, match="no longer exists"):
        handle.apply()
    handle.remove()


@pytest.mark.parametrize("method", ["rigl", "gmp"])
def test_dynamic_handle_lets_its_optimizer_go(method: str) -> None:
    """lottery.dynamic's hook and attachment hold nothing that leads back to the optimizer either."""
    model = net()
    torch.optim.SGD(model.parameters(), lr=0.1)  # torch's first optimizer in a process (see above)
    with cyclic_garbage() as garbage:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        options = {"update_every": 2} if method == "rigl" else {"every": 2}
        handle = lottery.dynamic(model, optimizer, method, density=0.5, total_steps=4, **options)
        assert handle.optimizer is optimizer
        steps(model, optimizer, 4)
        alive = weakref.ref(optimizer)
        del optimizer
        assert alive() is None, "the optimizer is kept alive by a reference cycle"
        assert len(handle.history) >= 1
        mask = handle.mask
    assert not any(isinstance(o, (torch.optim.Optimizer, torch.Tensor)) for o in garbage)
    for name, m in mask.items():
        weight = dict(model.named_parameters())[name]
        assert torch.equal(weight[~m], torch.zeros_like(weight[~m]))


def test_training_loop_leaves_no_tensor_in_cyclic_garbage(tmp_path: Path) -> None:
    """A tiny IMP with both controls through the training loop (stacked and single runs, pruned masks attached):
    nothing it allocated waits for the cyclic collector."""
    with cyclic_garbage() as garbage:
        run_tiny(tmp_path / "runs", "imp.levels=2", "controls.kinds=['random_reinit', 'random_prune']", "replicates=2")
    tensors = [o for o in garbage if isinstance(o, torch.Tensor)]
    held = [type(o).__qualname__ for o in garbage if isinstance(o, (torch.optim.Optimizer, nn.Module))]
    assert not tensors and not held, f"{len(tensors)} tensors and {held[:5]} left to the cyclic collector"
