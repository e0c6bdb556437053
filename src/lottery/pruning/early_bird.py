"""Early-bird tickets (You et al., "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep
Networks", ICLR 2020, §3.2): the mask a pruning method would choose at successive points of the dense run
settles early; the normalised Hamming distance between successive masks tells when."""

from __future__ import annotations

from lottery.pruning.mask import Mask


def mask_distance(a: Mask, b: Mask) -> float:
    """Normalised Hamming distance: the fraction of the masked coordinates where `a` and `b` differ (You et
    al. §3.2; 0 = identical, 1 = complementary)."""
    if a.keys() != b.keys():
        raise ValueError("masks over different layers cannot be compared")
    total = sum(m.numel() for m in a.values())
    differ = sum(int((a[n].cpu() != b[n].cpu()).sum()) for n in a)
    return differ / total if total else 0.0


def settled_at(iterations: list[int], distances: list[float | None], threshold: float) -> int | None:
    """The first iteration t_i from which every distance d(m_{t_{j-1}}, m_{t_j}), j >= i, is below `threshold`
    (`distances[i]` belongs to `iterations[i]`; `distances[0]` is None: nothing before it). None: not settled."""
    settled = None
    for t, d in zip(iterations, distances, strict=True):
        if d is None:
            continue
        if d < threshold:
            settled = t if settled is None else settled
        else:
            settled = None
    return settled
