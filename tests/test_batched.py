"""K copies trained together (`train_copies`) give the weights of K separate `lottery.training.train` runs with the
same seeds, and `exact_step` is `torch.optim`'s step bit for bit."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lottery.data.augment import cifar_augment
from lottery.data.base import Splits
from lottery.data.batches import Augment
from lottery.data.synthetic import make
from lottery.errors import UserError
from lottery.models.conv import ConvNet
from lottery.models.lenet import LeNet
from lottery.models.resnet import ResNet
from lottery.pruning import Mask, MaskEnforcer
from lottery.spec import TrainingSpec
from lottery.store import RunDir
from lottery.training import Job, Runtime, Schedule, train
from lottery.training.batched import should_batch, train_copies, unsupported
from lottery.training.optimizer import exact_step, make_optimizer

SGD = TrainingSpec(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, eval_every="1000it")
ADAM = TrainingSpec(optimizer="adam", lr=2e-3, weight_decay=1e-4, batch_size=16, eval_every="1000it")


def splits(shape: tuple[int, ...], n: int = 160) -> Splits:
    raw = make(shape, 10, train=n, test=8, seed=3)
    empty = raw.train_x[:0]
    return Splits(
        raw.train_x - 0.5,
        raw.train_y,
        empty,
        raw.train_y[:0],
        empty,
        raw.train_y[:0],
        10,
        torch.full((shape[0],), -0.5),
    )


def random_mask(model: torch.nn.Module, density: float, seed: int) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask({name: torch.rand(m.shape, generator=g) < density for name, m in Mask.ones(model).items()})


def separate(
    model: torch.nn.Module,
    mask: Mask | None,
    training: TrainingSpec,
    schedule: Schedule,
    data: Splits,
    start: int,
    augment: Augment | None,
    tmp: Path,
    optimizer_state: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """The reference: one `lottery.training.train` run (the real loop), its final weights."""
    run = RunDir(tmp / f"run_{training.data_order_seed}_{len(list(tmp.iterdir()))}")
    job = Job(
        training=training, schedule=schedule, start=start, mask=mask, augment=augment, optimizer_state=optimizer_state
    )
    train(run, copy.deepcopy(model), data, job, Runtime(progress=False))
    return run.read_tensors("final.safetensors")


def seeds(training: TrainingSpec, i: int) -> TrainingSpec:
    return dataclasses.replace(training, init_seed=i, data_order_seed=10 + i, augmentation_seed=20 + i)


def lenets(k: int) -> list[LeNet]:
    models = []
    for i in range(k):
        model = LeNet((1, 28, 28), 10, (24, 12))
        model.initialize("kaiming_normal", torch.Generator().manual_seed(i))
        models.append(model)
    return models


@pytest.mark.parametrize("training", [SGD, ADAM], ids=["sgd_momentum_wd", "adam_wd"])
@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_lenet_copies_match_separate_runs(training: TrainingSpec, mode: str, tmp_path: Path) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 25, 0, [15], 1000)  # crosses an epoch and a milestone
    models = lenets(3)
    masks = [random_mask(models[0], 0.3, 0), None, random_mask(models[2], 0.5, 2)]  # dense copy included
    trainings = [seeds(training, i) for i in range(3)]
    got = train_copies(models, masks, trainings, schedule, data, start=3, mode=mode)
    for i in range(3):
        want = separate(models[i], masks[i], trainings[i], schedule, data, 3, None, tmp_path)
        assert set(got[i]) == set(want)
        for name in want:
            if mode == "sequential":  # the same kernels on the same tensors: bit for bit
                assert torch.equal(got[i][name], want[name]), name
            else:
                torch.testing.assert_close(got[i][name], want[name], rtol=1e-4, atol=1e-5)
        if masks[i] is not None:
            for name, m in masks[i].items():
                assert torch.all(got[i][name][~m] == 0), name  # pruned weights exactly zero
        assert not torch.equal(got[i]["out.weight"], models[i].out.weight.detach())  # it trained


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_resnet_copies_with_batchnorm_and_augmentation_match_separate_runs(mode: str, tmp_path: Path) -> None:
    data = splits((3, 8, 8), n=64)
    augment = cifar_augment(data.pad_value, padding=2)
    schedule = Schedule(len(data.train_x) // 16, 6, 0, [], 1000)
    models = []
    for i in range(2):
        model = ResNet((3, 8, 8), 10, 8, width=4)
        model.initialize("kaiming_normal", torch.Generator().manual_seed(i))
        models.append(model)
    masks = [random_mask(models[0], 0.4, 5), random_mask(models[1], 0.6, 6)]
    trainings = [seeds(SGD, i) for i in range(2)]
    got = train_copies(models, masks, trainings, schedule, data, start=0, augment=augment, mode=mode)
    for i in range(2):
        want = separate(models[i], masks[i], trainings[i], schedule, data, 0, augment, tmp_path)
        assert set(got[i]) == set(want)
        for name in want:  # running statistics and num_batches_tracked included
            if mode == "sequential":
                assert torch.equal(got[i][name], want[name]), name
            else:
                torch.testing.assert_close(got[i][name], want[name], rtol=1e-4, atol=1e-5)


def test_restored_optimizer_state_is_masked_and_matches_separate_runs(tmp_path: Path) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 12, 0, [], 1000)
    models = lenets(2)
    states = []
    for model in models:  # a few dense steps give a non-trivial Adam state, as IMP's 'rewind' option restores
        optimizer = make_optimizer(model.parameters(), ADAM)
        for _ in range(3):
            optimizer.zero_grad()
            F.cross_entropy(model(data.train_x[:16]), data.train_y[:16]).backward()
            optimizer.step()
        states.append(copy.deepcopy(optimizer.state_dict()))
    masks = [random_mask(m, 0.3, i) for i, m in enumerate(models)]
    trainings = [seeds(ADAM, i) for i in range(2)]
    for mode in ("sequential", "vmap"):
        got = train_copies(models, masks, trainings, schedule, data, start=4, optimizer_states=states, mode=mode)
        for i in range(2):
            want = separate(models[i], masks[i], trainings[i], schedule, data, 4, None, tmp_path, states[i])
            for name in want:
                torch.testing.assert_close(got[i][name], want[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kind, options",
    [
        ("adam", {}),
        ("adam", {"weight_decay": 1e-3}),
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
        return torch.optim.Adam(params, 1e-2, **options) if kind == "adam" else torch.optim.SGD(params, 0.1, **options)

    ours_opt, theirs_opt = optimizer(ours), optimizer(theirs)
    mask = random_mask(ours, 0.3, 1)
    enforcers = [MaskEnforcer(ours, mask), MaskEnforcer(theirs, mask)]
    for enforcer in enforcers:
        enforcer.mask_weights()
    for _ in range(60):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        for model, opt, enforcer, fast in (
            (ours, ours_opt, enforcers[0], True),
            (theirs, theirs_opt, enforcers[1], False),
        ):
            for group in opt.param_groups:
                group["lr"] *= 0.99
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            enforcer.mask_grads()
            if fast:
                assert exact_step(opt)  # and no re-mask: the pruned weights must not move
            else:
                opt.step()
                enforcer.mask_weights()
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
        torch.optim.AdamW(model.parameters()),
        torch.optim.SGD(model.parameters(), lr=0.1, maximize=True),
    ):
        before = [p.detach().clone() for p in model.parameters()]
        assert not exact_step(optimizer)
        assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_rules_and_refusals() -> None:
    lenet = lenets(1)[0]
    assert should_batch(lenet, "cuda", 8) and not should_batch(lenet, "cuda", 1)
    assert not should_batch(lenet, "cpu", 8)  # measured: no faster than separate runs on the CPU
    dropout = ConvNet((3, 32, 32), 10, (8,), (16,), dropout=0.5)
    assert unsupported(dropout) is not None and not should_batch(dropout, "cuda", 4)
    data = splits((1, 28, 28))
    schedule = Schedule(10, 2, 0, [], 1000)
    with pytest.raises(UserError, match="seeds only"):
        train_copies(lenets(2), [None, None], [SGD, dataclasses.replace(SGD, lr=0.2)], schedule, data)
    with pytest.raises(UserError, match="one architecture"):
        train_copies([lenets(1)[0], LeNet((1, 28, 28), 10, (8,))], [None, None], [SGD, SGD], schedule, data)
    with pytest.raises(UserError, match="dropout"):
        train_copies([dropout, dropout], [None, None], [SGD, SGD], schedule, splits((3, 32, 32)))
