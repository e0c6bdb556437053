"""Experiment specifications: typed groups, step strings, TOML + preset + override resolution, hashing."""

from lottery.spec.groups import (
    ControlsSpec,
    DatasetSpec,
    DynamicSpec,
    ExperimentSpec,
    ImpSpec,
    MasksSpec,
    ModelSpec,
    PruningSpec,
    StabilitySpec,
    TrainingSpec,
)
from lottery.spec.parse import build, resolve, spec_hash, to_dict, to_toml
from lottery.spec.steps import Step

__all__ = [
    "ControlsSpec",
    "DatasetSpec",
    "DynamicSpec",
    "ExperimentSpec",
    "ImpSpec",
    "MasksSpec",
    "ModelSpec",
    "PruningSpec",
    "StabilitySpec",
    "Step",
    "TrainingSpec",
    "build",
    "resolve",
    "spec_hash",
    "to_dict",
    "to_toml",
]
