"""VGG on CIFAR-10: VGG-19 "Stabilizing the LTH" protocols (standard, low lr, warmup) and the LMC paper's VGG-16."""

from lottery.presets.base import Preset, add

SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "gamma": 0.1}
EPOCHS = {"training_steps": "160ep", "milestone_steps": ["80ep", "120ep"]}
CIFAR10 = {"name": "cifar10", "augment": True}
GLOBAL_CONVS = {"strategy": "global_magnitude", "fraction": 0.2, "layers_to_ignore": ["output"]}
VGG19 = (
    "VGG-19 for CIFAR-10 (16 3x3 convs 64-64-M-128-128-M-256x4-M-512x4-M-512x4, each conv + BatchNorm + ReLU, global "
    "average pool, one linear output layer; 20.0M parameters), Gaussian Glorot (Xavier normal) init (LTH App. I.2: "
    "'Gaussian Glorot initialization'), BatchNorm gamma = 1, beta = 0. "
    "Data: CIFAR-10 with random 4-pixel-padded crops and horizontal flips; 5,000 training examples held out for "
    "validation, so an epoch of 45,000 images at batch 64 is 703 iterations and 160 epochs are the papers' 112K "
    "iterations. Needs dataset.root pointing at cifar-10-batches-py."
)
STABILIZING_SOURCE = (
    "Training (Frankle et al., 'Stabilizing the Lottery Ticket Hypothesis', arXiv 1903.01611, hyperparameter "
    "table; also LTH App. I.2): SGD momentum 0.9, weight decay 1e-4, batch 64, 160 epochs (112K iterations), lr / 10 "
    "at epochs 80 and 120. Pruning: global magnitude pruning of 20% of the surviving conv weights per round, output "
    "layer not pruned (same sources). "
)

for _name, _lr, _warmup, _variant in (
    ("vgg19", 0.1, "0it", "Standard lr 0.1, no warmup. "),
    ("vgg19_low", 0.01, "0it", "Low lr 0.01, no warmup (the papers' 'low' variant). "),
    ("vgg19_warmup", 0.1, "10000it", "Warmup variant: lr 0.1 reached by linear warmup from 0 over 10K iterations. "),
):
    add(
        Preset(
            name=_name,
            description=STABILIZING_SOURCE + _variant + VGG19,
            settings={
                "model": {"name": "vgg19", "init": "glorot_normal"},
                "dataset": dict(CIFAR10),
                "training": {**SGD, **EPOCHS, "lr": _lr, "batch_size": 64, "warmup_steps": _warmup},
                "pruning": dict(GLOBAL_CONVS),
            },
        )
    )

add(
    Preset(
        name="vgg16_lmc",
        description=(
            "VGG-16 recipe of the LMC paper (Frankle et al., 'Linear Mode Connectivity and the Lottery Ticket "
            "Hypothesis', arXiv 1912.05671, network table) in its codebase open_lth (cifar_vgg_16 default hparams): "
            "SGD momentum 0.9, weight decay 1e-4, lr 0.1, batch 128, 160 epochs, lr / 10 at epochs 80 and 120, no "
            "warmup; global magnitude pruning of 20% per round over the convs, output layer not pruned (open_lth's "
            "pruning_layers_to_ignore = fc.weight); BatchNorm gamma ~ U[0, 1] (open_lth's default batchnorm_init "
            "'uniform'). No validation split: the LMC paper trains on all 50,000 CIFAR-10 training images, so 160 "
            "epochs are 62.4K iterations (the paper's '63K', drops at '32K, 48K'). VGG-16 for CIFAR (13 3x3 convs "
            "with BatchNorm, global average pool, one linear output layer; 14.7M parameters), Kaiming normal init "
            "(open_lth's choice; the LTH appendix used Glorot), random 4-pixel-padded crops and horizontal flips. "
            "Needs dataset.root pointing at cifar-10-batches-py."
        ),
        settings={
            "model": {"name": "vgg16", "init": "kaiming_normal", "batchnorm_init": "uniform"},
            "dataset": {**CIFAR10, "validation_size": 0},
            "training": {**SGD, **EPOCHS, "lr": 0.1, "batch_size": 128},
            "pruning": dict(GLOBAL_CONVS),
        },
    )
)
