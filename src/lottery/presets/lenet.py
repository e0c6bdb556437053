"""LeNet-300-100 protocol of the LTH paper (Frankle & Carbin 2019, Figure 2 / Appendix)."""

from lottery.presets.base import Preset, add

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
        settings={
            "model": {"name": "lenet_300_100", "init": "glorot_normal"},
            "training": {"optimizer": "adam", "lr": 1.2e-3, "batch_size": 60, "training_steps": "50000it"},
            "pruning": {"strategy": "layerwise_magnitude", "fraction": 0.2, "rates": {"output": 0.1}},
        },
    )
)
