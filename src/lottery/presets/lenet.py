"""LeNet-300-100 protocol of the LTH paper (Frankle & Carbin 2019, Figure 2 / Appendix)."""

from lottery.presets.base import Preset, add

LENET_300_100 = {
    "model": {"name": "lenet_300_100", "init": "glorot_normal"},
    "training": {"optimizer": "adam", "lr": 1.2e-3, "batch_size": 60, "training_steps": "50000it"},
    "pruning": {"strategy": "layerwise_magnitude", "fraction": 0.2, "rates": {"output": 0.1}},
}

add(
    Preset(
        name="lenet_300_100",
        description=(
            "LeNet-300-100 (FC 300-100-10, ReLU), LTH paper protocol: Adam lr 1.2e-3, batch 60, 50K iterations, "
            "constant lr, Glorot normal init (LTH §2 / App. G); layerwise pruning 20% per round, output layer 10% "
            "(LTH App. G); 5,000-example validation split, evaluation every 100 iterations (LTH §2). The paper "
            "used MNIST; this preset trains on the default dataset (fashion_mnist) — set dataset.name = 'mnist' "
            "and dataset.root for the exact protocol."
        ),
        settings=LENET_300_100,
    )
)

add(
    Preset(
        name="lenet_stability",
        description=(
            "A stability and instability sweep that finishes in minutes on 2 CPU cores: LeNet-300-100 on "
            "Fashion-MNIST with the lenet_300_100 optimizer (Adam 1.2e-3, batch 60; LTH App. G) trained 1 epoch "
            "per level instead of 50K iterations, and pruned 50% per level (output layer 25%) instead of 20% so "
            "that 3 levels reach ~12.6% remaining, near the 10.7% where 'Stabilizing' (§3, Fig. 3) compares IMP "
            "with random pruning on LeNet. Rewind points 0, 100 and 500 iterations; the dense network (level 0) "
            "and level 3; 2 copies (the paper used 18 for data order); random pruning as the control; 30 "
            "interpolation points and a 2-point barrier threshold as in the LMC paper."
        ),
        settings={
            "model": LENET_300_100["model"],
            "training": {**LENET_300_100["training"], "training_steps": "1ep"},
            "pruning": {**LENET_300_100["pruning"], "fraction": 0.5, "rates": {"output": 0.25}},
            "imp": {"levels": 3},
            "stability": {
                "rewind": ["0it", "100it", "500it"],
                "levels": [0, 3],
                "copies": 2,
                "controls": ["random_prune"],
            },
        },
    )
)
