"""Every paper protocol is a preset that resolves, validates, carries the paper's numbers and builds its network."""

from __future__ import annotations

import pytest

from lottery.data import load
from lottery.models import build
from lottery.presets import presets
from lottery.pruning import Mask, prune
from lottery.pruning.strategies import matches
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
STABILIZING_RESNETS = ("resnet20", "resnet20_low", "resnet20_warmup")
STABILIZING = (*STABILIZING_RESNETS, "vgg19", "vgg19_low", "vgg19_warmup")  # the "Stabilizing" protocols
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
        assert spec.model.init == ("kaiming_normal" if name.endswith("_lmc") else "glorot_normal")
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
    for name in ("vgg19", "vgg19_low", "vgg19_warmup", "vgg16_lmc"):
        pruning = resolve(preset=name)[0].pruning
        assert (pruning.strategy, pruning.rates, pruning.layers_to_ignore) == ("global_magnitude", {}, ("output",))
    for name in STABILIZING_RESNETS:
        pruning = resolve(preset=name)[0].pruning
        assert (pruning.strategy, pruning.rates) == ("global_magnitude", {})
        assert pruning.layers_to_ignore == ("output", "blocks.*.shortcut.0.weight")
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
        assert any(matches(entry, name, kind) for name, kind in kinds.items())
    assert set(spec.pruning.rates) <= set(kinds.values())
    assert not any(n.endswith(".bias") for n in kinds)


def test_presets_accept_overrides() -> None:
    spec = resolve(preset="resnet20", overrides=["model.shortcut=padding", "model.width=32", "training.lr=0.05"])[0]
    assert (spec.model.shortcut, spec.model.width, spec.training.lr) == ("padding", 32, 0.05)
    assert spec.training.milestone_steps == ("20000it", "25000it")


def _pruned_resnet(name: str, overrides: tuple[str, ...] = ()) -> tuple[Mask, dict[str, str]]:
    spec = resolve(preset=name, overrides=["dataset.name=synthetic_cifar10", *overrides])[0]
    model = build(spec.model, (3, 32, 32), 10, 0)
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    kinds = model.layer_kinds()
    return prune(weights, Mask.ones(model), kinds, spec.pruning, target_density=0.05), kinds


@pytest.mark.parametrize("name", STABILIZING_RESNETS)
def test_stabilizing_resnets_leave_the_shortcut_convs_and_the_output_layer_unpruned(name: str) -> None:
    """LTH App. I.3: 'We do not prune the 2560 parameters used to downsample residual connections or the 640
    parameters in the fully-connected output layer'."""
    mask, kinds = _pruned_resnet(name)
    unpruned = [n for n in mask if bool(mask[n].all())]
    assert sorted(unpruned) == ["blocks.3.shortcut.0.weight", "blocks.6.shortcut.0.weight", "fc.weight"]
    assert sum(mask[n].numel() for n in unpruned) == 2560 + 640
    assert all(not bool(mask[n].all()) for n in kinds if n not in unpruned)  # every other conv is pruned
    assert "LTH App. I.3" in presets.get(name).description and "2560" in presets.get(name).description
    padding, _ = _pruned_resnet(name, ("model.shortcut=padding",))  # no shortcut convs: the pattern matches none
    assert not any("shortcut" in n for n in padding)


def test_the_lmc_resnet_prunes_its_shortcut_convs_as_open_lth_does() -> None:
    mask, _ = _pruned_resnet("resnet20_lmc")
    assert all(not bool(mask[n].all()) for n in mask)  # every layer pruned, the shortcuts and output included
    assert "shortcut convs included" in presets.get("resnet20_lmc").description


@pytest.mark.parametrize("name", [*STABILIZING, "resnet20_lmc", "vgg16_lmc"])
def test_stabilizing_presets_use_glorot_init_and_cite_the_appendix(name: str) -> None:
    spec = resolve(preset=name)[0]
    description = presets.get(name).description
    if name.endswith("_lmc"):  # open_lth's choice
        assert spec.model.init == "kaiming_normal" and "Kaiming normal init (open_lth's choice" in description
        return
    assert spec.model.init == "glorot_normal"
    appendix = "LTH App. I.3" if name.startswith("resnet") else "LTH App. I.2"
    assert f"({appendix}: 'Gaussian Glorot initialization')" in description
    model = build(spec.model, (3, 32, 32), 10, 0)
    conv = model.get_parameter("blocks.0.conv1.weight" if name.startswith("resnet") else "layers.1.conv.weight")
    fan_in, fan_out = conv.shape[1] * conv[0, 0].numel(), conv.shape[0] * conv[0, 0].numel()
    assert float(conv.std()) == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.1)  # not Kaiming's (2/fan_in)
