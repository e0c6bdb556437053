"""Conv-2/4/6 protocols of the LTH paper (Frankle & Carbin 2019, Figure 2 / App. H) on CIFAR-10."""

from lottery.presets.base import Preset, add

# name -> (Adam lr, iterations, conv pruning rate per round), all from LTH Figure 2.
PROTOCOLS = {"conv2": (2e-4, 20000, 0.1), "conv4": (3e-4, 25000, 0.1), "conv6": (3e-4, 30000, 0.15)}

for _name, (_lr, _iterations, _conv_rate) in PROTOCOLS.items():
    add(
        Preset(
            name=_name,
            description=(
                f"Conv-{_name[4:]} on CIFAR-10, LTH paper protocol: Adam lr {_lr:g}, batch 60, {_iterations // 1000}K "
                f"iterations, constant lr, Glorot normal init (LTH Figure 2, §3 / App. H); layerwise pruning per "
                f"round: conv {_conv_rate:.0%}, fc 20%, output layer 10% (LTH Figure 2); 5,000-example validation "
                "split (LTH App. H). No data augmentation: the LTH paper describes none for Conv-2/4/6 (set "
                "dataset.augment = true to add crop and flip). Needs dataset.root pointing at cifar-10-batches-py."
            ),
            settings={
                "model": {"name": _name, "init": "glorot_normal"},
                "dataset": {"name": "cifar10"},
                "training": {"optimizer": "adam", "lr": _lr, "batch_size": 60, "training_steps": f"{_iterations}it"},
                "pruning": {
                    "strategy": "layerwise_magnitude",
                    "fraction": 0.2,
                    "rates": {"conv": _conv_rate, "fc": 0.2, "output": 0.1},
                },
            },
        )
    )
