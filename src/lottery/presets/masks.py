"""Mask sources against IMP: pruning at initialization (SNIP, GraSP, SynFlow, magnitude, random), early-bird
masks, and the "missing the mark" ablations (Frankle et al., ICLR 2021), on LeNet and the CIFAR protocols."""

from lottery.presets import vgg as _vgg  # noqa: F401  (registers vgg19, which vgg19_mask_sources extends)
from lottery.presets.base import Preset, add, presets
from lottery.presets.lenet import LENET_300_100
from lottery.presets.resnet import CIFAR10, SGD, STABILIZING_MODEL, STABILIZING_PRUNING

ALL_SOURCES = ["magnitude", "snip", "grasp", "synflow", "random", "early_bird"]
ABLATIONS = ["shuffle", "reinit", "invert"]

add(
    Preset(
        name="lenet_mask_sources",
        description=(
            "Masks without retraining vs. IMP in minutes on 2 CPU cores: LeNet-300-100 on Fashion-MNIST with the "
            "lenet_300_100 protocol (Adam 1.2e-3, batch 60, Glorot normal; LTH App. G) trained 600 iterations "
            "(0.65 epoch) per run. IMP: layerwise, 75% per level (output layer 50%) for 3 levels to 1.6% "
            "remaining, reset (k = 0) and rewound to k = 100. Every mask source (magnitude, SNIP on 5 batches, "
            "GraSP with temperature T = 200 as in the reference codes, SynFlow with 100 rounds, random, early-bird "
            "from magnitude masks traced every 50 iterations, drawn online once fewer than 10% of the kept weights "
            "differ between the newest mask and each of the previous four, You et al.'s rule) "
            "at 25%, 6.3% and 1.6% remaining, global scope, computed and trained from initialization, each with "
            "its shuffle, reinit and invert ablations (Frankle et al., 'Pruning Neural Networks at "
            "Initialization: Why Are We Missing the Mark?', ICLR 2021)."
        ),
        settings={
            **LENET_300_100,
            "training": {**LENET_300_100["training"], "training_steps": "600it"},
            "pruning": {"strategy": "layerwise_magnitude", "fraction": 0.75, "rates": {"output": 0.5}},
            "imp": {"levels": 3, "rewind": ["0it", "100it"]},
            "masks": {
                "sources": ALL_SOURCES,
                "densities": [0.25, 0.063, 0.016],
                "ablations": ABLATIONS,
                "early_bird_every": "50it",
                "early_bird_threshold": 0.1,  # fewer than 10% of the kept weights change per trace step
                "snip_batches": 5,
                "grasp_temperature": 200.0,  # the GraSP and Synaptic-Flow reference codes (both papers used them)
            },
        },
    )
)

# The pruning-at-initialization papers' CIFAR comparisons (Tanaka et al. NeurIPS 2020 Fig. 6; Frankle et al.
# ICLR 2021 Fig. 2-4): densities from 1/10 down to 1/1000 of the weights remaining, IMP for reference.
CIFAR_DENSITIES = [0.2, 0.1, 0.05, 0.02, 0.01, 0.005]
CIFAR_MASKS = {
    "sources": ALL_SOURCES,
    "densities": CIFAR_DENSITIES,
    "ablations": ABLATIONS,
    "early_bird_every": "1ep",
    "grasp_temperature": 200.0,  # T = 200 in GraSP's and Synaptic-Flow's reference codes (Tanaka Fig. 6, Frankle 2021)
}

add(
    Preset(
        name="resnet20_mask_sources",
        description=(
            "ResNet-20 on CIFAR-10, the 'Stabilizing the LTH' protocol of the resnet20 preset (Gaussian Glorot init; "
            "SGD momentum 0.9, lr 0.1, weight decay 1e-4, batch 128, 30K iterations, lr / 10 at 20K and 25K; global "
            "magnitude pruning 20% per level of the conv weights, the output layer and the 1x1 downsampling "
            "shortcuts not pruned, LTH App. I.3; so its IMP levels are the resnet20 preset's networks) with IMP for "
            "14 levels (4.4% remaining), reset and rewound to k = 500, against every mask source at 20% to 0.5% "
            "remaining from initialization (GraSP at T = 200) with the shuffle, reinit and invert ablations "
            "(Frankle et al. ICLR 2021, Fig. 2-4; Tanaka et al. NeurIPS 2020, Fig. 6). Needs dataset.root pointing "
            "at cifar-10-batches-py; GPU hours."
        ),
        settings={
            "model": dict(STABILIZING_MODEL),
            "dataset": dict(CIFAR10),
            "training": {**SGD, "training_steps": "30000it", "milestone_steps": ["20000it", "25000it"], "lr": 0.1},
            "pruning": dict(STABILIZING_PRUNING),
            "imp": {"levels": 14, "rewind": ["0it", "500it"]},
            "masks": dict(CIFAR_MASKS),
        },
    )
)
add(
    Preset(
        name="vgg19_mask_sources",
        description=(
            "VGG-19 (BatchNorm) on CIFAR-10, the 'Stabilizing the LTH' protocol of the vgg19 preset, with IMP "
            "for 14 levels, reset and rewound to k = 100, against every mask source at 20% to 0.5% remaining from "
            "initialization (GraSP at T = 200) with the shuffle, reinit and invert ablations (Frankle et al. ICLR "
            "2021; Tanaka et al. NeurIPS 2020, Fig. 6: VGG-16/19 on CIFAR, where one-shot SynFlow, SNIP and GraSP "
            "collapse layers "
            "at extreme sparsity). The early-bird trace reads a snapshot every 4 epochs. Needs dataset.root "
            "pointing at cifar-10-batches-py; GPU hours."
        ),
        settings={
            **presets.get("vgg19").settings,
            "imp": {"levels": 14, "rewind": ["0it", "100it"]},
            "masks": {**CIFAR_MASKS, "early_bird_every": "4ep"},
        },
    )
)
