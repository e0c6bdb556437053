"""Every paper protocol is a preset that resolves, validates, carries the paper's numbers and builds its network."""

from __future__ import annotations

import pytest

from lottery.data import load
from lottery.models import build
from lottery.presets import presets
from lottery.spec import Step, resolve

PAPER_PRESETS = [
    "lenet_300_100",
    "conv2",
    "conv4",
    "conv6",
    "resnet20",
    "resnet20_low",
    "resnet20_warmup",
    "vgg19",
    "vgg19_low",
    "vgg19_warmup",
    "resnet20_lmc",
    "vgg16_lmc",
]
SYNTHETIC = {"fashion_mnist": "synthetic", "mnist": "synthetic", "cifar10": "synthetic_cifar10"}

# (model, optimizer, lr, batch, steps, milestones, warmup) from the reference protocols table.
TRAINING = {
    "lenet_300_100": ("lenet_300_100", "adam", 1.2e-3, 60, "50000it", (), "0it"),
    "conv2": ("conv2", "adam", 2e-4, 60, "20000it", (), "0it"),
    "conv4": ("conv4", "adam", 3e-4, 60, "25000it", (), "0it"),
    "conv6": ("conv6", "adam", 3e-4, 60, "30000it", (), "0it"),
    "resnet20": ("resnet20", "sgd", 0.1, 128, "30000it", ("20000it", "25000it"), "0it"),
    "resnet20_low": ("resnet20", "sgd", 0.01, 128, "30000it", ("20000it", "25000it"), "0it"),
    "resnet20_warmup": ("resnet20", "sgd", 0.03, 128, "30000it", ("20000it", "25000it"), "20000it"),
    "vgg19": ("vgg19", "sgd", 0.1, 64, "160ep", ("80ep", "120ep"), "0it"),
    "vgg19_low": ("vgg19", "sgd", 0.01, 64, "160ep", ("80ep", "120ep"), "0it"),
    "vgg19_warmup": ("vgg19", "sgd", 0.1, 64, "160ep", ("80ep", "120ep"), "10000it"),
    "resnet20_lmc": ("resnet20", "sgd", 0.1, 128, "160ep", ("80ep", "120ep"), "0it"),
    "vgg16_lmc": ("vgg16", "sgd", 0.1, 128, "160ep", ("80ep", "120ep"), "0it"),
}


def test_every_protocol_has_a_preset() -> None:
    assert set(PAPER_PRESETS) <= set(presets.names())


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_resolves_with_the_papers_numbers(name: str) -> None:
    spec, preset = resolve(preset=name)
    assert preset == name
    model, optimizer, lr, batch, steps, milestones, warmup = TRAINING[name]
    t = spec.training
    assert (spec.model.name, t.optimizer, t.lr, t.batch_size) == (model, optimizer, lr, batch)
    assert (t.training_steps, t.milestone_steps, t.warmup_steps) == (steps, milestones, warmup)
    if optimizer == "sgd":
        assert (t.momentum, t.weight_decay, t.gamma) == (0.9, 1e-4, 0.1)
        assert spec.model.init == "kaiming_normal"
        assert spec.dataset.name == "cifar10" and spec.dataset.augment
    else:
        assert spec.model.init == "glorot_normal" and t.weight_decay == 0
    assert spec.pruning.fraction == 0.2
    assert "arXiv" in presets.get(name).description or "LTH" in presets.get(name).description


def test_pruning_rates() -> None:
    for name, conv_rate in (("conv2", 0.1), ("conv4", 0.1), ("conv6", 0.15)):
        pruning = resolve(preset=name)[0].pruning
        assert pruning.strategy == "layerwise_magnitude"
        assert pruning.rates == {"conv": conv_rate, "fc": 0.2, "output": 0.1}
    for name in ("resnet20", "resnet20_low", "resnet20_warmup", "vgg19", "vgg19_low", "vgg19_warmup", "vgg16_lmc"):
        pruning = resolve(preset=name)[0].pruning
        assert (pruning.strategy, pruning.rates, pruning.layers_to_ignore) == ("global_magnitude", {}, ("output",))
    assert resolve(preset="resnet20_lmc")[0].pruning.layers_to_ignore == ()  # open_lth prunes the ResNet's fc


def test_epoch_based_schedules_give_the_papers_iteration_counts() -> None:
    vgg19 = resolve(preset="vgg19")[0]
    per_epoch = (50_000 - vgg19.dataset.validation_size) // vgg19.training.batch_size
    assert round(Step.parse(vgg19.training.training_steps).to_iterations(per_epoch), -3) == 112_000
    for name in ("resnet20_lmc", "vgg16_lmc"):
        spec = resolve(preset=name)[0]
        per_epoch = (50_000 - spec.dataset.validation_size) // spec.training.batch_size
        assert round(Step.parse(spec.training.training_steps).to_iterations(per_epoch), -3) in (62_000, 63_000)


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_builds_its_network_on_data_of_the_right_shape(name: str) -> None:
    spec = resolve(preset=name)[0]
    stand_in = SYNTHETIC[spec.dataset.name]
    spec = resolve(preset=name, overrides=[f"dataset.name={stand_in}", "dataset.validation_size=100"])[0]
    data = load(spec.dataset)
    assert data.input_shape == ((3, 32, 32) if stand_in == "synthetic_cifar10" else (1, 28, 28))
    model = build(spec.model, data.input_shape, data.num_classes, spec.training.init_seed)
    assert model(data.train_x[:2]).shape == (2, data.num_classes)
    kinds = model.layer_kinds()
    for entry in spec.pruning.layers_to_ignore:
        assert entry in kinds or entry in kinds.values()
    assert set(spec.pruning.rates) <= set(kinds.values())
    assert not any(n.endswith(".bias") for n in kinds)


def test_presets_accept_overrides() -> None:
    spec = resolve(preset="resnet20", overrides=["model.shortcut=padding", "model.width=32", "training.lr=0.05"])[0]
    assert (spec.model.shortcut, spec.model.width, spec.training.lr) == ("padding", 32, 0.05)
    assert spec.training.milestone_steps == ("20000it", "25000it")
