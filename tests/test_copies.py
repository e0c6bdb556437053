"""Runs trained together as one stacked model (`train_together`) end with the artifacts of separate
`lottery.training.train` runs with the same seeds: the same start weights, masks and evaluation points, final
weights equal up to float rounding, pruned weights exactly zero; their checkpoints resume either way."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lottery.data.augment import cifar_augment
from lottery.data.base import Splits
from lottery.data.synthetic import make
from lottery.models.conv import ConvNet
from lottery.models.lenet import LeNet
from lottery.models.resnet import ResNet
from lottery.pruning import Mask
from lottery.spec import TrainingSpec
from lottery.store import RunDir, layout
from lottery.training import Job, Runtime, Schedule, loop, should_batch, train, train_together
from lottery.training import stacked as stacked_module
from lottery.training.optimizer import make_optimizer

SGD = TrainingSpec(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, eval_every="1000it")
ADAM = TrainingSpec(optimizer="adam", lr=2e-3, weight_decay=1e-4, batch_size=16, eval_every="1000it")
TOGETHER = Runtime(progress=False, batch_copies=True)
ALONE = Runtime(progress=False, batch_copies=False)


def splits(shape: tuple[int, ...], n: int = 160) -> Splits:
    raw = make(shape, 10, train=n, test=40, seed=3)
    return Splits(
        raw.train_x - 0.5,
        raw.train_y,
        raw.test_x[:20] - 0.5,
        raw.test_y[:20],
        raw.test_x[20:] - 0.5,
        raw.test_y[20:],
        10,
        torch.full((shape[0],), -0.5),
    )


def random_mask(model: torch.nn.Module, density: float, seed: int) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask({name: torch.rand(m.shape, generator=g) < density for name, m in Mask.ones(model).items()})


def seeds(training: TrainingSpec, i: int) -> TrainingSpec:
    return dataclasses.replace(training, init_seed=i, data_order_seed=10 + i, augmentation_seed=20 + i)


def lenets(k: int) -> list[LeNet]:
    models = []
    for i in range(k):
        model = LeNet((1, 28, 28), 10, (24, 12))
        model.initialize("kaiming_normal", torch.Generator().manual_seed(i))
        models.append(model)
    return models


def both_ways(
    tmp: Path, models: list, data: Splits, jobs: list[Job], **runtime: Any
) -> tuple[list[RunDir], list[RunDir]]:
    """The runs trained together and the same runs trained one by one with `train`."""
    together = [RunDir(tmp / "together" / f"copy{i}") for i in range(len(jobs))]
    alone = [RunDir(tmp / "alone" / f"copy{i}") for i in range(len(jobs))]
    train_together(together, [copy.deepcopy(m) for m in models], data, jobs, dataclasses.replace(TOGETHER, **runtime))
    for run, model, job in zip(alone, models, jobs):
        train(run, copy.deepcopy(model), data, job, ALONE)
    return together, alone


def metrics(run: RunDir) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.read("metrics.jsonl").decode().splitlines()]


def assert_same_runs(together: RunDir, alone: RunDir, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    for name in ("start.safetensors", "mask.safetensors"):  # written before training: bit for bit
        a, b = together.read_tensors(name), alone.read_tensors(name)
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a), name
    assert together.read_json("sparsity.json") == alone.read_json("sparsity.json")
    got, want = together.read_tensors("final.safetensors"), alone.read_tensors("final.safetensors")
    assert got.keys() == want.keys()
    for name in want:  # BatchNorm running statistics and num_batches_tracked included
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=name)
    mask = together.read_tensors("mask.safetensors")
    for name, m in mask.items():
        assert torch.all(got[name][~m] == 0), name  # pruned weights exactly zero
    rows, reference = metrics(together), metrics(alone)
    assert [(r["iteration"], r["split"]) for r in rows] == [(r["iteration"], r["split"]) for r in reference]
    for row, ref in zip(rows, reference):
        assert row["lr"] == ref["lr"]
        assert row["loss"] == pytest.approx(ref["loss"], rel=1e-3, abs=1e-5)
    summary, expected = together.read_json("summary.json"), alone.read_json("summary.json")
    assert summary.keys() == expected.keys()
    assert (summary["diverged"], summary["start_iteration"], summary["end_iteration"]) == (
        expected["diverged"],
        expected["start_iteration"],
        expected["end_iteration"],
    )
    assert not together.exists("checkpoint.pt")


ADAMW_COSINE = TrainingSpec(
    optimizer="adamw", lr=2e-3, weight_decay=1e-2, batch_size=16, eval_every="1000it", schedule="cosine"
)
SGD_SMOOTHED = dataclasses.replace(SGD, label_smoothing=0.1)
RMSPROP_MSE = TrainingSpec(optimizer="rmsprop", lr=1e-3, momentum=0.5, batch_size=16, eval_every="1000it", loss="mse")


@pytest.mark.parametrize(
    "training",
    [SGD, ADAM, ADAMW_COSINE, SGD_SMOOTHED, RMSPROP_MSE],
    ids=["sgd_momentum_wd", "adam_wd", "adamw_cosine", "sgd_label_smoothing", "rmsprop_mse"],
)
def test_lenet_copies_match_separate_runs(training: TrainingSpec, tmp_path: Path) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 25, 0, [15], 7)  # crosses epochs, a milestone, 4 evaluations
    models = lenets(3)
    masks = [random_mask(models[0], 0.3, 0), None, random_mask(models[2], 0.5, 2)]  # a dense copy included
    jobs = [Job(seeds(training, i), schedule, start=3, mask=m) for i, m in enumerate(masks)]
    together, alone = both_ways(tmp_path, models, data, jobs)
    # RMSProp divides by the root of a running mean of squared gradients: a weight whose gradients stay near zero
    # turns a last-bit difference into up to 3e-4 after 22 steps (one weight of 18,816 with the seed table's draws)
    atol = 1e-3 if training.optimizer == "rmsprop" else 1e-5
    for a, b, model in zip(together, alone, models):
        assert_same_runs(a, b, atol=atol)
        assert not torch.equal(a.read_tensors("final.safetensors")["out.weight"], model.out.weight.detach())
    evaluated = {r["iteration"] for r in metrics(together[0])}
    assert evaluated == {3, 7, 14, 21, 25}


def test_resnet_copies_with_batchnorm_and_augmentation_match_separate_runs(tmp_path: Path) -> None:
    data = splits((3, 8, 8), n=64)
    augment = cifar_augment(data.pad_value, padding=2)
    schedule = Schedule(len(data.train_x) // 16, 6, 0, [], 3)
    models = []
    for i in range(2):
        model = ResNet((3, 8, 8), 10, 8, width=4)
        model.initialize("kaiming_normal", torch.Generator().manual_seed(i))
        models.append(model)
    masks = [random_mask(models[0], 0.4, 5), random_mask(models[1], 0.6, 6)]
    jobs = [Job(seeds(SGD, i), schedule, mask=m, augment=augment) for i, m in enumerate(masks)]
    together, alone = both_ways(tmp_path, models, data, jobs)
    for a, b in zip(together, alone):
        assert_same_runs(a, b)


NADAM = TrainingSpec(optimizer="nadam", lr=2e-3, batch_size=16, eval_every="1000it")  # a scalar state: mu_product


@pytest.mark.parametrize("training", [ADAM, NADAM], ids=["adam", "nadam"])
def test_restored_optimizer_state_is_masked_and_matches_separate_runs(training: TrainingSpec, tmp_path: Path) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 12, 0, [], 1000)
    models = lenets(2)
    states = []
    for model in models:  # a few dense steps give a non-trivial Adam state, as IMP's 'rewind' option restores
        optimizer = make_optimizer(model.parameters(), training)
        for _ in range(3):
            optimizer.zero_grad()
            F.cross_entropy(model(data.train_x[:16]), data.train_y[:16]).backward()
            optimizer.step()
        states.append(copy.deepcopy(optimizer.state_dict()))
    masks = [random_mask(m, 0.3, i) for i, m in enumerate(models)]
    jobs = [
        Job(seeds(training, i), schedule, start=4, mask=masks[i], optimizer_state=states[i]) for i in range(len(models))
    ]
    together, alone = both_ways(tmp_path, models, data, jobs)
    for a, b in zip(together, alone):
        assert_same_runs(a, b, rtol=1e-5, atol=1e-6)


def test_snapshots_taken_together_match_separate_runs(tmp_path: Path) -> None:
    """Dense runs of a replicate set save W_k and the optimizer state at every rewind point k."""
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 14, 5, [], 7)  # warmup: the learning rate changes every step
    models = lenets(2)
    jobs = [Job(seeds(ADAM, i), schedule, snapshots=(0, 3, 11), snapshot_optimizer=True) for i in range(2)]
    together, alone = both_ways(tmp_path, models, data, jobs)
    for a, b in zip(together, alone):
        assert_same_runs(a, b)
        for k in (0, 3, 11):
            got, want = a.read_tensors(layout.snapshot(k)), b.read_tensors(layout.snapshot(k))
            for name in want:
                torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
            state, reference = a.read_torch(layout.snapshot(k, True)), b.read_torch(layout.snapshot(k, True))
            assert state["param_groups"] == reference["param_groups"]
            assert state["state"].keys() == reference["state"].keys()  # empty at iteration 0
            for j, entries in reference["state"].items():
                assert entries["step"].dtype == state["state"][j]["step"].dtype
                assert float(entries["step"]) == float(state["state"][j]["step"]) == k
                torch.testing.assert_close(state["state"][j]["exp_avg"], entries["exp_avg"], rtol=1e-4, atol=1e-6)


class Interrupt(Exception):
    pass


def interrupt_after(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, steps: int) -> None:
    """Make `owner.name` (a training step) raise after `steps` calls, as a kill would stop the process."""
    original, count = getattr(owner, name), [0]

    def step(*args: Any) -> Any:
        count[0] += 1
        if count[0] > steps:
            raise Interrupt
        return original(*args)

    monkeypatch.setattr(owner, name, step)


def test_group_resumed_from_checkpoints_ends_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 20, 0, [], 5)
    models = lenets(3)
    masks = [random_mask(m, 0.4, i) for i, m in enumerate(models)]
    jobs = [Job(seeds(ADAM, i), schedule, mask=masks[i]) for i in range(3)]
    runtime = dataclasses.replace(TOGETHER, checkpoint_every=4)
    straight = [RunDir(tmp_path / "straight" / f"c{i}") for i in range(3)]
    train_together(straight, [copy.deepcopy(m) for m in models], data, jobs, runtime)
    resumed = [RunDir(tmp_path / "resumed" / f"c{i}") for i in range(3)]
    with monkeypatch.context() as patch:
        interrupt_after(patch, stacked_module.Stacked, "step", 10)
        with pytest.raises(Interrupt):
            train_together(resumed, [copy.deepcopy(m) for m in models], data, jobs, runtime)
    assert all(torch.load(r.path / "checkpoint.pt", weights_only=False)["iteration"] == 8 for r in resumed)
    # a checkpoint written in a group resumes alone too (the training loop's format) ...
    train(resumed[0], copy.deepcopy(models[0]), data, jobs[0], ALONE)
    assert_same_runs(resumed[0], straight[0], rtol=1e-6, atol=1e-7)
    # ... and the others resume together, bit for bit the uninterrupted group
    train_together(resumed, [copy.deepcopy(m) for m in models], data, jobs, runtime)
    for a, b in zip(resumed[1:], straight[1:]):
        for name, value in b.read_tensors("final.safetensors").items():
            assert torch.equal(a.read_tensors("final.safetensors")[name], value), name
        assert [r["loss"] for r in metrics(a)] == [r["loss"] for r in metrics(b)]


def test_runs_at_different_iterations_resume_in_separate_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 16, 0, [], 4)
    models = lenets(3)
    jobs = [Job(seeds(SGD, i), schedule, mask=random_mask(models[i], 0.5, i)) for i in range(3)]
    runs = [RunDir(tmp_path / f"c{i}") for i in range(3)]
    # run 1 has a checkpoint at iteration 6 from a separate run, the others none
    with monkeypatch.context() as patch:
        interrupt_after(patch, loop, "exact_step", 8)
        with pytest.raises(Interrupt):
            train(runs[1], copy.deepcopy(models[1]), data, jobs[1], dataclasses.replace(ALONE, checkpoint_every=6))
    assert torch.load(runs[1].path / "checkpoint.pt", weights_only=False)["iteration"] == 6
    train_together(runs, [copy.deepcopy(m) for m in models], data, jobs, TOGETHER)
    alone = [RunDir(tmp_path / "alone" / f"c{i}") for i in range(3)]
    for run, model, job, reference in zip(runs, models, jobs, alone):
        train(reference, copy.deepcopy(model), data, job, ALONE)
        assert_same_runs(run, reference)


def test_a_diverging_copy_stops_where_its_separate_run_stops(tmp_path: Path) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 12, 0, [], 4)
    models = lenets(3)
    with torch.no_grad():
        models[1].out.weight.fill_(float("inf"))  # its loss is NaN from the first step
    jobs = [Job(seeds(SGD, i), schedule) for i in range(3)]
    together, alone = both_ways(tmp_path, models, data, jobs)
    assert (
        together[1].read_json("summary.json")["diverged_at"] == alone[1].read_json("summary.json")["diverged_at"] == 4
    )
    assert [r["iteration"] for r in metrics(together[1])] == [r["iteration"] for r in metrics(alone[1])]
    for i in (0, 2):  # the others are not disturbed
        assert_same_runs(together[i], alone[i])


def test_finished_runs_are_read_back_not_retrained(tmp_path: Path) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 6, 0, [], 3)
    models = lenets(2)
    jobs = [Job(seeds(SGD, i), schedule) for i in range(2)]
    runs = [RunDir(tmp_path / f"c{i}") for i in range(2)]
    first = train_together(runs, [copy.deepcopy(m) for m in models], data, jobs, TOGETHER)
    stamps = [(r.path / "final.safetensors").stat().st_mtime_ns for r in runs]
    assert train_together(runs, [copy.deepcopy(m) for m in models], data, jobs, TOGETHER) == first
    assert [(r.path / "final.safetensors").stat().st_mtime_ns for r in runs] == stamps


def test_when_runs_are_trained_together() -> None:
    lenet, cpu, cuda = lenets(1)[0], Runtime(), Runtime(device=torch.device("cuda"))
    conv = ConvNet((3, 32, 32), 10, (8,), (16,))
    assert should_batch(lenet, cpu, 8) and not should_batch(lenet, cpu, 1)  # measured faster on the CPU
    assert not should_batch(conv, cpu, 8) and should_batch(conv, cuda, 8)  # grouped convolutions: slower on CPU
    assert should_batch(conv, dataclasses.replace(cpu, batch_copies=True), 8)
    assert not should_batch(lenet, dataclasses.replace(cuda, batch_copies=False), 8)
    assert not should_batch(lenet, dataclasses.replace(cuda, compile=True), 8)
    dropout = ConvNet((3, 32, 32), 10, (8,), (16,), dropout=0.5)
    assert stacked_module.unsupported(dropout) is not None
    assert not should_batch(dropout, dataclasses.replace(cuda, batch_copies=True), 4)


def test_refusals(tmp_path: Path) -> None:
    data = splits((1, 28, 28))
    schedule = Schedule(10, 2, 0, [], 1000)
    runs = [RunDir(tmp_path / f"c{i}") for i in range(2)]
    with pytest.raises(ValueError, match="seeds may differ"):
        train_together(
            runs, lenets(2), data, [Job(SGD, schedule), Job(dataclasses.replace(SGD, lr=0.2), schedule)], TOGETHER
        )
    with pytest.raises(ValueError, match="one architecture"):
        train_together(
            runs, [lenets(1)[0], ConvNet((1, 28, 28), 10, (4,), (8,))], data, [Job(SGD, schedule)] * 2, TOGETHER
        )
    with pytest.raises(ValueError, match="snapshots"):
        train_together(runs, lenets(2), data, [Job(SGD, schedule, snapshots=(1,)), Job(SGD, schedule)], TOGETHER)
    with pytest.raises(ValueError, match="one architecture"):
        train_together(runs, [lenets(1)[0], LeNet((1, 28, 28), 10, (8,))], data, [Job(SGD, schedule)] * 2, TOGETHER)
    assert not any(r.path.exists() and any(r.path.iterdir()) for r in runs)


@pytest.mark.parametrize("training", [SGD, ADAM], ids=["sgd", "adam"])
def test_a_copy_does_not_depend_on_the_copies_trained_with_it(training: TrainingSpec, tmp_path: Path) -> None:
    """Which copies share a group depends on what the store holds (finished, diverged or resumed copies); a
    copy's weights must not: every stacked row is padded so each element goes through the same kernels."""
    data = splits((1, 28, 28))
    schedule = Schedule(len(data.train_x) // 16, 15, 0, [], 5)
    models = lenets(4)
    jobs = [Job(seeds(training, i), schedule, mask=random_mask(models[i], 0.5, i)) for i in range(4)]
    finals = {}
    for k in (1, 2, 3, 4):  # one copy stacked alone too: a stacked run may resume alone
        runs = [RunDir(tmp_path / f"k{k}" / f"c{i}") for i in range(k)]
        train_together(runs, [copy.deepcopy(m) for m in models[:k]], data, jobs[:k], TOGETHER, stacked=True)
        finals[k] = [r.read_tensors("final.safetensors") for r in runs]
    reversed_runs = [RunDir(tmp_path / "reversed" / f"c{i}") for i in range(4)]
    order = [3, 2, 1, 0]  # each copy at another position in the stack
    train_together(
        [reversed_runs[i] for i in order],
        [copy.deepcopy(models[i]) for i in order],
        data,
        [jobs[i] for i in order],
        TOGETHER,
    )
    finals["reversed"] = [r.read_tensors("final.safetensors") for r in reversed_runs]
    for k in (1, 3, 4, "reversed"):
        for i in (0, 1) if k != 1 else (0,):
            for name, value in finals[2][i].items():
                assert torch.equal(finals[k][i][name], value), (k, i, name)
