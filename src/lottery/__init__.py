"""lottery: find and study lottery tickets (IMP with rewinding, stability, linear mode connectivity).

The public Python API, for any `nn.Module` and any training loop (see docs/api.md):
"""

from lottery.export import export_ticket, load_ticket
from lottery.pruning import Mask, prunable

__version__ = "0.1.0"

__all__ = ["Mask", "__version__", "export_ticket", "load_ticket", "prunable"]
