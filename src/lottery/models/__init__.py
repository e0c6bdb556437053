"""Networks, one module per family; each registers the names it builds."""

from lottery.models import lenet  # noqa: F401  (registers its family)
from lottery.models.base import Network
from lottery.models.registry import build, names, register

__all__ = ["Network", "build", "names", "register"]
