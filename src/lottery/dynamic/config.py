"""The settings of one dynamic-sparsity run, validated and resolved to iterations (`Config.resolve`), and the one
function that computes an update from them (`next_mask`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from lottery.dynamic import steps
from lottery.dynamic.distribution import DISTRIBUTIONS
from lottery.dynamic.gmp import gmp_density, gmp_update, is_gmp_step
from lottery.dynamic.rigl import rigl_update
from lottery.dynamic.set import set_update
from lottery.dynamic.update import DROP_SCHEDULES, drop_fraction_at, is_update_step
from lottery.errors import UserError, unknown_name
from lottery.pruning.mask import Mask

METHODS = ("rigl", "set", "gmp")
DROP_GROW = ("rigl", "set")
DROP_GROW_OPTIONS = ("update_every", "drop_fraction", "drop_schedule", "stop")
GMP_OPTIONS = ("start", "end", "every")
# Defaults: RigL's paper and code (ΔT = 100, α = 0.3, cosine, stop 75%); GMP: google-research/rigl's CIFAR-10
# pruning baseline (rigl/cifar_resnet/resnet_train_eval.py: begin 20000, end 75000 of 97656 steps, every 1000),
# as fractions of training, every 100 (Zhu & Gupta use Δt of 100 to 1000 steps).
DEFAULTS: dict[str, Any] = {
    "update_every": 100,
    "drop_fraction": 0.3,
    "drop_schedule": "cosine",
    "stop": "75%",
    "distribution": "erk",
    "seed": 0,
    "start": "20%",
    "end": "75%",
    "every": 100,
}


@dataclass(frozen=True)
class Config:
    """One run's settings in iterations (see `resolve`)."""

    method: str
    density: float
    total_steps: int
    distribution: str
    seed: int
    update_every: int = 0  # rigl, set
    drop_fraction: float = 0.0
    drop_schedule: str = "cosine"
    stop: int = 0
    start: int = 0  # gmp
    end: int = 0
    every: int = 0

    @classmethod
    def resolve(
        cls,
        method: str,
        density: float,
        total_steps: int,
        options: Mapping[str, Any],
        steps_per_epoch: int | None = None,
        strict: bool = True,
    ) -> Config:
        """Validate `options` (the `[dynamic]` group's names) and turn their steps into iterations. `strict`: an
        option that does not apply to `method` is an error (the Python API); else it is ignored (the spec group,
        whose options serve several methods)."""
        if method not in METHODS:
            raise unknown_name("dynamic sparsity method", str(method), METHODS)
        unknown = [key for key in options if key not in DEFAULTS]
        if unknown:
            raise UserError(f"dynamic: unknown option '{unknown[0]}' (allowed: {', '.join(DEFAULTS)})")
        foreign = GMP_OPTIONS if method in DROP_GROW else DROP_GROW_OPTIONS
        if strict and any(key in options for key in foreign):
            key = next(key for key in options if key in foreign)
            applies = "gmp" if key in GMP_OPTIONS else "rigl and set"
            raise UserError(f"dynamic: option '{key}' applies to {applies}, not {method}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise UserError(f"dynamic: total_steps must be a whole number of iterations >= 1, got {total_steps!r}")
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density < 1:
            raise UserError(f"dynamic: density must be a number in (0, 1), got {density!r}")
        o = {**DEFAULTS, **options}
        if o["distribution"] not in DISTRIBUTIONS:
            raise unknown_name("dynamic distribution", str(o["distribution"]), DISTRIBUTIONS)
        seed = o["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise UserError(f"dynamic: seed must be a whole number in [0, 2**63), got {seed!r}")
        config = cls(method, float(density), total_steps, o["distribution"], seed)

        def at(key: str) -> int:
            interval = key in ("update_every", "every")
            return steps.to_iterations(o[key], total_steps, f"dynamic.{key}", steps_per_epoch, interval)

        if method in DROP_GROW:
            fraction = o["drop_fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
                raise UserError(f"dynamic: drop_fraction must be a number in (0, 1), got {fraction!r}")
            if o["drop_schedule"] not in DROP_SCHEDULES:
                raise unknown_name("dynamic drop_schedule", str(o["drop_schedule"]), DROP_SCHEDULES)
            every = at("update_every")
            if every < 1:
                raise UserError("dynamic: update_every must be at least 1 iteration")
            return config.replace(
                update_every=every, drop_fraction=float(fraction), drop_schedule=o["drop_schedule"], stop=at("stop")
            )
        start, end, every = at("start"), at("end"), at("every")
        if every < 1:
            raise UserError("dynamic: every must be at least 1 iteration")
        if end <= start:
            raise UserError(
                f"dynamic: end ({o['end']!r}: iteration {end}) must come after start ({o['start']!r}: {start})"
            )
        return config.replace(start=start, end=end, every=every)

    def replace(self, **changes: Any) -> Config:
        return Config(**{**asdict(self), **changes})

    def is_update_step(self, step: int) -> bool:
        """Whether the mask changes before optimizer step `step` (0-based)."""
        if self.method == "gmp":
            return is_gmp_step(step, self.start, self.end, self.every)
        return is_update_step(step, self.update_every, self.stop)

    def target_density(self, step: int) -> float:
        """The pool's density during optimizer step `step` (GMP: its schedule; the others: constant)."""
        if self.method != "gmp":
            return self.density
        if step >= self.end:
            return self.density
        last = self.start + max(0, step - self.start) // self.every * self.every  # the last update at or before step
        return gmp_density(last, self.density, self.start, self.end)


def next_mask(
    config: Config, weights: Mapping[str, Tensor], grads: Mapping[str, Tensor | None], mask: Mask, step: int
) -> tuple[Mask, dict[str, float]]:
    """The mask after the update before optimizer step `step`, and what the update used (`drop_fraction` or
    `target_density`): a pure function of the weights, the dense gradients, the config (seed included) and the step."""
    if config.method == "gmp":
        density = gmp_density(step, config.density, config.start, config.end)
        return gmp_update(weights, mask, density, config.distribution), {"target_density": density}
    fraction = drop_fraction_at(step, config.drop_fraction, config.drop_schedule, config.stop)
    if config.method == "rigl":
        return rigl_update(weights, grads, mask, fraction), {"drop_fraction": fraction}
    return set_update(weights, mask, fraction, config.seed, step), {"drop_fraction": fraction}
