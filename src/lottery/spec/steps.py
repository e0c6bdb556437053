"""Step strings: '50000it', '160ep', '2ep100it'. Converted to iterations once the epoch length is known."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lottery.errors import UserError

_STEP = re.compile(r"^(?:([0-9]+)ep)?(?:([0-9]+)it)?$")  # ASCII digits only
ALLOWED = "a step string like '500it', '160ep' or '2ep100it' (or a whole number of iterations)"


@dataclass(frozen=True)
class Step:
    epochs: int = 0
    iterations: int = 0

    @classmethod
    def parse(cls, text: object, field: str = "step") -> Step:
        if isinstance(text, bool):
            raise UserError(f"{field}: expected {ALLOWED}, got {text!r}")
        if isinstance(text, int):
            if text < 0:
                raise UserError(f"{field}: steps cannot be negative, got {text}")
            return cls(0, text)
        if not isinstance(text, str):
            raise UserError(f"{field}: expected {ALLOWED}, got {text!r}")
        match = _STEP.match(text.strip())
        if not text.strip() or match is None:
            raise UserError(f"{field}: malformed step {text!r}; expected {ALLOWED}")
        try:
            return cls(int(match.group(1) or 0), int(match.group(2) or 0))
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            raise UserError(f"{field}: step {text[:40]!r}... is too large; expected {ALLOWED}") from None

    def to_iterations(self, iterations_per_epoch: int) -> int:
        return self.epochs * iterations_per_epoch + self.iterations

    def __str__(self) -> str:
        if self.epochs and self.iterations:
            return f"{self.epochs}ep{self.iterations}it"
        if self.epochs:
            return f"{self.epochs}ep"
        return f"{self.iterations}it"


def canonical(text: object, field: str = "step") -> str:
    """The canonical spelling of a step ('0500it' -> '500it', 7 -> '7it')."""
    return str(Step.parse(text, field))
