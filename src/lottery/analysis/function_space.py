"""Function-space comparisons of two trained networks, and the overlap of two masks.

- disagreement: the fraction of examples on which the two networks' predicted classes differ;
- mean KL: the symmetrised Kullback-Leibler divergence ½(KL(p‖q) + KL(q‖p)) between their predicted class
  distributions, averaged over the examples (nats); symmetrised so that a pair's value does not depend on
  which copy is listed first;
- Jaccard: |A ∩ B| / |A ∪ B| of the coordinates two masks keep.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lottery.pruning import Mask
from lottery.training.evaluate import Batched

EVAL_BATCH = 1000


@torch.no_grad()
def log_probabilities(model: nn.Module, x: Tensor | Batched, batch_size: int = EVAL_BATCH) -> Tensor:
    """log softmax of the model's outputs on `x` (eval mode; float64, on the CPU), one row per example in order;
    `x` is a tensor, or examples streamed in batches (an image folder's, in their own batch size). The model's
    mode is restored."""
    was_training = model.training
    model.eval()
    if isinstance(x, Tensor):
        inputs = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    else:
        inputs = (batch for batch, _ in x.batches())
    out = [torch.log_softmax(model(batch).double(), dim=1).cpu() for batch in inputs]
    model.train(was_training)
    return torch.cat(out)


def disagreement(log_p: Tensor, log_q: Tensor) -> float:
    """Fraction of examples (rows) whose most probable class differs."""
    return float((log_p.argmax(1) != log_q.argmax(1)).double().mean())


def mean_kl(log_p: Tensor, log_q: Tensor) -> float:
    """½(KL(p‖q) + KL(q‖p)) per example, averaged over the examples, in nats."""
    p, q = log_p.exp(), log_q.exp()
    per_example = 0.5 * ((p * (log_p - log_q)).sum(1) + (q * (log_q - log_p)).sum(1))
    return float(per_example.mean())


def jaccard(a: Mask, b: Mask) -> float:
    """|A ∩ B| / |A ∪ B| of the kept coordinates of two masks over the same parameters (1.0 when both keep none)."""
    if a.keys() != b.keys():
        raise ValueError("the masks cover different parameters")
    both = sum(int((a[n].cpu() & b[n].cpu()).sum()) for n in a)
    either = sum(int((a[n].cpu() | b[n].cpu()).sum()) for n in a)
    return both / either if either else 1.0
