"""Steps of a dynamic-sparsity schedule: a whole number of iterations, a step string ('500it', '2ep') or a
percentage of training ('75%')."""

from __future__ import annotations

import re
from fractions import Fraction

from lottery.errors import UserError
from lottery.spec.steps import Step

_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%$")
ALLOWED = "a whole number of iterations, a step string like '500it' or '2ep', or a percentage of training like '75%'"


def canonical(value: object, field: str) -> str:
    """The canonical spelling of a schedule step: '75%' as it is (digits normalised), else `Step`'s."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return f"{_percent(value, field)}%"
    return str(Step.parse(value, field))


def _percent(text: str, field: str) -> str:
    match = _PERCENT.match(text.strip())
    if match is None:
        raise UserError(f"{field}: malformed step {text!r}; expected {ALLOWED}")
    value = Fraction(match.group(1))
    if value > 100:
        raise UserError(f"{field}: {text!r} is more than 100% of training")
    return format(float(value), "g") if value.denominator != 1 else str(value.numerator)


def to_iterations(
    value: object, total_steps: int, field: str, steps_per_epoch: int | None = None, interval: bool = False
) -> int:
    """The iteration a schedule step names, in [0, total_steps] (an `interval` may be longer): a percentage is
    floor(p / 100 * total_steps)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return int(Fraction(_percent(value, field)) * total_steps // 100)
    step = Step.parse(value, field)
    if step.epochs and steps_per_epoch is None:
        raise UserError(f"{field}: {value!r} counts epochs; pass steps_per_epoch=, or give iterations ('500it')")
    iterations = step.to_iterations(steps_per_epoch or 0)
    if iterations > total_steps and not interval:
        raise UserError(f"{field} = {value!r} is iteration {iterations}, after the end of training ({total_steps})")
    return iterations
