"""Every preset trains for 2 iterations on synthetic data of its dataset's shape, through the CLI path."""

from __future__ import annotations

from pathlib import Path

import pytest

from lottery.experiments.run import run_experiment
from lottery.presets import presets
from lottery.spec import resolve
from lottery.training import Runtime

SYNTHETIC = {
    "fashion_mnist": "synthetic",
    "mnist": "synthetic",
    "cifar10": "synthetic_cifar10",
    "cifar100": "synthetic_cifar100",
}


def imagenet_folder(name: str, tmp_path: Path) -> list[str]:
    """ImageNet presets: a tiny folder of real JPEGs, small crops, a small batch, fp32 on the CPU."""
    from lottery.data.jpegs import write_folder

    root = write_folder(tmp_path / "jpegs", classes=3, train_per_class=4, val_per_class=1, size=(80, 80))
    size = 75 if "inception" in name else 32
    width = ["model.width=8"] if name == "resnet50_imagenet" else []  # 1/64 of the parameters: seconds, not 30 s
    training = presets.get(name).settings.get("training", {})
    # the preset's learning rate is for its batch (1024 for SqueezeNet's RMSProp at 0.66) and its warmup, both cut
    # here: scaled linearly to the batch of 4, as the preset's own linear scaling rule would, so that whether two
    # iterations stay finite does not depend on the seeds
    lr = [f"training.lr={training['lr'] * 4 / training['batch_size']}"] if "lr" in training else []
    return [
        f"dataset.root={root}",
        f"dataset.image_size={size}",
        "training.batch_size=4",
        "training.precision=fp32",
        *width,
        *lr,
    ]


SLOW = {
    "inception_v3_imagenet",  # 24M parameters written several times: ~30 s
    "resnet20_mask_sources",  # every mask source in float64 (SynFlow: 100 rounds): ~40 s
    "vgg19_mask_sources",  # the same on VGG-19: minutes
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in presets.names()])
def test_preset_runs_two_iterations(name: str, tmp_path: Path) -> None:
    preset = presets.get(name)
    dataset = preset.settings.get("dataset", {}).get("name", "fashion_mnist")
    data = [f"dataset.name={SYNTHETIC[dataset]}"] if dataset in SYNTHETIC else imagenet_folder(name, tmp_path)
    if preset.settings.get("masks", {}).get("sources"):  # every source once, at one density, without ablations
        data += [f"masks.densities=[{preset.settings['masks']['densities'][0]}]", "masks.ablations=[]"]
    if preset.settings.get("dynamic", {}).get("densities"):  # every method once, at one density
        data += [f"dynamic.densities=[{preset.settings['dynamic']['densities'][0]}]"]
    spec, _ = resolve(
        preset=name,
        overrides=[
            *data,
            "dataset.validation_size=0",
            "training.training_steps=2it",
            "training.warmup_steps=0it",
            "training.milestone_steps=[]",
            "imp.rewind=1it",
            "stability.rewind=[]",
            "stability.levels=[0]",
            "controls.kinds=[]",
            f"imp.levels={min(1, preset.settings.get('imp', {}).get('levels', 1))}",
        ],
    )
    experiment, results = run_experiment(spec, name, tmp_path, Runtime(progress=False))
    dense = results["runs"][0]
    assert dense["kind"] == "dense" and not dense["diverged"]
    assert (experiment.path / "replicate_0" / "level_0" / "final.safetensors").exists()
