"""ImageNet protocols of "The Lottery Ticket Hypothesis at Scale" / "Stabilizing the LTH" (Frankle et al.,
arXiv 1903.01611) and "Linear Mode Connectivity and the LTH" (Frankle et al., arXiv 1912.05671): ResNet-50,
Inception-v3 and SqueezeNet 1.1, one-shot pruned, with late rewinding."""

from lottery.presets.base import Preset, add

IMAGENET = {"name": "imagenet", "augment": True, "validation_size": 0}
ONE_SHOT_GLOBAL = {"strategy": "global_magnitude", "fraction": 0.2, "layers_to_ignore": ["output"]}
# The LMC paper's analysis settings (30 evenly spaced alphas, 2-point barrier threshold, pairs of copies).
# stability.rewind stays empty: the analysis is opt-in, its copies and streamed curves cost (docs/scaling.md).
LMC_STABILITY = {"copies": 2, "interpolation_points": 30, "threshold": 2.0}
COMMON = (
    "Sources: Frankle et al., 'Stabilizing the Lottery Ticket Hypothesis' (v1 title 'The Lottery Ticket Hypothesis "
    "at Scale'), arXiv 1903.01611, and 'Linear Mode Connectivity and the Lottery Ticket Hypothesis', arXiv "
    "1912.05671. Data: an ImageNet folder (dataset.root holding train/<class>/*.JPEG and val/<class>/*.JPEG; "
    "val/ is the test split), RandomResizedCrop + horizontal flip for training, resize + center crop for "
    "evaluation, ImageNet "
    "mean/std normalisation; all 1.28M training images are trained on (validation_size = 0, as the papers). "
    "bf16 autocast (training.precision = 'bf16', CUDA only: set 'fp32' on the CPU); channels_last is on by "
    "default on CUDA. Output layer not pruned. The LMC paper's stability settings (2 copies, 30 interpolation "
    "points, 2-point threshold) are set, but stability.rewind is empty: set it to run the analysis (its copies "
    "train from k, its curves stream the folder; cost in docs/scaling.md)."
)

add(
    Preset(
        name="resnet50_imagenet",
        description=(
            "ResNet-50 on ImageNet (torchvision layout, 25.6M parameters): SGD momentum 0.9, weight decay 1e-4, "
            "lr 0.4 at batch 1024 with 5 epochs of linear warmup, lr / 10 at epochs 30, 60 and 80, 90 epochs "
            "(paper.md protocol table; LTH at Scale / LMC paper hyperparameter tables). One-shot global magnitude "
            "pruning to 30% remaining (70% sparsity, where the papers find rewound ResNet-50 tickets matching); "
            "rewind points every epoch 0-6, then 8 and 10 (the papers rewind to ~epoch 4-6). " + COMMON
        ),
        settings={
            "model": {"name": "resnet50", "init": "kaiming_normal"},
            "dataset": dict(IMAGENET),
            "training": {
                "optimizer": "sgd",
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "lr": 0.4,
                "batch_size": 1024,
                "training_steps": "90ep",
                "warmup_steps": "5ep",
                "milestone_steps": ["30ep", "60ep", "80ep"],
                "gamma": 0.1,
                "eval_every": "1ep",
                "precision": "bf16",
            },
            "pruning": dict(ONE_SHOT_GLOBAL),
            "imp": {"levels": 1, "one_shot_density": 0.3, "rewind": [f"{e}ep" for e in (0, 1, 2, 3, 4, 5, 6, 8, 10)]},
            "stability": dict(LMC_STABILITY),
        },
    )
)
add(
    Preset(
        name="inception_v3_imagenet",
        description=(
            "Inception-v3 on ImageNet at 299 x 299 (torchvision layout without the auxiliary classifier, 23.8M "
            "parameters; 27.2M with it, the papers' 27.1M): batch 1024, 171 epochs, lr 0.03 decayed linearly to "
            "0.005 (LTH at Scale, hyperparameter table). Assumed where the table is silent: SGD momentum 0.9, "
            "weight decay 4e-5 (the TPU reference implementation's), dropout 0.5 before the output layer "
            "(torchvision's). One-shot global magnitude pruning to 30% remaining (70% sparsity); rewind points "
            "every 2 epochs from 0 to 12 (the papers rewind to ~epoch 6). " + COMMON
        ),
        settings={
            "model": {"name": "inception_v3", "init": "kaiming_normal", "dropout": 0.5},
            "dataset": {**IMAGENET, "image_size": 299},
            "training": {
                "optimizer": "sgd",
                "momentum": 0.9,
                "weight_decay": 4e-5,
                "lr": 0.03,
                "batch_size": 1024,
                "training_steps": "171ep",
                "schedule": "linear",
                "final_lr": 0.005,
                "eval_every": "1ep",
                "precision": "bf16",
            },
            "pruning": dict(ONE_SHOT_GLOBAL),
            "imp": {"levels": 1, "one_shot_density": 0.3, "rewind": [f"{e}ep" for e in (0, 2, 4, 6, 8, 10, 12)]},
            "stability": dict(LMC_STABILITY),
        },
    )
)
add(
    Preset(
        name="squeezenet_imagenet",
        description=(
            "SqueezeNet 1.1 on ImageNet (torchvision layout, 1.24M parameters): RMSProp, lr 0.66 decayed "
            "exponentially to 6.6e-5, batch 1024, 150 epochs (LTH at Scale, hyperparameter table). Assumed where "
            "the table is silent: RMSProp smoothing 0.9, momentum 0.9 and epsilon 1.0 (the TPU reference "
            "implementation's; an epsilon of 1 is what makes lr 0.66 trainable), weight decay 1e-4, dropout 0.5 "
            "(torchvision's). One-shot global magnitude pruning to 50% remaining (the papers' 50% sparsity); rewind "
            "points 0, 2, 5, 10, 15 and 20 epochs (the papers rewind to ~epoch 10). " + COMMON
        ),
        settings={
            "model": {"name": "squeezenet1_1", "init": "kaiming_uniform", "dropout": 0.5},
            "dataset": dict(IMAGENET),
            "training": {
                "optimizer": "rmsprop",
                "alpha": 0.9,
                "eps": 1.0,
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "lr": 0.66,
                "batch_size": 1024,
                "training_steps": "150ep",
                "schedule": "exponential",
                "final_lr": 6.6e-5,
                "eval_every": "1ep",
                "precision": "bf16",
            },
            "pruning": dict(ONE_SHOT_GLOBAL),
            "imp": {"levels": 1, "one_shot_density": 0.5, "rewind": [f"{e}ep" for e in (0, 2, 5, 10, 15, 20)]},
            "stability": dict(LMC_STABILITY),
        },
    )
)
