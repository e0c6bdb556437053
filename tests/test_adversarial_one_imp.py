"""A hostile and a careless researcher against this session's One IMP (`lottery.imp` and `lottery run` taking one
step, experiments/imp_step.py; runs recorded by training/record.py; `lottery.reinitialize` rerunning a Network's own
init) and the first-batch check of `Context.validate`. Each test failed before the fix its commit names; the cases
that check what must still work pass before and after (`test_reinitialize_takes_the_extreme_seeds`, a batch of two
with BatchNorm, the 'bool' plugin control that returns what the contract asks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import lottery
from lottery.errors import UserError

X = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(1))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def train_fn(model, mask, start, end):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(start, end):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()
    return {"accuracy": (model(X).argmax(1) == Y).float().mean().item()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_stored_dense_run_is_never_reused_for_another_starting_mask(tmp_path: Path) -> None:
    """The dense run starts from m_0 ⊙ W_0 and holds m_0: its network key named no starting mask, so a run with a
    starting mask read back the unmasked dense network of an earlier run in the same store (a cache that lied)."""
    list(lottery.imp(mlp(), train_fn, levels=1, iterations=6, directory=tmp_path))
    ones = lottery.Mask.ones(mlp())
    half = lottery.Mask({n: torch.arange(m.numel()).reshape(m.shape) % 2 == 0 for n, m in ones.items()})
    stored = list(lottery.imp(mlp(), train_fn, levels=1, iterations=6, directory=tmp_path, mask=half))
    fresh = list(lottery.imp(mlp(), train_fn, levels=1, iterations=6, mask=half))
    assert stored[0].density == fresh[0].density == pytest.approx(0.5)
    for a, b in zip(stored, fresh, strict=True):
        assert same(a.start, b.start) and same(a.final, b.final)


def bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


def test_a_model_with_batchnorm_is_stored_and_read_back(tmp_path: Path) -> None:
    """BatchNorm's `num_batches_tracked` is a 0-dim long tensor, which the fingerprint could not view as bytes:
    imp(directory=) of any model with BatchNorm failed with torch's RuntimeError before training."""
    first = list(lottery.imp(bn_model(), train_fn, levels=1, iterations=4, directory=tmp_path))
    again = list(lottery.imp(bn_model(), train_fn, levels=1, iterations=4, directory=tmp_path))
    assert first[1].final["1.num_batches_tracked"].item() == 5  # 4 steps, and train_fn's forward in train mode
    for a, b in zip(first, again, strict=True):
        assert same(a.final, b.final) and a.experiment == b.experiment
    other = bn_model()
    other.state_dict()["1.num_batches_tracked"].fill_(7)  # a 0-dim buffer is part of W_0: another fingerprint
    assert list(lottery.imp(other, train_fn, levels=0, iterations=4, directory=tmp_path))[0].experiment != (
        first[0].experiment
    )


class NoParameters(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize(
    ("model", "settings", "says"),
    [
        (NoParameters(), {}, "model must be a torch.nn.Module with parameters"),
        (None, {"train_fn": 3}, "train_fn must be a function"),
        (None, {"levels": 1.5}, "levels must be a whole number"),
        (None, {"control_seed": -1}, "control_seed: seed must be a whole number in [0, 2**63)"),
        (None, {"control_seed": 2**63}, "control_seed: seed must be a whole number in [0, 2**63)"),
        (None, {"control_seed": "0"}, "control_seed: seed must be a whole number in [0, 2**63)"),
        (None, {"mask": lottery.Mask({"nope": torch.ones(3, dtype=torch.bool)})}, "names 'nope', which is not a"),
        (None, {"mask": lottery.Mask({"0.weight": torch.ones(3, dtype=torch.bool)})}, "has shape (3,); the param"),
        (None, {"iterations": "2ep", "iterations_per_epoch": 0}, "iterations_per_epoch must be a whole number >= 1"),
        (None, {"iterations_per_epoch": 1.5}, "iterations_per_epoch must be a whole number >= 1"),
        (None, {"iterations": -3}, "iterations must be at least 1, got -3"),
        (None, {"directory": ""}, "directory= must be the store's path (a non-empty str or Path), got ''"),
        (None, {"directory": 3}, "directory= must be the store's path"),
    ],
)
def test_bad_arguments_of_imp_are_refused_in_one_line_before_training(
    model, settings, says, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: StopIteration (as RuntimeError) for a model without parameters, TypeError or KeyError from deep
    inside, and a bad control_seed only after the dense network had trained (seeding's ValueError)."""
    calls = []

    def counting(model, mask, start, end):
        calls.append(start)
        return train_fn(model, mask, start, end)

    store, cwd = tmp_path / "store", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    given = {k: v for k, v in settings.items() if k != "train_fn"}
    kwargs = {"levels": 1, "iterations": 4, "controls": ["random_prune"], "directory": store, **given}
    with pytest.raises(UserError) as caught:
        list(lottery.imp(mlp() if model is None else model, settings.get("train_fn", counting), **kwargs))
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert calls == [] and not store.exists()  # nothing trained, nothing written
    assert list(cwd.iterdir()) == []  # directory='' wrote a store into the working directory


@pytest.mark.parametrize("seed", [-1, 2**63, -(2**63), 2**64, 1.5, "3", True])
def test_reinitialize_refuses_a_seed_torch_would_wrap_or_truncate(seed) -> None:
    """torch.manual_seed wraps seeds modulo 2**64 (2**63 gave seed 0's weights, -1 those of 2**63 - 1) and truncates
    floats: two recorded seeds gave one network. lottery's seeds are whole numbers in [0, 2**63)."""
    with pytest.raises(UserError, match=r"seed must be a whole number in \[0, 2\*\*63\)"):
        lottery.reinitialize(mlp(), None, seed)
    with pytest.raises(UserError, match=r"seed must be a whole number in \[0, 2\*\*63\)"):
        lottery.random_mask_like(lottery.Mask.ones(mlp()), seed)


def test_reinitialize_takes_the_extreme_seeds() -> None:
    low, high = (lottery.reinitialize(mlp(), None, s)[0].weight.clone() for s in (0, 2**63 - 1))
    assert not torch.equal(low, high)
    assert torch.equal(high, lottery.reinitialize(mlp(), None, 2**63 - 1)[0].weight)


def test_a_train_fn_that_changes_its_mask_is_refused(tmp_path: Path) -> None:
    """train_fn was given the driver's own mask: zeroing it in place made every later level (and the dense level
    already yielded) report density 0 in memory while the store held the real masks. Now train_fn gets a copy, and a
    changed copy is refused in one line; the run is not recorded as finished."""

    def prunes_in_place(model, mask, start, end):
        result = train_fn(model, mask, start, end)
        mask["0.weight"][0].zero_()
        return result

    with pytest.raises(UserError, match="train_fn changed the mask it was given"):
        list(lottery.imp(mlp(), prunes_in_place, levels=1, iterations=4, directory=tmp_path))
    assert not list(tmp_path.glob("networks/*/*/summary.json"))
    levels = list(lottery.imp(mlp(), train_fn, levels=1, iterations=4, directory=tmp_path))
    assert levels[0].density == 1.0 and levels[1].density == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize(
    "result",
    [
        (1, 2),
        {1: 2.0},
        {"accuracy": float("nan")},
        float("inf"),
        {"loss": torch.tensor([1.5, float("nan")])},
        {3, 4},
        None,
        {"accuracy": 0.75, "curve": [0.1, 0.2]},
    ],
    ids=repr,
)
def test_a_stored_result_reads_back_as_train_fn_returned_it(result, tmp_path: Path) -> None:
    """result.json changed what JSON cannot hold: a tuple came back a list, {1: 2.0} as {'1': 2.0} (a resumed run
    gave another result than the run that computed it), and NaN was written as JSON's non-standard NaN."""

    def returns(model, mask, start, end):
        train_fn(model, mask, start, end)
        return result

    first = list(lottery.imp(mlp(), returns, levels=1, iterations=3, directory=tmp_path))
    again = list(lottery.imp(mlp(), returns, levels=1, iterations=3, directory=tmp_path))
    for level in again:
        got = level.result
        assert type(got) is type(result) and repr(got) == repr(result)  # NaN != NaN: compared by repr
    assert [level.result is not None for level in first] == [result is not None] * 2
    for path in tmp_path.glob("networks/*/*/result.json"):
        path.read_text().encode("ascii")
        assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


class Opaque:
    pass


@pytest.mark.parametrize("make", [lambda: lambda: 1, lambda: (i for i in range(2)), Opaque, mlp])
def test_a_result_that_cannot_be_read_back_is_refused_in_one_line(make, tmp_path: Path) -> None:
    """A lambda or a generator failed inside torch.save with a traceback; an object torch.load(weights_only=True)
    refuses (a model, a class of the user's) was stored and then never read back: every call trained it again."""

    def returns(model, mask, start, end):
        train_fn(model, mask, start, end)
        return make()

    with pytest.raises(UserError, match="cannot store and read back") as caught:
        list(lottery.imp(mlp(), returns, levels=0, iterations=3, directory=tmp_path))
    assert "\n" not in str(caught.value)
    assert not list(tmp_path.glob("networks/*/*/summary.json"))


class Tied(nn.Module):
    """Two layers sharing one weight (as a language model's embedding and output layer do)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.out = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.b(torch.relu(self.a(x)))))


def test_a_tied_weight_is_pruned_once_and_stays_pruned_under_both_names(tmp_path: Path) -> None:
    """prunable listed the tied weight under both names, and `named_parameters` has only the first: imp (and
    Mask.ones, prune) failed with KeyError 'b.weight'. And the state dict holds both names, so the start loaded
    the second name's unmasked copy over the masked first one: the level would train with its pruned weights back."""
    assert list(lottery.prunable(Tied())) == ["a.weight", "out.weight"]

    def checks(model, mask, start, end):
        assert not model.a.weight[~mask["a.weight"]].any()  # the pruned weights start at zero
        return train_fn(model, mask, start, end)

    levels = list(lottery.imp(Tied(), checks, levels=2, iterations=4, directory=tmp_path))
    assert levels[2].density < levels[1].density < 1
    for level in levels[1:]:
        pruned = ~level.mask["a.weight"]
        assert pruned.any()
        for weights in (level.start, level.final):
            assert torch.equal(weights["a.weight"], weights["b.weight"]) and not weights["a.weight"][pruned].any()
    stored = sorted(tmp_path.glob("networks/*/*/summary.json"))
    again = list(lottery.imp(Tied(), checks, levels=2, iterations=4, directory=tmp_path))
    assert all(same(a.final, b.final) for a, b in zip(levels, again, strict=True))
    assert sorted(tmp_path.glob("networks/*/*/summary.json")) == stored and len(stored) == 3


def net_class(squash: bool) -> type[nn.Module]:
    class Net(nn.Module):  # the same name, module and structure either way: only forward's code differs
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.layer = nn.Linear(8, 2)

        if squash:

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.layer(torch.tanh(x))

        else:

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.layer(x)

    return Net


def test_a_changed_forward_is_a_new_experiment(tmp_path: Path) -> None:
    """The fingerprint hashed the model's class by name, its repr and W_0: editing forward (a tanh added) read back
    the networks the old forward had trained."""
    plain, squashed = net_class(False)(), net_class(True)()
    assert type(plain).__qualname__ == type(squashed).__qualname__ and repr(plain) == repr(squashed)
    old = list(lottery.imp(plain, train_fn, levels=1, iterations=3, directory=tmp_path))
    new = list(lottery.imp(squashed, train_fn, levels=1, iterations=3, directory=tmp_path))
    fresh = list(lottery.imp(net_class(True)(), train_fn, levels=1, iterations=3))
    assert new[0].experiment != old[0].experiment
    assert all(same(a.final, b.final) for a, b in zip(new, fresh, strict=True))
    assert not same(new[1].final, old[1].final)
    again = list(lottery.imp(net_class(False)(), train_fn, levels=1, iterations=3, directory=tmp_path))
    assert again[0].experiment == old[0].experiment  # the same code: the same experiment, read back


def test_a_run_another_process_finished_while_this_one_waited_is_read_back_not_trained_again(tmp_path: Path) -> None:
    """Two processes on one directory=: the second read the dense run (not finished), waited for its lock while the
    first trained it, then trained it again and wrote it over the first's (twice the work, for every run)."""
    import os
    import subprocess
    import sys
    import time

    child = Path(__file__).with_name("adversarial_one_imp_child.py")
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(lottery.__file__).parents[1])}

    def start(name: str, **more: str) -> subprocess.Popen:
        calls = {"LOTTERY_TEST_CALLS": str(tmp_path / f"{name}.calls")}
        with (tmp_path / f"{name}.err").open("w") as err:
            command = [sys.executable, str(child), str(tmp_path / "store")]
            return subprocess.Popen(
                command, env={**env, **calls, **more}, stdout=subprocess.PIPE, stderr=err, text=True
            )

    def wait_for(condition) -> bool:
        for _ in range(600):  # bounded: 60 s
            if condition():
                return True
            time.sleep(0.1)
        return False

    processes = [start("first", LOTTERY_TEST_HOLD=str(hold))]
    try:
        assert wait_for(lambda: (hold / "started").exists() or processes[0].poll() is not None)
        processes.append(start("second"))
        waiting = wait_for(
            lambda: "waiting" in (tmp_path / "second.err").read_text() or processes[1].poll() is not None
        )
        assert waiting and "waiting" in (tmp_path / "second.err").read_text()  # at the dense run's lock
        (hold / "go").touch()
        outputs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [process.returncode for process in processes] == [0, 0], (tmp_path / "second.err").read_text()
    assert outputs[0] == outputs[1] and outputs[0].strip()
    assert (tmp_path / "first.calls").read_text().splitlines()[:2] == ["1.000 0", "0.800 1"]
    second = (tmp_path / "second.calls").read_text().splitlines() if (tmp_path / "second.calls").exists() else []
    assert "1.000 0" not in second  # the dense run the first process finished was read back


FIXED_INPUT_PLUGIN = """
from torch import nn
import lottery


@lottery.register_model("adversarial_fixed100")
def fixed100(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))
"""


def test_a_model_that_cannot_take_an_image_folders_images_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first-batch check skipped streamed data ('checked by its first batch', which nothing did): an image
    folder with a model of the wrong input size was torch's RuntimeError as a traceback from the first step, after
    the experiment was written. Now two blank images of the folder's (3, H, W) go through forward and loss."""
    from lottery.cli.main import main
    from lottery.data.jpegs import write_folder

    root = write_folder(tmp_path / "jpegs", classes=2, train_per_class=4, val_per_class=2)
    plugin = tmp_path / "fixed_plugin.py"
    plugin.write_text(FIXED_INPUT_PLUGIN)
    settings = [
        f"dataset.root={root}",
        "dataset.name=imagefolder",
        "dataset.image_size=16",
        "dataset.validation_size=0",
        "training.batch_size=4",
        "training.training_steps=2it",
    ]
    argv = ["run", "--import", str(plugin), "--out", str(tmp_path / "runs"), "--device", "cpu", "--data-workers", "1"]
    for setting in [*settings, "model.name=adversarial_fixed100"]:
        argv += ["--set", setting]
    assert main([*argv, "--progress", "log"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model 'adversarial_fixed100' cannot train on dataset 'imagefolder'" in err
    assert "(shape (3, 16, 16)" in err and not (tmp_path / "runs").exists()


class OwnWeight(nn.Module):
    """A parameter of its own, which no reset_parameters covers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.scale = nn.Parameter(torch.ones(8))
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * self.scale)


def test_random_reinit_of_a_model_it_cannot_reinitialize_is_refused_before_anything_trains(tmp_path: Path) -> None:
    """imp trained the dense network and level 1, then failed at level 1's random_reinit with 'pass init=fn(model)',
    which imp has no argument for. And reinitialize reset every module it could before refusing: the model was
    left half reinitialized."""
    calls = []

    def counting(model, mask, start, end):
        calls.append(start)
        return train_fn(model, mask, start, end)

    with pytest.raises(UserError, match=r"random_reinit .* none covers scale: give the module that holds it a reset"):
        list(lottery.imp(OwnWeight(), counting, levels=1, iterations=3, controls=["random_reinit"]))
    assert calls == []
    levels = list(lottery.imp(OwnWeight(), counting, levels=1, iterations=3, controls=["random_prune"]))
    assert len(calls) == 3 and levels[1].controls  # the other controls need no reset_parameters
    model = OwnWeight()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="no reset_parameters covers scale"):
        lottery.reinitialize(model, None, 3)
    assert same(model.state_dict(), before)


def _bool_start(inp: lottery.ControlInput) -> lottery.ControlStart:
    return lottery.ControlStart(inp.mask, inp.mask.apply_to(inp.rewound), inp.optimizer_state)


PLUGIN_STARTS = {  # name: (what a plugin control returns from its ControlInput, the line expected, or None: accepted)
    "bool": (_bool_start, None),
    "plain_dict": (lambda inp: lottery.ControlStart(dict(inp.mask), inp.mask.apply_to(inp.rewound)), None),
    "float_mask": (
        lambda inp: lottery.ControlStart(
            lottery.Mask({n: m.float() for n, m in inp.mask.items()}), inp.mask.apply_to(inp.rewound)
        ),
        None,
    ),
    "unmasked": (lambda inp: lottery.ControlStart(inp.mask, inp.rewound), "are not zero where its mask prunes them"),
    "twos": (
        lambda inp: lottery.ControlStart(
            lottery.Mask({n: m.long() * 2 for n, m in inp.mask.items()}), inp.mask.apply_to(inp.rewound)
        ),
        "holds values other than 0 and 1",
    ),
    "extra_name": (
        lambda inp: lottery.ControlStart(
            lottery.Mask({**inp.mask, "0.bias": torch.ones(16, dtype=torch.bool)}), inp.mask.apply_to(inp.rewound)
        ),
        "mask names 0.bias, which the IMP mask does not",
    ),
    "double": (
        lambda inp: lottery.ControlStart(inp.mask, {n: w.double() for n, w in inp.mask.apply_to(inp.rewound).items()}),
        "are torch.float64, not torch.float32",
    ),
}


@pytest.fixture
def plugin_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kinds of PLUGIN_STARTS, registered for one test only (later tests list every control kind)."""
    from lottery import seeding
    from lottery.extension_points import control_kinds

    monkeypatch.setattr(control_kinds, "_items", dict(control_kinds._items))
    monkeypatch.setattr(seeding, "STREAMS", dict(seeding.STREAMS))
    for i, (name, (start, _)) in enumerate(PLUGIN_STARTS.items()):
        lottery.register_control(f"adversarial_one_imp_{name}", stream=7400 + i)(start)


@pytest.mark.parametrize("name", list(PLUGIN_STARTS))
def test_a_plugin_controls_start_is_checked_and_its_mask_made_a_bool_mask(name: str, plugin_starts: None) -> None:
    """A plugin control's ControlStart was checked for names and shapes only: a plain dict as its mask failed with
    AttributeError ('dict' has no 'density'); a float mask, or one of 0s and 2s (density 1.6), trained as given;
    weights not zero where the mask prunes (W_k itself), a mask over more weights than the level's, or weights of
    another dtype were trained as given, unlike any control."""
    kind, says = f"adversarial_one_imp_{name}", PLUGIN_STARTS[name][1]
    if says is not None:
        with pytest.raises(UserError, match=f"control kind '{kind}': its ControlStart's .*{says}"):
            list(lottery.imp(mlp(), train_fn, levels=1, iterations=3, controls=[kind]))
        return
    (dense, level) = lottery.imp(mlp(), train_fn, levels=1, iterations=3, controls=[kind, "adversarial_one_imp_bool"])
    control, reference = level.controls[f"{kind}_seed0"], level.controls["adversarial_one_imp_bool_seed0"]
    assert isinstance(control.mask, lottery.Mask) and all(m.dtype == torch.bool for m in control.mask.values())
    assert list(control.mask) == list(level.mask) and control.density == level.density
    assert same(control.final, reference.final)


class Running(nn.Module):
    """A buffer of its own that training updates (a running mean of the inputs), which no reset_parameters draws."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.out = nn.Linear(8, 16), nn.Linear(16, 2)
        self.register_buffer("mean", torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.mean.mul_(0.5).add_(x.mean(0), alpha=0.5)
        return self.out(torch.relu(self.hidden(x - self.mean)))


def test_random_reinit_starts_from_w0s_buffers_whichever_run_trained_last(tmp_path: Path) -> None:
    """`fresh` reinitialized the live model, which held the last trained run's state: a buffer no reset_parameters
    draws came from the level just trained, or from W_0 where the level was read back from the store, so the same
    control had two starts (and the engine's, built fresh, has W_0's)."""
    settings = {"levels": 1, "iterations": 3}
    at_once = list(lottery.imp(Running(), train_fn, **settings, controls=["random_reinit"], directory=tmp_path / "a"))
    list(lottery.imp(Running(), train_fn, **settings, directory=tmp_path / "b"))
    later = list(lottery.imp(Running(), train_fn, **settings, controls=["random_reinit"], directory=tmp_path / "b"))
    a, b = at_once[1].controls["random_reinit_seed0"], later[1].controls["random_reinit_seed0"]
    assert at_once[1].final["mean"].abs().sum() > 0  # the level's training moved the buffer
    assert torch.equal(a.start["mean"], Running().state_dict()["mean"])
    assert same(a.start, b.start) and same(a.final, b.final)


def dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))


def leaves_eval(model, mask, start, end):
    torch.manual_seed(start)  # the dropout noise: a function of the iteration, as the data order must be
    result = train_fn(model, mask, start, end)
    model.eval()  # evaluates at the end, and never calls model.train() (the module's mode at construction is train)
    return result


def test_each_run_gets_the_model_in_the_mode_it_was_given_not_the_one_the_last_run_left(tmp_path: Path) -> None:
    """A train_fn that ends with model.eval() left the next run's model in eval mode (no dropout) where the run
    before it was trained in this process, and in train mode where it was read back from the store: a level computed
    after a resume differed from the same level computed in one go."""
    at_once = list(lottery.imp(dropout_model(), leaves_eval, levels=2, iterations=3, directory=tmp_path / "a"))
    list(lottery.imp(dropout_model(), leaves_eval, levels=1, iterations=3, directory=tmp_path / "b"))
    resumed = list(lottery.imp(dropout_model(), leaves_eval, levels=2, iterations=3, directory=tmp_path / "b"))
    assert all(same(a.final, b.final) for a, b in zip(at_once, resumed, strict=True))
    model = dropout_model()
    given = []
    list(lottery.imp(model, lambda m, *a: given.append(m.training) or leaves_eval(m, *a), levels=1, iterations=3))
    assert given == [True, True]


def test_each_run_gets_the_parameters_trainable_as_given_not_as_the_last_run_left_them(tmp_path: Path) -> None:
    """A train_fn that froze the first layer and never unfroze it changed which parameters every later run trained,
    where that run was trained in this process, and not where it was read back from the store."""

    def freezes(model, mask, start, end):
        if start == 0 and mask.density == 1.0:
            model[0].weight.requires_grad_(False)  # the dense run trains the last layer only, and leaves it so
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        for _ in range(start, end):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            optimizer.step()
        return {"frozen": not model[0].weight.requires_grad}

    at_once = list(lottery.imp(mlp(), freezes, levels=1, iterations=3, names=["2.weight"], directory=tmp_path / "a"))
    list(lottery.imp(mlp(), freezes, levels=0, iterations=3, names=["2.weight"], directory=tmp_path / "b"))
    resumed = list(lottery.imp(mlp(), freezes, levels=1, iterations=3, names=["2.weight"], directory=tmp_path / "b"))
    assert [level.result["frozen"] for level in at_once] == [True, False]
    assert all(same(a.final, b.final) for a, b in zip(at_once, resumed, strict=True))


BATCHNORM_PLUGIN = """
import math
from torch import nn
import lottery


@lottery.register_model("adversarial_batchnorm")
def batchnorm(input_shape, num_classes):
    width = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, num_classes))
"""


@pytest.fixture(scope="module")
def batchnorm_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    plugin = tmp_path_factory.mktemp("plugin") / "batchnorm_plugin.py"  # one file: a plugin registers once
    plugin.write_text(BATCHNORM_PLUGIN)
    return plugin


@pytest.mark.parametrize("batch", [1, 2])
def test_a_model_that_cannot_train_on_one_example_is_refused_with_batch_size_1(
    batch: int, batchnorm_plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first-batch check runs in eval mode, where BatchNorm takes one example: training.batch_size = 1 was
    torch's ValueError ('Expected more than 1 value per channel when training') as a traceback from the first step,
    after the experiment was written. A batch of two still trains."""
    from lottery.cli.main import main

    plugin = batchnorm_plugin
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[model]\nname = "adversarial_batchnorm"\n[dataset]\nname = "synthetic"\nvalidation_size = 20\n'
        f'[training]\nbatch_size = {batch}\ntraining_steps = "2it"\neval_every = "2it"\n'
    )
    code = main(["run", "--import", str(plugin), str(spec), "--out", str(tmp_path / "runs"), "--progress", "log"])
    err = capsys.readouterr().err.strip()
    if batch == 2:
        assert code == 0 and (tmp_path / "runs").exists(), err
        return
    assert code == 2 and err.count("\n") == 0 and not (tmp_path / "runs").exists()
    assert err.startswith("lottery: error: model 'adversarial_batchnorm' cannot train on batches of one example")
    assert "Expected more than 1 value per channel" in err


def test_a_train_fn_whose_optimizer_skips_the_first_pruned_parameter_is_told_why_it_took_0_steps() -> None:
    """An optimizer over the last layer only took 4 steps, and imp said 'train_fn took 0 optimizer steps': it counts
    the steps of the optimizer over the first pruned parameter, which the line now names."""

    def last_layer_only(model, mask, start, end):
        optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)
        for _ in range(start, end):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            optimizer.step()
        return {}

    with pytest.raises(
        UserError, match=r"took 0 optimizer steps .* over '0.weight', the first pruned parameter, which"
    ):
        list(lottery.imp(mlp(), last_layer_only, levels=1, iterations=4))
    assert len(list(lottery.imp(mlp(), last_layer_only, levels=1, iterations=4, names=["2.weight"]))) == 2


def test_a_nan_accuracy_leaves_the_stores_json_strict(tmp_path: Path) -> None:
    """train_fn's {'accuracy': nan} (a diverged run) went into summary.json and results.json as JSON's
    non-standard NaN (which strict readers refuse), and `lottery show` printed 'nan [nan, nan]'."""
    import json

    def diverges(model, mask, start, end):
        train_fn(model, mask, start, end)
        return {"accuracy": float("nan") if mask.density < 1 else 0.5, "test_error": float("inf")}

    levels = list(lottery.imp(mlp(), diverges, levels=1, iterations=3, directory=tmp_path))
    assert levels[1].result["accuracy"] != levels[1].result["accuracy"]  # the result itself is kept as returned

    def strict(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    files = [levels[0].experiment / "results.json", *tmp_path.glob("networks/*/*/summary.json")]
    assert len(files) == 3
    for path in files:
        json.loads(path.read_text(), parse_constant=strict)
    summary = next(tmp_path.glob("networks/imp/*/summary.json"))
    assert json.loads(summary.read_text())["final_test_accuracy"] is None


def test_ignore_given_as_a_generator_is_in_the_stores_keys(tmp_path: Path) -> None:
    """ignore= was read twice: by the pruning (which ignored the layers) and then, exhausted, by the store's keys
    (which said nothing was ignored), so a later run ignoring nothing read back levels that had ignored a layer."""
    ignoring = list(lottery.imp(mlp(), train_fn, levels=1, iterations=3, ignore=(n for n in ["2"]), directory=tmp_path))
    assert ignoring[1].mask.layer_densities()["2.weight"] == 1.0
    plain = list(lottery.imp(mlp(), train_fn, levels=1, iterations=3, directory=tmp_path))
    fresh = list(lottery.imp(mlp(), train_fn, levels=1, iterations=3))
    assert plain[1].mask.layer_densities()["2.weight"] < 1.0
    assert same(plain[1].final, fresh[1].final)


def test_a_starting_mask_that_is_a_dict_or_of_numbers_is_taken_as_a_bool_mask_and_other_values_refused() -> None:
    """mask= as a plain dict failed with AttributeError ('dict' has no 'apply_to'); a mask of 0s and 2s gave the
    dense level density 2.0; a list failed with AttributeError."""
    ones = lottery.Mask.ones(mlp())
    reference = list(lottery.imp(mlp(), train_fn, levels=1, iterations=3))
    for given in (dict(ones), lottery.Mask({n: m.float() for n, m in ones.items()})):
        levels = list(lottery.imp(mlp(), train_fn, levels=1, iterations=3, mask=given))
        assert [level.density for level in levels] == [level.density for level in reference]
        assert all(same(a.final, b.final) for a, b in zip(levels, reference, strict=True))
    with pytest.raises(UserError, match="the mask of '0.weight' holds values other than 0 and 1"):
        list(lottery.imp(mlp(), train_fn, levels=1, iterations=3, mask={n: m.long() * 2 for n, m in ones.items()}))
    with pytest.raises(UserError, match="mask= must be a lottery.Mask"):
        list(lottery.imp(mlp(), train_fn, levels=1, iterations=3, mask=[1, 2]))


def _results():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.tuples(inner, inner)
            | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
        ),
        max_leaves=8,
    )


def test_any_plain_result_reads_back_as_it_was_returned(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Property: what train_fn returns (numbers with NaN and infinities, strings, lists, tuples, dicts with str or int
    keys, nested) is read back from the store with the same types and values (compared by repr: NaN != NaN)."""
    from hypothesis import given, settings

    from lottery.api.imp import _read_result, _write_result
    from lottery.store import RunDir

    @settings(max_examples=150, deadline=None)
    @given(_results())
    def round_trip(result) -> None:
        run = RunDir(tmp_path_factory.mktemp("run"))
        _write_result(run, result)
        assert repr(_read_result(run)) == repr(result)

    round_trip()


def test_lottery_run_on_an_api_experiments_spec_says_to_rerun_it_from_python(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "unknown dataset 'train_fn'" with a list of datasets, which says nothing of where the spec came from."""
    from lottery.cli.main import main

    (level,) = lottery.imp(mlp(), train_fn, levels=0, iterations=2, directory=tmp_path / "store", config={"x": 1})
    assert main(["run", str(level.experiment / "spec.toml"), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "lottery.imp" in err and "run it again from Python" in err
    assert not (tmp_path / "runs").exists()
