"""One IMP: `lottery.imp` and `lottery run` take the same step (experiments/imp_step.py: prune -> rewind -> train ->
record for a level, a control's seed and start -> train -> record), with only the training of a group of starts their
own, and record through `lottery.training.record`; so for the same settings on a tiny LeNet they give the same levels
and controls, and store the same files, bit for bit."""

from __future__ import annotations

import gc
import itertools
from pathlib import Path

import pytest
import torch

import lottery
from conftest import tiny_spec
from lottery import models
from lottery.api.imp import _Watch
from lottery.errors import UserError
from lottery.experiments import controls as engine_controls
from lottery.experiments import imp as engine_imp
from lottery.experiments import imp_step
from lottery.experiments.context import Context
from lottery.experiments.run import run_experiment
from lottery.spec import ModelSpec, TrainingSpec
from lottery.store import RunDir, layout
from lottery.training import Runtime, train

KINDS = ["random_prune", "random_prune_global", "random_reinit"]


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) and torch.equal(a[k].signbit(), b[k].signbit()) for k in a
    )


def test_api_imp_and_cli_give_the_same_levels_and_controls(tmp_path: Path) -> None:
    spec = tiny_spec("imp.levels=2", "imp.rewind=20it", f"controls.kinds={KINDS}")
    runtime = Runtime(progress=False, batch_copies=False)  # each control alone, as lottery.imp trains it
    experiment, _ = run_experiment(spec, "lenet_300_100", tmp_path / "runs", runtime)
    ctx = Context(spec, Runtime(progress=False, batch_copies=False))
    runs = itertools.count()

    def train_fn(model, mask, start, end):  # the engine's loop, from the API
        job = ctx.job(0, start=start, mask=mask)
        return train(RunDir(tmp_path / "api" / str(next(runs))), model, ctx.data, job, ctx.runtime)

    model = ctx.model(spec.training.init_seed)
    p = spec.pruning
    levels = list(
        lottery.imp(
            model,
            train_fn,
            levels=2,
            iterations=ctx.schedule.end,
            rewind=20,
            fraction=p.fraction,
            scope="layerwise",
            rates=p.rates,
            controls=KINDS,
        )
    )
    replicate = layout.replicate(experiment, 0)
    assert same_bits(levels[0].final, layout.dense(replicate).read_tensors("final.safetensors"))
    reinit_seeds = set()
    for level in levels[1:]:
        run = layout.level(replicate, 20, level.level)
        stored = run.read_tensors("mask.safetensors")
        assert all(torch.equal(level.mask[n], stored[n]) for n in level.mask)
        assert same_bits(level.start, run.read_tensors("start.safetensors"))
        assert same_bits(level.final, run.read_tensors("final.safetensors"))
        assert sorted(level.controls) == sorted(layout.control_name(kind, 0) for kind in KINDS)
        for kind in KINDS:
            api = level.controls[layout.control_name(kind, 0)]
            cli = layout.control(replicate, 20, level.level, kind, 0)
            cli_mask = cli.read_tensors("mask.safetensors")
            assert all(torch.equal(api.mask[n], cli_mask[n]) for n in api.mask), kind
            if kind == "random_reinit":  # fresh weights: the model's construction, with the engine's seed
                assert all(torch.equal(api.mask[n], level.mask[n]) for n in api.mask)
                derived = engine_controls.control_seed(kind, 0, TrainingSpec())  # paired: one seed for every level
                reinit_seeds.add(derived)
            assert same_bits(api.start, cli.read_tensors("start.safetensors")), kind
            assert same_bits(api.final, cli.read_tensors("final.safetensors")), kind
    assert len(reinit_seeds) == 1

    # A control kind may start from W_0 (`inp.initial()`): the chain's dense start, read when asked for.
    @lottery.register_control("initial_weights_probe", stream=5003)
    def initial_weights(inp: lottery.ControlInput) -> lottery.ControlStart:
        return lottery.ControlStart(inp.mask, inp.mask.apply_to(inp.initial()))

    level_mask = engine_imp.level_mask(ctx, replicate, 0, 20, 1)
    mask, start, state = engine_controls.control_start(ctx, replicate, 0, 20, 1, level_mask, "initial_weights_probe", 0)
    w_0 = layout.dense(replicate).read_tensors("start.safetensors")
    assert all(torch.equal(mask[n], level_mask[n]) for n in level_mask) and mask.keys() == level_mask.keys()
    assert state is None and same_bits(start, level_mask.apply_to(w_0))  # (a plugin's mask: a copy of it)


def test_both_drivers_take_the_one_step_and_store_the_same_files(tmp_path: Path, monkeypatch) -> None:
    """`lottery run` and `lottery.imp(directory=...)` both go through `imp_step.level` and `imp_step.controls`, and the
    runs they store (`lottery.training.record`) hold the same start, mask and final weights, bit for bit."""
    calls: list[tuple[str, int]] = []
    for name in ("level", "controls"):
        original = getattr(imp_step, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append((_name, len(args[0])))
            return _original(*args, **kwargs)

        monkeypatch.setattr(imp_step, name, spy)
    spec = tiny_spec("imp.levels=2", "imp.rewind=20it", "controls.kinds=['random_reinit']")
    experiment, _ = run_experiment(spec, "lenet_300_100", tmp_path / "runs", Runtime(progress=False))
    engine_calls, calls[:] = list(calls), []
    ctx = Context(spec, Runtime(progress=False, batch_copies=False))
    runs = itertools.count()

    def train_fn(model, mask, start, end):
        job = ctx.job(0, start=start, mask=mask)
        return train(RunDir(tmp_path / "loop" / str(next(runs))), model, ctx.data, job, ctx.runtime)

    levels = list(
        lottery.imp(
            ctx.model(spec.training.init_seed),
            train_fn,
            levels=2,
            iterations=ctx.schedule.end,
            rewind=20,
            scope="layerwise",
            rates=spec.pruning.rates,
            controls=["random_reinit"],
            directory=tmp_path / "api",
            config={"spec": "tiny lenet, test_one_imp"},
        )
    )
    assert engine_calls == calls == [("level", 1), ("controls", 1), ("level", 1), ("controls", 1)]
    cli, api = layout.replicate(experiment, 0), layout.replicate(RunDir(levels[0].experiment), 0)
    views = [(layout.dense, ()), *[(layout.level, (20, level)) for level in (1, 2)]]
    views += [(layout.control, (20, level, "random_reinit", 0)) for level in (1, 2)]
    for where, args in views:
        ours, theirs = where(api, *args), where(cli, *args)
        for name in ("start.safetensors", "mask.safetensors", "final.safetensors"):
            assert same_bits(ours.read_tensors(name), theirs.read_tensors(name)), (where.__name__, args, name)
        assert ours.read_json("sparsity.json") == theirs.read_json("sparsity.json")
        assert ours.read_json("summary.json")["density"] == theirs.read_json("summary.json")["density"]


@pytest.mark.parametrize("name", ["lenet_300_100", "conv6", "resnet20"])
def test_reinitialize_draws_the_weights_the_engine_builds_with_the_seed(name: str) -> None:
    """`lottery.reinitialize` of a model lottery built gives, for a seed, the weights `models.build` gives with that
    seed: `lottery.imp`'s random reinitialization is the engine's."""
    shape = (1, 28, 28) if name == "lenet_300_100" else (3, 32, 32)
    spec = ModelSpec(name=name, **({"width": 4} if name == "resnet20" else {}))
    model = models.build(spec, shape, 10, init_seed=1)
    for seed in (0, 7, 2**62 + 3):
        built = models.build(spec, shape, 10, init_seed=seed).state_dict()
        assert same_bits(lottery.reinitialize(model, None, seed).state_dict(), built), seed


def test_api_refuses_a_control_that_starts_with_an_optimizer_state_in_one_line() -> None:
    """`train_fn` makes its own optimizer, so a control whose start carries optimizer state cannot be honoured by
    `lottery.imp`: refused in one line, not silently dropped."""

    @lottery.register_control("momentum_probe_one_imp", stream=5011)
    def momentum(inp: lottery.ControlInput) -> lottery.ControlStart:
        return lottery.ControlStart(inp.mask, inp.mask.apply_to(inp.rewound), {"state": {}, "param_groups": []})

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2

    def train_fn(model, mask, start, end):
        opt = torch.optim.SGD(model.parameters(), 0.1)
        for _ in range(start, end):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    with pytest.raises(UserError, match="optimizer state") as caught:
        list(lottery.imp(model, train_fn, levels=1, iterations=3, controls=["momentum_probe_one_imp"]))
    assert "\n" not in str(caught.value)


def test_api_holds_the_mask_in_each_new_optimizer_a_train_fn_makes() -> None:
    """A `train_fn` that makes a new optimizer every step, over other parameters each time (freed ones' ids are
    reused): the mask holds in every one of them, so pruned weights stay exactly zero at every level."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    x, y = torch.randn(24, 6, generator=torch.Generator().manual_seed(1)), torch.arange(24) % 3

    def train_fn(model, mask, start, end):
        for t in range(start, end):
            params = list(model.parameters()) if t % 2 else list(model[0].parameters())
            opt = torch.optim.SGD(params, 0.5)  # the previous step's optimizer is freed here
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            del opt

    for level in lottery.imp(model, train_fn, levels=2, iterations=8, fraction=0.5):
        for name, m in level.mask.items():
            assert not level.final[name][~m.bool()].any(), (level.level, name)


def test_the_driver_forgets_an_optimizer_train_fn_dropped() -> None:
    """What holds the mask in an optimizer goes with the optimizer: a new one that takes over a freed one's id (and
    holds other parameters) gets its own."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    mask = lottery.Mask({"0.weight": torch.rand(5, 4, generator=torch.Generator().manual_seed(0)) > 0.5})
    with _Watch(model, mask, None, True) as watch:
        first = torch.optim.SGD(model[0].parameters(), 0.1)
        model(torch.ones(1, 4)).sum().backward()
        first.step()
        assert len(watch.attachments) == 1
        del first
        gc.collect()
        assert len(watch.attachments) == 0
