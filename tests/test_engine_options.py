"""The engine's loss, optimizers, cosine schedule and inputs of any rank."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_tiny
from lottery import plugins
from lottery.cli.main import main
from lottery.data import load
from lottery.data.base import as_data
from lottery.registry import losses
from lottery.spec import DatasetSpec, TrainingSpec
from lottery.spec.groups import OPTIMIZERS
from lottery.training import lr_at
from lottery.training.losses import make
from lottery.training.optimizer import OPTIMIZERS as CLASSES
from lottery.training.optimizer import make_optimizer


def test_cosine_schedule_by_hand() -> None:
    # base 0.1, warmup 2 of 6 iterations: 0.05, 0.1, then 0.1 (1 + cos(pi j / 4)) / 2 for j = 0..3.
    got = [lr_at(t, 0.1, 2, [], 0.1, "cosine", end=6) for t in range(6)]
    c = math.cos(math.pi / 4)
    assert got == pytest.approx([0.05, 0.1, 0.1, 0.05 * (1 + c), 0.05, 0.05 * (1 - c)])
    assert [lr_at(t, 1.0, 0, [], 0.1, "cosine", end=4) for t in range(5)] == pytest.approx(
        [1, 0.5 + c / 2, 0.5, 0.5 - c / 2, 0]
    )
    assert lr_at(3, 0.1, 0, [2], 0.1) == pytest.approx(0.01)  # 'step' is the default, as before


def test_cosine_schedule_in_the_engine(tmp_path: Path) -> None:
    """The learning rates the loop logs, at evaluation points of a 60-iteration run with 10 warmup iterations."""
    experiment, _ = run_tiny(
        tmp_path,
        "training.schedule=cosine",
        "training.warmup_steps=10it",
        "training.optimizer=adam",
        "training.lr=0.01",
    )
    rows = (experiment.path / "replicate_0" / "level_0" / "metrics.jsonl").read_text().splitlines()
    lrs = {r["iteration"]: r["lr"] for r in map(json.loads, rows)}
    assert lrs[0] == pytest.approx(0.001)  # warmup: (0 + 1) / 10
    assert lrs[20] == pytest.approx(0.005 * (1 + math.cos(math.pi * 10 / 50)))
    assert lrs[40] == pytest.approx(0.005 * (1 + math.cos(math.pi * 30 / 50)))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_with_the_mask_held(name: str, tmp_path: Path) -> None:
    """Each optimizer by name: the dense run and an IMP level train (loss finite, weights move) and the pruned
    weights end exactly zero."""
    lr = {"sgd": 0.05, "adadelta": 1.0, "adagrad": 0.01}.get(name, 1e-3)
    experiment, results = run_tiny(
        tmp_path,
        f"training.optimizer={name}",
        f"training.lr={lr}",
        "training.training_steps=10it",
        "training.eval_every=5it",
        "imp.levels=1",
    )
    assert [r["kind"] for r in results["runs"]] == ["dense", "imp"]
    level = experiment.path / "replicate_0" / "rewind_0it" / "level_1"
    start, final, mask = (load_file(level / f"{n}.safetensors") for n in ("start", "final", "mask"))
    assert mask and any(not m.all() for m in mask.values())
    for param, kept in mask.items():
        assert torch.all(final[param][~kept] == 0), param
        assert not torch.equal(final[param], start[param]), param
    rows = [json.loads(r) for r in (level / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_optimizer_hyperparameters_reach_torch() -> None:
    model = torch.nn.Linear(3, 2)
    cases = {
        "adamw": ({"betas": (0.8, 0.9), "eps": 1e-6, "amsgrad": True, "weight_decay": 0.05}, {}),
        "rmsprop": ({"alpha": 0.9, "centered": True, "momentum": 0.5}, {}),
        "adadelta": ({"rho": 0.5}, {}),
        "adagrad": ({"lr_decay": 0.1, "eps": 1e-9}, {}),
        "nadam": ({"betas": (0.5, 0.6)}, {}),
    }
    for name, (settings, _) in cases.items():
        optimizer = make_optimizer(model.parameters(), TrainingSpec(optimizer=name, lr=0.01, **settings).validate())
        assert type(optimizer) is CLASSES[name]
        group = optimizer.param_groups[0]
        assert group["lr"] == 0.01
        for key, value in settings.items():
            assert group[key] == value, (name, key)
    adamw = make_optimizer(model.parameters(), TrainingSpec(optimizer="adamw").validate())
    assert adamw.param_groups[0]["weight_decay"] == 0.0  # the spec's weight_decay (0), not torch's 0.01
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)  # unset: torch's default


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["training.optimizer=adam", "training.alpha=0.9"], "training.alpha applies to training.optimizer = rmsprop"),
        (["training.optimizer=adam", "training.momentum=0.9"], "training.momentum applies to"),
        (["training.optimizer=adamw", "training.betas=[0.9]"], "training.betas must be two numbers in [0, 1)"),
        (["training.optimizer=adamw", "training.betas=[0.9, 1.5]"], "training.betas must be two numbers"),
        (["training.optimizer=radam", "training.eps=0"], "training.eps must be > 0"),
        (["training.optimizer=adadelta", "training.rho=2"], "training.rho must be in [0, 1]"),
        (["training.optimizer=rmsprop", "training.alpha=-0.1"], "training.alpha must be in [0, 1)"),
        (["training.optimizer=adagrad", "training.lr_decay=-1"], "training.lr_decay must be >= 0"),
        (["training.optimizer=sgd", "training.eps=1e-8"], "training.eps applies to"),
        (["training.optimizer=lion"], "unknown training.optimizer 'lion'"),
        (["training.schedule=triangle"], "unknown training.schedule 'triangle'"),
        (["training.schedule=cosine", "training.milestone_steps=['10it']"], "milestone_steps apply to"),
        (["training.loss=nll", "training.label_smoothing=0.1"], "label_smoothing applies to"),
        (["training.label_smoothing=1"], "training.label_smoothing must be in [0, 1)"),
        (["training.loss=hinge"], "unknown training.loss 'hinge'"),
    ],
)
def test_bad_training_settings_exit_2_with_one_line(
    overrides: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--preset", "lenet_300_100", "--set", "dataset.name=synthetic", "--out", str(tmp_path)]
    assert main([*argv, *(a for o in overrides for a in ("--set", o))]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", losses.builtin_names())
def test_losses_reduce_like_torch(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    output, target = torch.randn(7, 4, generator=g).log_softmax(1), torch.randint(4, (7,), generator=g)
    loss = make(TrainingSpec(loss=name))
    each = loss(output, target, reduction="none")
    assert each.shape == (7,)
    torch.testing.assert_close(loss(output, target), each.mean())
    torch.testing.assert_close(loss(output, target, reduction="sum"), each.sum())
    if name == "mse":  # by hand: squared distance to the one-hot label
        torch.testing.assert_close(each[0], ((output[0] - torch.eye(4)[target[0]]) ** 2).sum())


def test_label_smoothing_changes_the_loss() -> None:
    output, target = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    plain, smooth = make(TrainingSpec()), make(TrainingSpec(label_smoothing=0.2))
    log_p = output.log_softmax(1)[0]
    assert float(plain(output, target)) == pytest.approx(float(-log_p[0]))
    assert float(smooth(output, target)) == pytest.approx(float(-(0.9 * log_p[0] + 0.1 * log_p[1])))


def _dataset(name: str, data: dict) -> DatasetSpec:
    if plugins.find("dataset", name) is None:
        plugins.register_dataset(name)(lambda: data)
    return DatasetSpec(name=name, validation_size=0)


def test_tabular_normalisation_by_hand() -> None:
    x = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])  # per-feature mean (3, 30), std (2, 20)
    test = torch.tensor([[7.0, 0.0]])
    splits = load(_dataset("hand_table", {"train": (x, torch.tensor([0, 1, 1])), "test": (test, torch.tensor([0]))}))
    assert torch.equal(splits.train_x, torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]))
    assert torch.equal(splits.test_x, torch.tensor([[2.0, -1.5]]))  # the training set's statistics
    assert torch.equal(splits.pad_value, torch.tensor([-1.5, -1.5]))  # a zero input, normalised
    assert splits.num_classes == 2 and splits.input_shape == (2,)


def test_sequence_normalisation_by_hand() -> None:
    # (N, C, L) = (2, 2, 2): channel 0 holds 0, 2, 4, 6 (mean 3, std sqrt(20/3)); channel 1 is constant 5.
    x = torch.tensor([[[0.0, 2.0], [5.0, 5.0]], [[4.0, 6.0], [5.0, 5.0]]])
    y = torch.tensor([0, 1])
    splits = load(_dataset("hand_sequences", {"train": (x, y), "test": (x, y)}))
    std = math.sqrt(20 / 3)
    expected0 = (torch.tensor([[0.0, 2.0], [4.0, 6.0]]) - 3) / std
    torch.testing.assert_close(splits.train_x[:, 0], expected0)
    assert torch.equal(splits.train_x[:, 1], torch.zeros(2, 2))  # constant channel: (5 - 5) / 1e-6
    # (N, L) sequences: statistics per position; integer tokens are never normalised.
    flat = load(_dataset("hand_positions", {"train": (x[:, 0], y), "test": (x[:, 0], y)}))
    torch.testing.assert_close(flat.train_x, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]) * math.sqrt(0.5))
    tokens = torch.tensor([[3, 1, 4], [1, 5, 9]])
    raw = load(_dataset("hand_tokens", {"train": (tokens, y), "test": (tokens, y)}))
    assert torch.equal(raw.train_x, tokens)


def test_dataset_plugin_returns_are_checked() -> None:
    x, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 1])
    from lottery.errors import UserError

    with pytest.raises(UserError, match="integer class labels"):
        as_data({"train": (x, y.float()), "test": (x, y)})
    with pytest.raises(UserError, match="labels must lie in 0..1"):
        as_data({"train": (x, y), "test": (x, y), "num_classes": 2})
    with pytest.raises(UserError, match="unknown keys"):
        as_data({"train": (x, y), "test": (x, y), "validation": (x, y)})
    own = as_data({"train": (x, y), "val": (x[:2], y[:2]), "test": (x, y)})
    assert own.num_classes == 3 and own.val_x is not None
    splits = load(_dataset("own_val", {"train": (x, y), "val": (x[:2], y[:2]), "test": (x, y)}))
    assert len(splits.train_x) == 4 and len(splits.val_x) == 2  # its own validation split, none held out


def test_sequence_model_and_data_through_the_engine(tmp_path: Path) -> None:
    """A 1-D CNN on (N, C, L) sequences: built, normalised per channel, pruned (conv, fc and output kinds) and
    trained with its mask held, with no Network subclass."""
    from lottery.experiments.run import run_experiment
    from lottery.spec import resolve
    from lottery.training import Runtime

    if plugins.find("model", "seq_cnn") is None:

        @plugins.register_model("seq_cnn")
        def seq_cnn(input_shape: tuple[int, ...], num_classes: int, channels: int = 8) -> torch.nn.Module:
            return torch.nn.Sequential(
                torch.nn.Conv1d(input_shape[0], channels, 5, padding=2),
                torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool1d(4),
                torch.nn.Flatten(),
                torch.nn.Linear(4 * channels, 16),
                torch.nn.ReLU(),
                torch.nn.Linear(16, num_classes),
            )

        @plugins.register_dataset("seq_waves")
        def seq_waves(n: int = 400, length: int = 32) -> dict:
            g = torch.Generator().manual_seed(0)
            y = torch.randint(2, (n,), generator=g)
            t = torch.arange(length) / length
            x = torch.sin(2 * math.pi * (1 + 2 * y[:, None]) * t) + 0.3 * torch.randn(n, length, generator=g)
            x = torch.stack([x, 10 + 5 * torch.randn(n, length, generator=g)], 1)  # a second, offset channel
            return {"train": (x[:300], y[:300]), "test": (x[300:], y[300:])}

    overrides = [
        "model.name=seq_cnn",
        "model.options.channels=6",
        "dataset.name=seq_waves",
        "dataset.validation_size=50",
        "training.optimizer=adam",
        "training.lr=0.01",
        "training.batch_size=25",
        "training.training_steps=20it",
        "training.eval_every=10it",
        "imp.levels=1",
    ]
    spec, _ = resolve(overrides=overrides)
    experiment, results = run_experiment(spec, None, tmp_path, Runtime(progress=False))
    assert [r["kind"] for r in results["runs"]] == ["dense", "imp"]
    level = experiment.path / "replicate_0" / "rewind_0it" / "level_1"
    sparsity = json.loads((level / "sparsity.json").read_text())
    assert set(sparsity["layers"]) == {"0.weight", "4.weight", "6.weight"}  # Conv1d, Linear, output Linear
    final, mask = load_file(level / "final.safetensors"), load_file(level / "mask.safetensors")
    assert all(torch.all(final[n][~m] == 0) for n, m in mask.items()) and not all(m.all() for m in mask.values())
    assert results["runs"][0]["final_test_accuracy"] > 0.6
