"""ResNet-20 on CIFAR-10: the "Stabilizing the LTH" protocols (standard, low lr, warmup) and the LMC paper's."""

from lottery.presets.base import Preset, add

SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 128, "gamma": 0.1}
STABILIZING = {"training_steps": "30000it", "milestone_steps": ["20000it", "25000it"]}
MODEL = {"name": "resnet20", "init": "kaiming_normal"}  # the LMC recipe's (open_lth's) init
STABILIZING_MODEL = {"name": "resnet20", "init": "glorot_normal"}
CIFAR10 = {"name": "cifar10", "augment": True}
# The 1x1 convolutions of the downsampling shortcuts (in ResNet-20: blocks.3 and blocks.6, 512 + 2048 = 2,560
# weights) and the output layer (640). A pattern may match nothing: with model.shortcut = 'padding' there are none.
SHORTCUTS = "blocks.*.shortcut.0.weight"
STABILIZING_PRUNING = {"strategy": "global_magnitude", "fraction": 0.2, "layers_to_ignore": ["output", SHORTCUTS]}
ARCHITECTURE = (
    "ResNet-20 for CIFAR-10 (3x3 conv 16, three stages of 3 basic blocks at 16/32/64 filters, 1x1-conv projection "
    "shortcuts, 272K parameters; the LTH papers call it 'Resnet-18')"
)
COMMON = (
    ARCHITECTURE + ", Gaussian Glorot (Xavier normal) init (LTH App. I.3: 'Gaussian Glorot initialization'), "
    "BatchNorm gamma = 1, beta = 0. Data: CIFAR-10 with random 4-pixel-padded crops and horizontal flips; 5,000 "
    "training examples held out for validation. Needs dataset.root pointing at cifar-10-batches-py."
)
STABILIZING_SOURCE = (
    "Training (Frankle et al., 'Stabilizing the Lottery Ticket Hypothesis', arXiv 1903.01611, hyperparameter "
    "table; also LTH App. I.3): SGD momentum 0.9, weight decay 1e-4, batch 128, 30K iterations, lr / 10 at 20K and "
    "25K. Pruning: global magnitude pruning of 20% of the surviving conv weights per round; the output layer and "
    "the 1x1 downsampling shortcut convolutions (blocks.*.shortcut.0.weight: blocks.3 and blocks.6) are not "
    "pruned (LTH App. I.3: 'We do not prune the 2560 parameters used to downsample residual connections or the "
    "640 parameters in the fully-connected output layer'). "
)

add(
    Preset(
        name="resnet20",
        description=STABILIZING_SOURCE + "Standard lr 0.1, no warmup. " + COMMON,
        settings={
            "model": dict(STABILIZING_MODEL),
            "dataset": dict(CIFAR10),
            "training": {**SGD, **STABILIZING, "lr": 0.1},
            "pruning": dict(STABILIZING_PRUNING),
        },
    )
)
add(
    Preset(
        name="resnet20_low",
        description=STABILIZING_SOURCE + "Low lr 0.01, no warmup (the papers' 'low' variant). " + COMMON,
        settings={
            "model": dict(STABILIZING_MODEL),
            "dataset": dict(CIFAR10),
            "training": {**SGD, **STABILIZING, "lr": 0.01},
            "pruning": dict(STABILIZING_PRUNING),
        },
    )
)
add(
    Preset(
        name="resnet20_warmup",
        description=(
            STABILIZING_SOURCE + "Warmup variant: lr 0.03 reached by linear warmup from 0 over the first 20K "
            "iterations. " + COMMON
        ),
        settings={
            "model": dict(STABILIZING_MODEL),
            "dataset": dict(CIFAR10),
            "training": {**SGD, **STABILIZING, "lr": 0.03, "warmup_steps": "20000it"},
            "pruning": dict(STABILIZING_PRUNING),
        },
    )
)
add(
    Preset(
        name="resnet20_lmc",
        description=(
            "ResNet-20 recipe of the LMC paper (Frankle et al., 'Linear Mode Connectivity and the Lottery Ticket "
            "Hypothesis', arXiv 1912.05671, network table) in its codebase open_lth (cifar_resnet_20 default "
            "hparams): SGD momentum 0.9, weight decay 1e-4, lr 0.1, batch 128, 160 epochs, lr / 10 at epochs 80 and "
            "120, no warmup; global magnitude pruning of 20% per round over every conv, the 1x1 downsampling "
            "shortcut convs included, and the output layer (open_lth ignores no layer for ResNets; LTH App. I.3 "
            "instead leaves the shortcuts and the output layer unpruned, as the resnet20 preset does); BatchNorm "
            "gamma ~ U[0, 1] (open_lth's default batchnorm_init 'uniform'). No validation split: the LMC paper trains "
            "on all 50,000 CIFAR-10 training images, so 160 epochs are 62.4K iterations (the paper's '63K', drops at "
            "'32K, 48K'). Kaiming normal init (open_lth's choice; the LTH appendix used Glorot), random 4-pixel-padded "
            "crops and horizontal flips. Needs dataset.root pointing at cifar-10-batches-py."
        ),
        settings={
            "model": {**MODEL, "batchnorm_init": "uniform"},
            "dataset": {**CIFAR10, "validation_size": 0},
            "training": {**SGD, "lr": 0.1, "training_steps": "160ep", "milestone_steps": ["80ep", "120ep"]},
            "pruning": {"strategy": "global_magnitude", "fraction": 0.2},
        },
    )
)
