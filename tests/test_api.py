"""The Python API: `imp` around a user's train_fn (bit-exact rewinding, resuming, equal to the CLI), pruning and
controls of any model, masks on disk, and the stability analyses."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader, TensorDataset

import lottery
from conftest import tiny_spec
from lottery.errors import UserError
from lottery.experiments.context import Context
from lottery.experiments.run import run_experiment
from lottery.store import RunDir, layout
from lottery.training import Runtime, train

X = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] > 0).long()


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))


def make_train_fn(seen: dict[int, dict[str, torch.Tensor]] | None = None, kind: str = "adamw"):
    """A user's loop: batch t a function of t; records the weights after every step of the dense run."""

    def train_fn(model: nn.Module, mask: lottery.Mask, start: int, end: int) -> int:
        opt = (
            torch.optim.AdamW(model.parameters(), 0.05)
            if kind == "adamw"
            else torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
        )
        for t in range(start, end):
            idx = torch.randperm(64, generator=torch.Generator().manual_seed(t))[:16]
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), Y[idx]).backward()
            opt.step()
            if seen is not None and start == 0:
                seen[t + 1] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return end - start

    return train_fn


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) and torch.equal(a[k].signbit(), b[k].signbit()) for k in a
    )


@settings(max_examples=8, deadline=None)
@given(
    k=st.integers(0, 5),
    levels=st.integers(1, 3),
    fraction=st.sampled_from([0.2, 0.5]),
    scope=st.sampled_from(["global", "layerwise"]),
    kind=st.sampled_from(["adamw", "sgd"]),
)
def test_imp_levels_start_from_rewound_weights_bit_for_bit(k: int, levels: int, fraction: float, scope: str, kind: str):
    model = mlp()
    w0 = {n: v.detach().clone() for n, v in model.state_dict().items()}
    seen: dict[int, dict[str, torch.Tensor]] = {0: w0}
    out = list(
        lottery.imp(
            model, make_train_fn(seen, kind), levels=levels, iterations=6, rewind=k, fraction=fraction, scope=scope
        )
    )
    assert [level.level for level in out] == list(range(levels + 1))
    assert same_bits(out[0].start, w0) and out[0].result == 6
    for previous, level in itertools.pairwise(out):
        assert same_bits(level.start, level.mask.apply_to(seen[k]))  # m_L ⊙ W_k, bit for bit
        assert level.mask.is_subset_of(previous.mask) and level.result == 6 - k
        kept = previous.mask.kept()
        assert level.mask.kept() < kept
        for name, m in level.mask.items():  # the mask held in the user's loop without a call of theirs
            assert torch.equal(level.final[name][~m], torch.zeros_like(level.final[name][~m]))
    assert same_bits(out[0].start, w0)  # starts are copies: later training did not move them


def test_imp_checks_the_steps_train_fn_takes() -> None:
    def lazy(model, mask, start, end):
        return None

    with pytest.raises(UserError, match="took 0 optimizer steps"):
        list(lottery.imp(mlp(), lazy, levels=1, iterations=4))
    with pytest.raises(UserError, match="rewind point"):
        list(lottery.imp(mlp(), lazy, levels=1, iterations=4, rewind="4it"))


def test_imp_in_a_directory_resumes_and_other_settings_are_another_experiment(tmp_path: Path) -> None:
    options = dict(levels=2, iterations=6, rewind=2, fraction=0.5, controls=["random_prune", "random_reinit"])
    first = list(lottery.imp(mlp(), make_train_fn(), directory=tmp_path, **options))
    steps = []
    counter = register_optimizer_step_post_hook(lambda *a: steps.append(1))
    try:
        again = list(lottery.imp(mlp(), make_train_fn(), directory=tmp_path, **options))  # the same code and values
    finally:
        counter.remove()
    assert steps == []  # nothing was retrained
    for a, b in zip(first, again, strict=True):
        assert same_bits(a.start, b.start) and same_bits(a.final, b.final) and a.result == b.result
        assert list(a.mask) == list(b.mask) and all(torch.equal(a.mask[n], b.mask[n]) for n in a.mask)
        assert a.controls.keys() == b.controls.keys()
        for name in a.controls:
            assert same_bits(a.controls[name].final, b.controls[name].final)
    experiment = first[0].experiment
    assert experiment is not None and experiment.parent == tmp_path and again[-1].experiment == experiment
    control = experiment / "replicate_0" / "rewind_2it" / "controls" / "level_2" / "random_prune_seed0"
    assert (control / "final.safetensors").exists() and control.is_symlink()
    assert RunDir(experiment / "replicate_0" / "level_0").verify() == []
    other = list(lottery.imp(mlp(), make_train_fn(), directory=tmp_path, **{**options, "fraction": 0.3}))
    assert other[0].experiment != experiment  # other settings: another experiment in the same store
    assert same_bits(other[0].final, first[0].final)  # ...sharing the dense network (not retrained: same key)


def test_imp_matches_the_cli_on_lenet(tmp_path: Path) -> None:
    """The same LeNet spec through `lottery.imp` (a train_fn driving the engine's loop) and through the
    experiment runner: the same masks and the same weights, bit for bit."""
    spec = tiny_spec("imp.levels=2", "imp.rewind=20it")
    experiment, _ = run_experiment(spec, "lenet_300_100", tmp_path / "runs", Runtime(progress=False))
    ctx = Context(spec, Runtime(progress=False))
    runs = itertools.count()

    def train_fn(model, mask, start, end):
        job = ctx.job(0, start=start, mask=mask)
        assert job.schedule.end == end
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
        )
    )
    replicate = layout.replicate(experiment, 0)
    dense = layout.dense(replicate)
    assert same_bits(levels[0].final, dense.read_tensors("final.safetensors"))
    for level in levels[1:]:
        run = layout.level(replicate, 20, level.level)
        stored = run.read_tensors("mask.safetensors")
        assert all(torch.equal(level.mask[n], stored[n]) for n in level.mask)
        assert same_bits(level.start, run.read_tensors("start.safetensors"))
        assert same_bits(level.final, run.read_tensors("final.safetensors"))
        assert level.result["final_test_accuracy"] == run.read_json("summary.json")["final_test_accuracy"]


def test_prune_any_model_or_state_dict() -> None:
    model = mlp()
    mask = lottery.prune(model, fraction=0.5, scope="layerwise", rates={"output": 0.25})
    assert [int(m.sum()) for m in mask.values()] == [48, 64, 12]  # round(p × surviving) per layer
    from_weights = lottery.prune(
        model.state_dict(), lottery.Mask.ones(model), fraction=0.5, scope="layerwise", rates={"output": 0.25}
    )
    assert all(torch.equal(mask[n], from_weights[n]) for n in mask)  # kinds guessed from shapes: the same
    assert lottery.prune(model, density=0.1).kept() == round(0.1 * mask.total())
    with pytest.raises(UserError, match="scope"):
        lottery.prune(model, scope="nope")
    with pytest.raises(UserError, match="not both"):
        lottery.prune(model, fraction=0.2, density=0.5)
    with pytest.raises(UserError, match="matches no prunable layer"):
        lottery.prune(model, ignore=["nope"])


def test_mask_save_load_and_apply(tmp_path: Path) -> None:
    model = mlp()
    mask = lottery.prune(model, fraction=0.5)
    reordered = lottery.Mask({n: mask[n] for n in reversed(list(mask))})  # an order safetensors would not keep
    reordered.save(tmp_path / "m.safetensors", metadata={"level": 3, "note": "x"})
    loaded = lottery.Mask.load(tmp_path / "m.safetensors")
    assert list(loaded) == list(reordered) and all(torch.equal(loaded[n], mask[n]) for n in mask)
    assert loaded.metadata == {"level": "3", "note": "x"} and loaded.density == mask.density
    mask.apply_(model)
    assert int((model[0].weight == 0).sum()) == int((~mask["0.weight"]).sum())


def test_controls_are_seeded() -> None:
    mask = lottery.prune(mlp(), fraction=0.6)
    a, b, c = (lottery.random_mask_like(mask, seed) for seed in (1, 1, 2))
    assert all(torch.equal(a[n], b[n]) for n in mask) and not all(torch.equal(a[n], c[n]) for n in mask)
    assert all(int(a[n].sum()) == int(mask[n].sum()) for n in mask)
    assert lottery.random_mask_like(mask, 1, "global").kept() == mask.kept()
    one, two = mlp(1), mlp(2)
    state = torch.random.get_rng_state()
    one, two = lottery.reinitialize(one, mask, seed=5), lottery.reinitialize(two, mask, seed=5)
    assert same_bits(one.state_dict(), two.state_dict()) and torch.equal(state, torch.random.get_rng_state())
    assert not same_bits(one.state_dict(), lottery.reinitialize(mlp(1), mask, seed=6).state_dict())
    assert int((one[0].weight != 0).sum()) == int(mask["0.weight"].sum())

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.scale = nn.Parameter(torch.ones(3))

    with pytest.raises(UserError, match="scale"):
        lottery.reinitialize(Scaled(), seed=0)


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.fc(x))))


def test_distances_interpolate_and_barrier() -> None:
    torch.manual_seed(0)
    a, b = BNNet(), BNNet()
    for net in (a, b):
        net.train()
        net(X)  # running statistics of its own
    mask = lottery.prune(a, fraction=0.5)
    d = lottery.distances(a, b, mask, pruned="ignore")  # two dense networks: not zero where the mask prunes
    assert d == lottery.distances(a.state_dict(), b.state_dict(), mask, pruned="ignore")
    assert lottery.distances(a, a, mask, pruned="ignore")["l2"] == 0.0 and d["l2"] > 0 and 0 < d["angle_degrees"] < 180
    loader = DataLoader(TensorDataset(X, Y), batch_size=16)
    evaluate = lottery.classification_metrics(loader)
    curve = lottery.interpolate(a, b, evaluate, points=5, batchnorm="interpolate")
    assert curve.alphas == [0.0, 0.25, 0.5, 0.75, 1.0] and set(curve.metrics) == {"loss", "error"}
    assert curve["error"][0] == evaluate(a)["error"] and curve["error"][-1] == evaluate(b)["error"]
    assert curve["loss"][0] == pytest.approx(evaluate(a)["loss"])
    assert lottery.barrier(curve) == max(curve["error"]) - (curve["error"][0] + curve["error"][-1]) / 2
    assert lottery.barrier(lottery.interpolate(a, a, evaluate, points=3, batchnorm="interpolate")) == 0.0
    recomputed = lottery.interpolate(a, b, loader=loader, points=3)  # BatchNorm re-estimated from the loader
    assert recomputed["loss"] != curve.metrics["loss"][::2]
    with pytest.raises(UserError, match="batchnorm_loader"):
        lottery.interpolate(a, b, evaluate, points=3)
    assert lottery.barrier([1.0, 5.0, 3.0]) == 3.0
