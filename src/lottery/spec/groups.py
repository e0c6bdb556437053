"""The experiment specification: small typed groups of settings, validated as they are built.

Field defaults are neutral: a setting left at its default is omitted from the run hash, so adding a
new field with a neutral default never renames existing runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lottery import extension_points
from lottery.errors import UserError
from lottery.extension_points import MASK_ABLATIONS, MASK_ENGINE_SOURCES
from lottery.spec.steps import canonical


def _positive(value: float, name: str) -> None:
    if not value > 0:
        raise UserError(f"{name} must be > 0, got {value}")


def _nonnegative(value: float, name: str) -> None:
    if not value >= 0:
        raise UserError(f"{name} must be >= 0, got {value}")


SEED_LIMIT = 2**63  # seeds are below this (torch's and numpy's generators take signed 64-bit seeds)
MAX_COUNT = {  # counts above these are input mistakes, refused before any work (each is a loop or an allocation)
    "replicates": 1000,
    "imp.levels": 1000,
    "stability.copies": 1000,
    "stability.interpolation_points": 100_000,
    "stability.batchnorm_batches": 1_000_000,
}


def _at_most(value: int, name: str) -> None:
    if value > MAX_COUNT[name]:
        raise UserError(f"{name} must be at most {MAX_COUNT[name]}, got {value}")


def _seed(value: int, name: str, shift: int = 0) -> None:
    """A seed in [0, 2**63), also after adding `shift` (replicate r uses seed + r)."""
    _nonnegative(value, name)
    if value + shift >= SEED_LIMIT:
        also = f" (replicates = {shift + 1} use seeds up to {name} + {shift})" if shift else ""
        raise UserError(f"{name} must be below 2**63 = {SEED_LIMIT}{also}, got {value}")


def _plugin_hash(kind: str, name: str, recorded: str | None, field: str) -> None:
    """A source hash is recorded for plugins only (lottery.plugins.stamp)."""
    from lottery.registry import is_builtin

    if recorded is not None and is_builtin(kind, name):
        raise UserError(f"{field} applies to plugin {kind}s; '{name}' is built in")


def _registered(value: str, allowed: tuple[str, ...], name: str) -> None:
    """`_one_of` for the names of registered mask sources and control kinds: any name while a stored spec is read
    (`extension_points.reading_stored`: a plugin's, whose module this process did not import)."""
    if not extension_points.known(value, allowed):
        _one_of(value, allowed, name)


def _one_of(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        from lottery.errors import unknown_name

        raise unknown_name(name, value, allowed)


@dataclass(frozen=True)
class ModelSpec:
    name: str = "lenet_300_100"
    init: str = "kaiming_normal"
    width: int | None = None  # first layer's width; later layers scale with it. None: the family's default
    batchnorm_init: str = "default"
    dropout: float = 0.0
    shortcut: str = "projection"  # ResNet downsampling shortcut: 'projection' (1x1 conv + BN) or 'padding'
    options: dict[str, Any] = field(default_factory=dict)  # a plugin model's own settings ([model.options])
    source_hash: str | None = None  # a plugin model's source code (recorded by lottery.plugins.stamp)

    def validate(self) -> ModelSpec:
        if not self.name.isascii():
            raise UserError(f"model.name {self.name!r} must be written in ASCII letters, digits and '_'")
        if self.width is not None:
            _positive(self.width, "model.width")
        if not 0 <= self.dropout < 1:
            raise UserError(f"model.dropout must be in [0, 1), got {self.dropout}")
        _one_of(self.shortcut, ("projection", "padding"), "model.shortcut")
        _plugin_hash("model", self.name, self.source_hash, "model.source_hash")
        return self


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "fashion_mnist"
    root: str | None = None  # None: the dataset's default directory, where it has one
    validation_size: int = 5000  # held out of the training set with a fixed seed; 0 allowed
    augment: bool = False
    normalize: bool = True
    subset: int | None = None  # train on the first N non-validation examples only
    classes: int | None = None  # image folders: keep this many classes (seeded choice), e.g. 100 for ImageNet-100
    fraction: float | None = None  # image folders: keep this fraction of each class's training images (seeded)
    image_size: int | None = None  # image folders: crop size (None: 224; eval resizes to 256/224 of it first)
    options: dict[str, Any] = field(default_factory=dict)  # a plugin dataset's own settings ([dataset.options])
    source_hash: str | None = None  # a plugin dataset's source code (recorded by lottery.plugins.stamp)

    def validate(self) -> DatasetSpec:
        if self.root is not None and not self.root.strip():
            raise UserError("dataset.root is empty: give the data directory (or leave it out for the default)")
        _nonnegative(self.validation_size, "dataset.validation_size")
        if self.subset is not None:
            _positive(self.subset, "dataset.subset")
        if self.classes is not None:
            _positive(self.classes, "dataset.classes")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise UserError(f"dataset.fraction must be in (0, 1], got {self.fraction}")
        if self.image_size is not None and self.image_size < 8:
            raise UserError(f"dataset.image_size must be at least 8 pixels, got {self.image_size}")
        _plugin_hash("dataset", self.name, self.source_hash, "dataset.source_hash")
        return self


OPTIMIZERS = ("sgd", "adam", "adamw", "radam", "nadam", "adamax", "rmsprop", "adagrad", "adadelta")
SCHEDULES = ("step", "cosine", "linear", "exponential")
# Which optimizers take each optional hyperparameter (lr and weight_decay: all of them).
OPTIMIZER_ARGS = {
    "momentum": ("sgd", "rmsprop"),
    "betas": ("adam", "adamw", "radam", "nadam", "adamax"),
    "eps": OPTIMIZERS[1:],
    "amsgrad": ("adam", "adamw"),
    "alpha": ("rmsprop",),
    "centered": ("rmsprop",),
    "rho": ("adadelta",),
    "lr_decay": ("adagrad",),
}


@dataclass(frozen=True)
class TrainingSpec:
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    training_steps: str = "1ep"
    warmup_steps: str = "0it"
    milestone_steps: tuple[str, ...] = ()
    gamma: float = 0.1
    init_seed: int = 0
    data_order_seed: int = 0
    augmentation_seed: int = 0
    eval_every: str = "100it"
    precision: str = "fp32"  # 'bf16': bf16 autocast (CUDA only)
    # The loss (training/losses.py) and the optimizer's own hyperparameters (None: torch's default for it).
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0  # cross_entropy only
    loss_source_hash: str | None = None  # a plugin loss's source code (recorded by lottery.plugins.stamp)
    betas: tuple[float, ...] | None = None  # adam, adamw, radam, nadam, adamax
    eps: float | None = None  # every optimizer but sgd
    amsgrad: bool = False  # adam, adamw
    alpha: float | None = None  # rmsprop's smoothing constant
    centered: bool = False  # rmsprop
    rho: float | None = None  # adadelta
    lr_decay: float | None = None  # adagrad
    schedule: str = "step"  # 'step': warmup, then x gamma at each milestone; 'cosine': warmup, then cosine to 0;
    # 'linear' / 'exponential': warmup, then decay to final_lr at the end
    final_lr: float | None = None  # the learning rate at the end of a 'linear' or 'exponential' schedule

    def validate(self) -> TrainingSpec:
        _one_of(self.optimizer, OPTIMIZERS, "training.optimizer")
        _positive(self.lr, "training.lr")
        if not 0 <= self.momentum < 1:
            raise UserError(f"training.momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise UserError("training.nesterov needs training.optimizer = 'sgd' and training.momentum > 0")
        _nonnegative(self.weight_decay, "training.weight_decay")
        self._validate_optimizer_args()
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"training.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and self.loss != "cross_entropy":
            raise UserError(f"training.label_smoothing applies to training.loss = 'cross_entropy' (not '{self.loss}')")
        _one_of(self.schedule, SCHEDULES, "training.schedule")
        if self.schedule != "step" and self.milestone_steps:
            raise UserError(f"training.milestone_steps apply to training.schedule = 'step' ({self.schedule} has none)")
        if (self.final_lr is not None) != (self.schedule in ("linear", "exponential")):
            raise UserError("training.final_lr is needed by, and only by, training.schedule = 'linear' / 'exponential'")
        if self.final_lr is not None:
            _positive(self.final_lr, "training.final_lr")
        _positive(self.batch_size, "training.batch_size")
        _positive(self.gamma, "training.gamma")
        for seed in ("init_seed", "data_order_seed", "augmentation_seed"):
            _seed(getattr(self, seed), f"training.{seed}")
        _one_of(self.precision, ("fp32", "bf16"), "training.precision")
        if not self.loss:
            raise UserError("training.loss must name a loss (e.g. 'cross_entropy')")
        _plugin_hash("loss", self.loss, self.loss_source_hash, "training.loss_source_hash")
        eval_every = canonical(self.eval_every, "training.eval_every")
        if eval_every == "0it":
            raise UserError("training.eval_every must be at least 1 iteration")
        return TrainingSpec(
            **{
                **self.__dict__,
                "training_steps": canonical(self.training_steps, "training.training_steps"),
                "warmup_steps": canonical(self.warmup_steps, "training.warmup_steps"),
                "milestone_steps": tuple(canonical(s, "training.milestone_steps") for s in self.milestone_steps),
                "eval_every": eval_every,
            }
        )

    def _validate_optimizer_args(self) -> None:
        """One line per bad value: a hyperparameter the chosen optimizer does not take, or out of range."""
        default = TrainingSpec()
        for name, takers in OPTIMIZER_ARGS.items():
            if getattr(self, name) != getattr(default, name) and self.optimizer not in takers:
                raise UserError(
                    f"training.{name} applies to training.optimizer = {' / '.join(takers)}, not '{self.optimizer}'"
                )
        if self.betas is not None and (len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)):
            raise UserError(f"training.betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got {list(self.betas)}")
        if self.eps is not None:
            _positive(self.eps, "training.eps")
        if self.alpha is not None and not 0 <= self.alpha < 1:
            raise UserError(f"training.alpha must be in [0, 1), got {self.alpha}")
        if self.rho is not None and not 0 <= self.rho <= 1:
            raise UserError(f"training.rho must be in [0, 1], got {self.rho}")
        if self.lr_decay is not None:
            _nonnegative(self.lr_decay, "training.lr_decay")


@dataclass(frozen=True)
class PruningSpec:
    strategy: str = "global_magnitude"
    fraction: float = 0.2  # of the surviving weights, per level
    rates: dict[str, float] = field(default_factory=dict)  # layer kind ('conv', 'fc', 'output') or name -> fraction
    layers_to_ignore: tuple[str, ...] = ()
    structure: str = "unstructured"  # 'unstructured', 'channel' (whole channels/units) or 'n:m' (docs/structure.md)
    n: int = 2  # 'n:m': weights kept in every group of m consecutive inputs (2:4: sparse tensor cores)
    m: int = 4

    def validate(self) -> PruningSpec:
        for name, rate in {
            "pruning.fraction": self.fraction,
            **{f"pruning.rates.{k}": v for k, v in self.rates.items()},
        }.items():
            if not 0 < rate < 1:
                raise UserError(f"{name} must be in (0, 1), got {rate}")
        _one_of(self.structure, STRUCTURES, "pruning.structure")
        if self.structure != "n:m" and (self.n, self.m) != (2, 4):
            raise UserError(f"pruning.n and pruning.m apply to pruning.structure = 'n:m', not {self.structure!r}")
        if not (isinstance(self.n, int) and isinstance(self.m, int) and 1 <= self.n < self.m <= MAX_GROUP):
            raise UserError(
                f"pruning.n and pruning.m must be integers with 1 <= n < m <= {MAX_GROUP}, got "
                f"n = {self.n!r}, m = {self.m!r}"
            )
        return self


STRUCTURES = ("unstructured", "channel", "n:m")
MAX_GROUP = 1024  # pruning.m: a group of m consecutive inputs; larger groups are input mistakes


@dataclass(frozen=True)
class ImpSpec:
    levels: int = 0  # pruning levels after the dense one (level 0)
    rewind: tuple[str, ...] = ("0it",)  # one or several rewind points; all share one dense run
    one_shot_density: float | None = None  # prune straight to this density at level 1
    optimizer_state: str = "fresh"  # 'fresh': new optimizer at k; 'rewind': restore its state at k

    def validate(self) -> ImpSpec:
        _nonnegative(self.levels, "imp.levels")
        _at_most(self.levels, "imp.levels")
        if not self.rewind:
            raise UserError("imp.rewind needs at least one step string")
        rewind = tuple(dict.fromkeys(canonical(s, "imp.rewind") for s in self.rewind))
        if self.one_shot_density is not None:
            if not 0 < self.one_shot_density < 1:
                raise UserError(f"imp.one_shot_density must be in (0, 1), got {self.one_shot_density}")
            if self.levels > 1:
                raise UserError("imp.one_shot_density prunes in one level: set imp.levels = 1 (or 0)")
        _one_of(self.optimizer_state, ("fresh", "rewind"), "imp.optimizer_state")
        return ImpSpec(self.levels, rewind, self.one_shot_density, self.optimizer_state)


CONTROL_PAIRINGS = ("paired", "independent")


@dataclass(frozen=True)
class ControlsSpec:
    kinds: tuple[str, ...] = ()
    levels: tuple[int, ...] | None = None  # None: every pruned level
    seeds: tuple[int, ...] = (0,)
    pairing: str = "paired"  # 'paired': one control seed for every level and k; 'independent': per level and k

    def validate(self) -> ControlsSpec:
        for kind in self.kinds:
            _registered(kind, tuple(extension_points.control_kinds), "controls.kinds")
        for level in self.levels or ():
            _positive(level, "controls.levels")
        if not self.seeds:
            raise UserError("controls.seeds needs at least one seed")
        for seed in self.seeds:
            _seed(seed, "controls.seeds")
        _one_of(self.pairing, CONTROL_PAIRINGS, "controls.pairing")
        return self


DISTANCE_PARAMS = ("prunable", "all")


@dataclass(frozen=True)
class StabilitySpec:
    rewind: tuple[str, ...] = ()  # rewind points to analyse; empty: no stability analysis
    levels: tuple[int, ...] | None = None  # IMP levels to analyse (0 = dense); None: every level
    copies: int = 2  # copies of each subnetwork trained with independent data order and augmentation
    controls: tuple[str, ...] = ()  # also analyse these controls at the same densities
    masks: tuple[str, ...] = ()  # also analyse these [masks] kinds (e.g. 'snip', 'snip_shuffle') at (masks.at, level 0)
    dynamic: tuple[str, ...] = ()  # also analyse copies of these [dynamic] methods' runs from each k (docs/dynamic.md)
    interpolation_points: int = 30
    batchnorm: str = "recompute"  # BatchNorm statistics of interpolated networks: 'recompute' or 'interpolate'
    batchnorm_batches: int = 30  # training batches used to re-estimate them
    threshold: float = 2.0  # error barrier (percentage points) below which a pair is 'stable'
    train_subset: int = 5000  # fixed training examples on which the train error is measured
    distance_params: str = "prunable"  # distances over 'prunable' weights only, or 'all' parameters (docs/measured.md)

    def validate(self) -> StabilitySpec:
        rewind = tuple(dict.fromkeys(canonical(s, "stability.rewind") for s in self.rewind))
        for level in self.levels or ():
            _nonnegative(level, "stability.levels")
        if self.copies < 2:
            raise UserError(f"stability.copies must be at least 2 (pairs of copies are compared), got {self.copies}")
        _at_most(self.copies, "stability.copies")
        analysable = tuple(k for k in extension_points.control_kinds if extension_points.control_kinds.get(k).stability)
        for control in self.controls:
            _registered(control, analysable, "stability.controls")
        if self.interpolation_points < 2:
            raise UserError(f"stability.interpolation_points must be at least 2, got {self.interpolation_points}")
        _at_most(self.interpolation_points, "stability.interpolation_points")
        _one_of(self.batchnorm, ("recompute", "interpolate"), "stability.batchnorm")
        _positive(self.batchnorm_batches, "stability.batchnorm_batches")
        _at_most(self.batchnorm_batches, "stability.batchnorm_batches")
        _nonnegative(self.threshold, "stability.threshold")
        _positive(self.train_subset, "stability.train_subset")
        _one_of(self.distance_params, DISTANCE_PARAMS, "stability.distance_params")
        levels = None if self.levels is None else tuple(sorted(set(self.levels)))
        masks = tuple(dict.fromkeys(self.masks))
        dynamic = tuple(dict.fromkeys(self.dynamic))
        if dynamic and not rewind:
            raise UserError("stability.dynamic needs stability.rewind (the points k its copies start from)")
        return StabilitySpec(
            **{**self.__dict__, "rewind": rewind, "levels": levels, "masks": masks, "dynamic": dynamic}
        )


def _scorers() -> tuple[str, ...]:
    """The registered mask sources (lottery.pruning.sources and plugins): what scores a mask."""
    return tuple(extension_points.mask_sources)


@dataclass(frozen=True)
class MasksSpec:
    """Masks found without IMP's retraining (pruning at initialization, early-bird), their ablations. The sources'
    own settings (`snip_batches`, `grasp_temperature`, a plugin source's options) are flat keys of `[masks]` too,
    declared by each source's registration (`lottery.extension_points.register_mask_source`): held in
    `source_options` (those that differ from their defaults), read with `option(key)`."""

    FLAT = "source_options"  # the field whose entries are flat keys of the group (lottery.spec.parse)
    FLAT_HINT = "a plugin mask source's option is known once its module is imported (--import FILE)"

    sources: tuple[str, ...] = ()  # empty: none
    densities: tuple[float, ...] = ()  # target densities of the pool
    ablations: tuple[str, ...] = ()  # 'shuffle', 'reinit', 'invert' (Frankle et al. ICLR 2021), for every source
    at: str = "0it"  # the dense run's iteration the mask is computed from and trained from
    scope: str = "global"  # 'global' (one ranking over the pool) or 'layerwise' (each layer to the density)
    seeds: tuple[int, ...] = (0,)  # every source and ablation is run once per seed
    rounds: dict[str, int] = field(default_factory=dict)  # source -> scoring rounds (default 1; synflow 100)
    schedule: str = "exponential"  # density schedule of iterative sources ('exponential' or 'linear')
    early_bird_source: str = "magnitude"  # the source whose mask is traced over the dense run
    early_bird_threshold: float = 0.1  # mask distance (normalised by the weights kept) below which it has settled
    early_bird_every: str | None = None  # trace interval; None: training.eval_every
    early_bird_rule: str = "online"  # 'online' (You et al.: newest vs previous 4 masks) or 'hindsight'
    score_mode: dict[str, str] = field(default_factory=dict)  # source -> 'train'/'eval' (default: the references')
    source_options: dict[str, Any] = field(default_factory=dict)  # the sources' options that differ from defaults

    @staticmethod
    def flat_type(key: str) -> Any:
        """The type of the flat `[masks]` key `key` a source's options declare (None: no source declares it)."""
        found = extension_points.option_types().get(key)
        if found is None:
            return Any if extension_points.known(key, ()) else None  # (a stored plugin option: as written)
        return found[0]

    @staticmethod
    def flat_names() -> list[str]:
        return sorted(extension_points.option_types())

    @staticmethod
    def flat_defaults(full: bool) -> dict[str, Any]:
        """The option values a spec lists where it leaves them out: with `full`, the built-in sources' defaults."""
        return extension_points.builtin_option_defaults() if full else {}

    def option(self, key: str) -> Any:
        """The value of a source option: the spec's, else its registered default."""
        if key in self.source_options:
            return self.source_options[key]
        return extension_points.option_types()[key][1]

    def kinds(self) -> list[str]:
        """Every kind of run the group asks for: each source, then `<source>_<ablation>`."""
        return [*self.sources, *(f"{s}_{a}" for s in self.sources for a in self.ablations)]

    def validate(self) -> MasksSpec:
        scorers = _scorers()
        for source in self.sources:
            _registered(source, (*scorers, *MASK_ENGINE_SOURCES), "masks.sources")
        for ablation in self.ablations:
            _one_of(ablation, MASK_ABLATIONS, "masks.ablations")
        if self.sources and not self.densities:
            raise UserError("masks.sources needs masks.densities (target densities, e.g. [0.2, 0.05])")
        for density in self.densities:
            if not 0 < density < 1:
                raise UserError(f"masks.densities must be in (0, 1), got {density}")
        _one_of(self.scope, ("global", "layerwise"), "masks.scope")
        _one_of(self.schedule, ("exponential", "linear"), "masks.schedule")
        for source, rounds in self.rounds.items():
            _registered(source, scorers, "masks.rounds key")
            _positive(rounds, f"masks.rounds.{source}")
        if not self.seeds:
            raise UserError("masks.seeds needs at least one seed")
        for seed in self.seeds:
            _nonnegative(seed, "masks.seeds")
        options = extension_points.check_options(dict(self.source_options))
        _registered(self.early_bird_source, scorers, "masks.early_bird_source")
        if not 0 <= self.early_bird_threshold <= 1:
            raise UserError(f"masks.early_bird_threshold must be in [0, 1], got {self.early_bird_threshold}")
        _one_of(self.early_bird_rule, ("online", "hindsight"), "masks.early_bird_rule")
        for source, mode in self.score_mode.items():
            _registered(source, scorers, "masks.score_mode key")
            _one_of(mode, ("train", "eval"), f"masks.score_mode.{source}")
        every = None if self.early_bird_every is None else canonical(self.early_bird_every, "masks.early_bird_every")
        if every == "0it":
            raise UserError("masks.early_bird_every must be at least 1 iteration")
        return MasksSpec(
            **{
                **self.__dict__,
                "sources": tuple(dict.fromkeys(self.sources)),
                "densities": tuple(sorted(set(self.densities), reverse=True)),
                "ablations": tuple(dict.fromkeys(self.ablations)),
                "at": canonical(self.at, "masks.at"),
                "early_bird_every": every,
                "source_options": options,
            }
        )


DYNAMIC_METHODS = ("rigl", "set", "gmp")


@dataclass(frozen=True)
class DynamicSpec:
    """Dynamic sparsity beside IMP (lottery/dynamic, docs/dynamic.md): each method trains sparse from W_0 at each
    target density and seed; `<method>_rewound` retrains its final mask on W_k with the IMP protocol. Steps: step
    strings or percentages of training ('75%'). Defaults: RigL's paper and code (ΔT = 100, α = 0.3, cosine, stop
    at 75%, ERK); GMP from 20% to 75% of training, as google-research/rigl's CIFAR-10 pruning baseline."""

    methods: tuple[str, ...] = ()  # 'rigl', 'set', 'gmp', and '<method>_rewound' for a listed method
    densities: tuple[float, ...] = ()  # target densities of the pool (pruning.layers_to_ignore stay dense)
    update_every: str = "100it"  # rigl, set: ΔT
    drop_fraction: float = 0.3  # rigl, set: α
    drop_schedule: str = "cosine"  # rigl, set: 'cosine' (decays to 0 at stop) or 'constant'
    stop: str = "75%"  # rigl, set: the last step the mask may change
    distribution: str = "erk"  # layer densities: 'erk', 'uniform' or 'global'
    seeds: tuple[int, ...] = (0,)  # each method runs once per seed (its initial mask, SET's growth)
    start: str = "20%"  # gmp: pruning starts (t_0)
    end: str = "75%"  # gmp: the final density is reached
    every: str = "100it"  # gmp: Δt

    def kinds(self) -> list[str]:
        """Every kind of run the group asks for, in the spec's order."""
        return list(self.methods)

    def validate(self) -> DynamicSpec:
        from lottery.dynamic.steps import canonical as step  # (lazily: lottery.dynamic imports the pruning layer)

        for kind in self.methods:
            _one_of(kind, (*DYNAMIC_METHODS, *(f"{m}_rewound" for m in DYNAMIC_METHODS)), "dynamic.methods")
            if kind.endswith("_rewound") and kind[: -len("_rewound")] not in self.methods:
                raise UserError(f"dynamic.methods has {kind!r}: list {kind[: -len('_rewound')]!r} too (its mask)")
        if self.methods and not self.densities:
            raise UserError("dynamic.methods needs dynamic.densities (target densities, e.g. [0.2, 0.05])")
        for density in self.densities:
            if not 0 < density < 1:
                raise UserError(f"dynamic.densities must be in (0, 1), got {density}")
        if not 0 < self.drop_fraction < 1:
            raise UserError(f"dynamic.drop_fraction must be in (0, 1), got {self.drop_fraction}")
        _one_of(self.drop_schedule, ("cosine", "constant"), "dynamic.drop_schedule")
        _one_of(self.distribution, ("erk", "uniform", "global"), "dynamic.distribution")
        if not self.seeds:
            raise UserError("dynamic.seeds needs at least one seed")
        for seed in self.seeds:
            _seed(seed, "dynamic.seeds")
        steps = {
            name: step(getattr(self, name), f"dynamic.{name}")
            for name in ("update_every", "stop", "start", "end", "every")
        }
        for name in ("update_every", "every"):
            if steps[name] in ("0it", "0%"):
                raise UserError(f"dynamic.{name} must be at least 1 iteration")
        return DynamicSpec(
            **{
                **self.__dict__,
                **steps,
                "methods": tuple(dict.fromkeys(self.methods)),
                "densities": tuple(sorted(set(self.densities), reverse=True)),
                "seeds": tuple(dict.fromkeys(self.seeds)),
            }
        )


@dataclass(frozen=True)
class ExperimentSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    pruning: PruningSpec = field(default_factory=PruningSpec)
    imp: ImpSpec = field(default_factory=ImpSpec)
    controls: ControlsSpec = field(default_factory=ControlsSpec)
    stability: StabilitySpec = field(default_factory=StabilitySpec)
    masks: MasksSpec = field(default_factory=MasksSpec)
    dynamic: DynamicSpec = field(default_factory=DynamicSpec)
    replicates: int = 1

    def validate(self) -> ExperimentSpec:
        _positive(self.replicates, "replicates")
        _at_most(self.replicates, "replicates")
        for seed in ("init_seed", "data_order_seed", "augmentation_seed"):
            _seed(getattr(self.training, seed), f"training.{seed}", self.replicates - 1)
        for name in self.controls.levels or ():
            if name > self.imp.levels:
                raise UserError(f"controls.levels names level {name}, but imp.levels is {self.imp.levels}")
        for level in self.stability.levels or ():
            if level > self.imp.levels:
                raise UserError(f"stability.levels names level {level}, but imp.levels is {self.imp.levels}")
        for kind in self.stability.masks:
            if kind not in self.masks.kinds():
                runs = ", ".join(self.masks.kinds()) or "none: set masks.sources and masks.densities"
                raise UserError(f"stability.masks names {kind!r}, a kind [masks] does not run (it runs: {runs})")
        methods = [m for m in self.dynamic.methods if m in DYNAMIC_METHODS]
        for method in self.stability.dynamic:
            if method not in methods:
                allowed = ", ".join(methods) or "none: set dynamic.methods and dynamic.densities"
                raise UserError(
                    f"stability.dynamic names {method!r}, not a method dynamic.methods runs (allowed: {allowed})"
                )
        kinds = ["imp", "dense", *self.controls.kinds, *self.masks.kinds(), *self.dynamic.kinds()]
        twice = next((kind for kind in dict.fromkeys(kinds) if kinds.count(kind) > 1), None)
        if twice is not None and not extension_points.reading():  # (a stored spec is read as written)
            raise UserError(
                f"'{twice}' would name two kinds of runs of this experiment (of [controls], [masks] or [dynamic]): "
                "run them in two experiments"
            )
        return self


GROUPS = {
    "model": ModelSpec,
    "dataset": DatasetSpec,
    "training": TrainingSpec,
    "pruning": PruningSpec,
    "imp": ImpSpec,
    "controls": ControlsSpec,
    "stability": StabilitySpec,
    "masks": MasksSpec,
    "dynamic": DynamicSpec,
}
