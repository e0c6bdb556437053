"""Early-bird tickets (You et al., "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep
Networks", ICLR 2020, §3.2): the mask a pruning method would choose at successive points of the dense run
settles early; the normalised Hamming distance between masks tells when.

The rule. You et al. draw the ticket online, during training: they keep the last five masks (a FIFO queue, one
per epoch in their code) and draw it at the first point where the newest mask's distance to each of the previous
four is below the threshold (`rule="online"`, `WINDOW` = 5, the default: `masks.early_bird_rule`). The
`"hindsight"` rule, kept as an option, needs the whole trace: the first point after which every distance
between successive masks stays below the threshold (it can only be told after training).

The normalisation. You et al. divide the Hamming distance by the number of mask entries considered (their code:
`1 - sum(m_i == m_j) / len(m_j)` over every channel). At density d two masks then differ in at most 2d of the
entries, so a fixed threshold means something else at every density: at 5% remaining even two unrelated random
masks lie within 0.1. Here the distance is normalised by the weights kept, |a ⊕ b| / (|a| + |b|): for masks of
equal counts, the fraction of the kept weights that changed (0: identical, 1: no kept weight in common; two random
masks of density d: about 1 − d), so `masks.early_bird_threshold` means the same at every density. The
paper's normalisation is available as `normalise="considered"`."""

from __future__ import annotations

from lottery.pruning.mask import Mask

NORMALISATIONS = ("kept", "considered")
TRACE_NORMALISATION = "kept"  # the early-bird trace's (and the replicates' IMP mask distance's) normalisation
RULES = ("online", "hindsight")
DEFAULT_RULE = "online"  # You et al.'s
WINDOW = 5  # You et al.'s queue: the newest mask against the previous four


def mask_distance(a: Mask, b: Mask, normalise: str = "kept") -> float:
    """Normalised Hamming distance between two masks over the same layers: the number of coordinates where they
    differ divided by the weights kept by both together, |a| + |b| (`normalise="kept"`, the default: the fraction
    of the kept weights that changed where the counts are equal; 1 when no kept weight is shared), or by the
    number of coordinates considered (`"considered"`, You et al. §3.2's normalisation: at most 2 × density).
    0 when both keep nothing (or the masks are empty)."""
    if a.keys() != b.keys():
        raise ValueError("masks over different layers cannot be compared")
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    differ = sum(int((a[n].cpu() != b[n].cpu()).sum()) for n in a)
    total = a.kept() + b.kept() if normalise == "kept" else sum(m.numel() for m in a.values())
    return differ / total if total else 0.0


def random_expectation(density_a: float, density_b: float, normalise: str = "kept") -> float:
    """The expected `mask_distance` between two independent uniformly random masks of these densities (a coordinate
    differs with probability d_a + d_b − 2·d_a·d_b; `"kept"` divides by d_a + d_b)."""
    differ = density_a + density_b - 2 * density_a * density_b
    if normalise == "considered":
        return differ
    return differ / (density_a + density_b) if density_a + density_b else 0.0


def online_drawn_at(iterations: list[int], recent: list[list[float] | None], threshold: float) -> int | None:
    """You et al.'s online rule: the first iteration t_i where `recent[i]` (the distances of the mask at t_i to each
    of the previous WINDOW - 1 masks, newest first; None until there are that many) are all below `threshold`.
    None: never drawn."""
    for t, distances in zip(iterations, recent, strict=True):
        if distances is not None and len(distances) >= WINDOW - 1 and max(distances) < threshold:
            return t
    return None


def drawn_at(
    rule: str,
    iterations: list[int],
    successive: list[float | None],
    recent: list[list[float] | None],
    threshold: float,
) -> int | None:
    """Where the ticket is drawn under `rule` ("online": `online_drawn_at` on `recent`; "hindsight": `settled_at`
    on the `successive` distances)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule == "online":
        return online_drawn_at(iterations, recent, threshold)
    return settled_at(iterations, successive, threshold)


def settled_at(iterations: list[int], distances: list[float | None], threshold: float) -> int | None:
    """The hindsight rule: the first iteration t_i from which every distance d(m_{t_{j-1}}, m_{t_j}), j >= i, is
    below `threshold` (`distances[i]` belongs to `iterations[i]`; `distances[0]` is None: nothing before it).
    None: not settled."""
    settled = None
    for t, d in zip(iterations, distances, strict=True):
        if d is None:
            continue
        if d < threshold:
            settled = t if settled is None else settled
        else:
            settled = None
    return settled
