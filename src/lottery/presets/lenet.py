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
            "A stability and instability sweep that finishes in minutes on 2 CPU cores: the lenet_300_100 "
            "protocol (Adam 1.2e-3, batch 60, layerwise pruning 20% per level, output layer 10%; LTH App. G) on "
            "Fashion-MNIST, trained 1 epoch per level instead of 50K iterations, with 10 levels reaching 10.7% "
            "remaining, where 'Stabilizing' (§3, Fig. 3) compares IMP with random pruning on LeNet. Rewind points "
            "0, 100 and 500 iterations; the dense network (level 0) and level 10; 3 copies (the paper used 18 "
            "for data order, 3 for pruning); random pruning as the control; 30 interpolation points and a "
            "2-point barrier threshold as in the LMC paper."
        ),
        settings={
            **LENET_300_100,
            "training": {**LENET_300_100["training"], "training_steps": "1ep"},
            "imp": {"levels": 10},
            "stability": {
                "rewind": ["0it", "100it", "500it"],
                "levels": [0, 10],
                "copies": 3,
                "controls": ["random_prune"],
            },
        },
    )
)
