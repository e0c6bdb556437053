"""lottery: find and study lottery tickets (IMP with rewinding, stability, linear mode connectivity).

The public Python API, for any `nn.Module` and any training loop (see docs/api.md):

    prunable(model)                          which weights IMP may prune: {parameter name: kind}
    Mask                                     {parameter name: bool tensor}; ones, density, apply_, save, load
    attach(mask, optimizer)                  the mask holds in every later step of any torch.optim optimizer
    masked(model, mask)                      `with`: the mask holds in every optimizer that steps the model
    train_subnetwork(model, mask, train_fn, start=, end=)   train a copy of a subnetwork, the mask held
    prune(model, mask, fraction=...)         a new mask: magnitude pruning, global or layerwise
    random_mask_like(mask, seed)             the random-pruning control
    reinitialize(model, mask, seed)          the random-reinitialization control
    imp(model, train_fn, levels=..., ...)    IMP with rewinding around your own training function
    distances(a, b, mask)                    L2, angle and normalised L2 between two networks over a mask
    interpolate(model_a, model_b, evaluate)  metrics along the linear path between two networks
    barrier(curve)                           max over the path minus the endpoints' mean
    scores(model, method, batches=...)       mask-source scores (higher = keep): magnitude, snip, grasp, synflow, random
    mask_from_scores(scores, density=...)    a mask from any scores, with magnitude pruning's counts and ties
    load_experiment(dir)                     an experiment's results, stability, mask-source tables (pandas)
    load_ticket(path, model) / export_ticket  a ticket exported from the store (`lottery export`) into your model
    rewind_search(spec, level=, max_trainings=)  the earliest stable rewind point (lottery rewind-search)
    dynamic(model, optimizer, method, density=, total_steps=)  RigL, SET or GMP in your own loop (a handle)

Your own models, datasets, losses and stability measures, on the CLI with --import (see docs/extending.md):

    register_model(name) / register_dataset(name) / register_loss(name)   (the decorators the built-ins use)
    register_measure(name, label=, group=, pruning=)                       a stability measure of two networks

Your own mask sources and control kinds, one registration each (docs/extending/mask-source.md, control.md):

    register_mask_source(name, stream=, options=, ...)   score(ScoreInput) -> {parameter: scores}
    register_control(name, stream=, label=, ...)         start(ControlInput) -> ControlStart
"""

from lottery.startup import collector_paused

with collector_paused():  # importing torch without the cyclic collector's passes over it (lottery/startup.py)
    from lottery import wiring  # noqa: F401  (last: the trackers listen to the engine; readers get its results)
    from lottery.api.analysis import Curve, barrier, classification_metrics, distances, interpolate
    from lottery.api.imp import Level, imp
    from lottery.api.masks import prune, random_mask_like, reinitialize
    from lottery.api.notebook import load_experiment
    from lottery.api.rewind import rewind_search
    from lottery.api.subnetwork import masked, train_subnetwork
    from lottery.controls import ControlInput, ControlStart
    from lottery.dynamic import DynamicSparsity, dynamic  # the function `lottery.dynamic` (package: lottery.dynamic.*)
    from lottery.export import export_ticket, load_ticket
    from lottery.extension_points import register_control, register_mask_source
    from lottery.measures import register_measure
    from lottery.plugins import register_dataset, register_loss, register_model
    from lottery.pruning import Attachment, Mask, attach, prunable
    from lottery.pruning.sources import mask_from_scores, scores
    from lottery.pruning.sources.base import ScoreInput
    from lottery.version import __version__

__all__ = [
    "Attachment",
    "ControlInput",
    "ControlStart",
    "Curve",
    "DynamicSparsity",
    "Level",
    "Mask",
    "__version__",
    "attach",
    "barrier",
    "classification_metrics",
    "distances",
    "dynamic",
    "export_ticket",
    "imp",
    "interpolate",
    "load_experiment",
    "load_ticket",
    "mask_from_scores",
    "masked",
    "prunable",
    "prune",
    "random_mask_like",
    "ScoreInput",
    "register_control",
    "register_dataset",
    "register_loss",
    "register_measure",
    "register_mask_source",
    "register_model",
    "reinitialize",
    "rewind_search",
    "scores",
    "train_subnetwork",
]
