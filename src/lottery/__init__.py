"""lottery: find and study lottery tickets (IMP with rewinding, stability, linear mode connectivity).

The public Python API, for any `nn.Module` and any training loop (see docs/api.md):
"""

from lottery.pruning import Mask, prunable
from lottery.pruning.sources import mask_from_scores, scores

__version__ = "0.1.0"

__all__ = ["Mask", "__version__", "mask_from_scores", "prunable", "scores"]
