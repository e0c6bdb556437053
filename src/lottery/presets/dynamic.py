"""Dynamic sparsity (RigL, SET, GMP) beside IMP tickets at the same densities, with their rewound masks
(experiments/dynamic.py, docs/dynamic.md)."""

from lottery.presets.base import Preset, add
from lottery.presets.lenet import LENET_300_100
from lottery.presets.resnet import CIFAR10, MODEL

METHODS = ["rigl", "set", "gmp", "rigl_rewound", "set_rewound", "gmp_rewound"]

add(
    Preset(
        name="lenet_dynamic",
        description=(
            "RigL, SET and GMP against IMP at the same density, on 2 shared CPU cores: LeNet-300-100 on Fashion-MNIST "
            "with the lenet_300_100 protocol (Adam 1.2e-3, batch 60, Glorot normal; LTH App. G) trained 300 iterations"
            " per run (evaluated at 0 and 300), 3 replicates. IMP: global magnitude pruning of 60% of the surviving "
            "weights per level for 2 levels (40%, 16% remaining), reset to k = 0. RigL, SET and GMP at 16% from W_0, "
            "and the final masks of RigL and GMP retrained from W_0 (`<method>_rewound`). Dynamic settings: RigL's "
            "(Evci et al. ICML 2020, §4 and google-research/rigl): drop fraction 0.3 with cosine decay, updates until "
            "75% of training, ERK layer densities; the update interval scaled to the short run (every 25 iterations: 9"
            " updates). GMP: Zhu & Gupta's cubic schedule from 20% to 75% of training (google-research/rigl's CIFAR-10"
            " baseline: 20K to 75K of 97.7K steps), every 25 iterations. Add densities (e.g. dynamic.densities = [0.4,"
            " 0.16, 0.064] with imp.levels = 3) and set_rewound where there is more time."
        ),
        settings={
            **LENET_300_100,
            "training": {**LENET_300_100["training"], "training_steps": "300it", "eval_every": "300it"},
            "pruning": {"strategy": "global_magnitude", "fraction": 0.6},
            "imp": {"levels": 2, "rewind": ["0it"]},
            "dynamic": {
                "methods": ["rigl", "set", "gmp", "rigl_rewound", "gmp_rewound"],
                "densities": [0.16],
                "update_every": "25it",
                "every": "25it",
            },
            "replicates": 3,
        },
    )
)

add(
    Preset(
        name="resnet20_dynamic",
        description=(
            "RigL's CIFAR-10 protocol on ResNet-20 (Evci et al., 'Rigging the Lottery', ICML 2020, §4.2 and App.; "
            "google-research/rigl rigl/cifar_resnet/resnet_train_eval.py, where the paper trains WRN-22-2): SGD with "
            "Nesterov momentum 0.9, weight decay 5e-4, batch 128, 97,656 iterations (250 epochs), lr 0.1 divided by 5 "
            "at 30K, 60K and 90K; first convolution dense (prune_first_layer = False), the output layer sparse; ERK "
            "layer densities; RigL and SET: ΔT = 100, drop fraction 0.3 with cosine decay, updates until 75% of "
            "training (the script: iteration 75,000); GMP (Zhu & Gupta) from 20% to 75% of training (the script's "
            "pruning baseline: iterations 20,000 to 75,000) every 1,000 iterations; at 50%, 20%, 10% and 5% of the "
            "weights (the paper's 50-95% sparsities). IMP with the same protocol: global magnitude pruning 20% per "
            "level for 13 levels (5.5% remaining), rewound to k = 2000 (where ResNet-20 becomes stable to SGD noise: "
            "Frankle et al., ICML 2020, Fig. 3); each dynamic mask is also retrained from W_2000. Needs dataset.root "
            "pointing at cifar-10-batches-py; GPU hours."
        ),
        settings={
            "model": dict(MODEL),
            "dataset": dict(CIFAR10),
            "training": {
                "optimizer": "sgd",
                "momentum": 0.9,
                "nesterov": True,
                "weight_decay": 5e-4,
                "lr": 0.1,
                "batch_size": 128,
                "training_steps": "97656it",
                "milestone_steps": ["30000it", "60000it", "90000it"],
                "gamma": 0.2,
                "eval_every": "1000it",
            },
            "pruning": {"strategy": "global_magnitude", "fraction": 0.2, "layers_to_ignore": ["conv.weight"]},
            "imp": {"levels": 13, "rewind": ["2000it"]},
            "dynamic": {
                "methods": METHODS,
                "densities": [0.5, 0.2, 0.1, 0.05],
                "update_every": "100it",
                "drop_fraction": 0.3,
                "drop_schedule": "cosine",
                "stop": "75%",
                "distribution": "erk",
                "start": "20%",
                "end": "75%",
                "every": "1000it",
            },
        },
    )
)
