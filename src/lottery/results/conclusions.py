"""The conclusions the engine states, each with its uncertainty over the independent units: whether a network is
stable at (k, level), and whether a subnetwork is matching. One module, used by results.json, the tables, the
report and the rewind search.

The unit. Replicates (independent seeds: init, data order, the IMP chain) are independent of each other; the pairs
of copies within a replicate are not (they share W_k, the mask, and each copy sits in several pairs). So:

- with R >= 2 replicates the unit is the replicate: its value is the mean over its pairs (barrier) or copies
  (accuracy), and the interval is Student's t over the R replicate values (mean +- t_{R-1} * sd / sqrt(R)). More
  copies shrink the noise of each replicate's value, more replicates the interval's width;
- with one replicate the conclusion can only be about that replicate's W_k (and mask): the unit is the copy (the
  copies are independent given W_k). The barrier's interval is a jackknife over copies (leave one copy out, drop
  its pairs; needs 3 copies), the accuracy's Student's t over the copies. `unit` says which ("replicate" or
  "copy"); one replicate with 2 copies (one pair) has no interval.

Three outcomes, never a verdict the interval does not carry: `stable` when the whole interval lies below the
threshold, `unstable` when it lies at or above it, `undecided` otherwise (also with no interval); likewise
`matching` / `not_matching` / `undecided` for the gap to dense against -tolerance. A diverged copy makes the
point `unstable` (its barrier is undefined: the copies did not train).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from typing import Any

CONFIDENCE = 0.95  # the intervals' coverage
TOLERANCE = 0.2  # percentage points: "matching" = within this of dense (the papers' margin)
STABLE, UNSTABLE, UNDECIDED = "stable", "unstable", "undecided"
MATCHING, NOT_MATCHING = "matching", "not_matching"


def _t_coverage(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4, exact finite sums)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= c2 * (2 * i - 1) / (2 * i)
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    term, total = 1.0, 1.0
    for i in range(1, (df - 1) // 2):
        term *= c2 * (2 * i) / (2 * i + 1)
        total += term
    return 2 / math.pi * (theta + s * math.cos(theta) * total)


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student's t critical value: P(|T| < t) = confidence (4.303 for 0.95 and df = 2)."""
    if df < 1 or not 0 < confidence < 1:
        raise ValueError(f"need df >= 1 and 0 < confidence < 1, got df={df}, confidence={confidence}")
    lo, hi = 0.0, 1.0
    while _t_coverage(hi, df) < confidence:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_coverage(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """mean +- t_{n-1} * sd / sqrt(n) over independent values; None with fewer than 2."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(confidence, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return [mean - half, mean + half]


def copies_of(pairs: int) -> int | None:
    """The number of copies c whose pairs (c (c - 1) / 2 of them) number `pairs`; None if none does."""
    c = round((1 + math.sqrt(1 + 8 * pairs)) / 2)
    return c if c * (c - 1) // 2 == pairs else None


def jackknife_pairs(barriers: list[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """The interval of the mean over all pairs of c copies (in itertools.combinations order, as the analysis
    writes them) from a leave-one-copy-out jackknife: se^2 = (c - 1) / c * sum_l (B_-l - mean_l B_-l)^2, with
    t_{c-1}. None with fewer than 3 copies."""
    c = copies_of(len(barriers))
    if c is None or c < 3:
        return None
    pairs = list(itertools.combinations(range(c), 2))
    leave_out = [statistics.fmean(b for (i, j), b in zip(pairs, barriers) if out not in (i, j)) for out in range(c)]
    center = statistics.fmean(leave_out)
    se = math.sqrt((c - 1) / c * sum((v - center) ** 2 for v in leave_out))
    mean = statistics.fmean(barriers)
    half = t_quantile(confidence, c - 1) * se
    return [mean - half, mean + half]


def barrier_estimate(barriers: list[list[float]], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean and interval of the barrier from each replicate's pair barriers (see the module docstring)."""
    barriers = [list(b) for b in barriers if b]
    if not barriers:
        return {"barrier_mean": None, "barrier_interval": None, "unit": None, "n": 0}
    if len(barriers) >= 2:
        means = [statistics.fmean(b) for b in barriers]
        return {
            "barrier_mean": statistics.fmean(means),
            "barrier_interval": t_interval(means, confidence),
            "unit": "replicate",
            "n": len(means),
        }
    only = barriers[0]
    return {
        "barrier_mean": statistics.fmean(only),
        "barrier_interval": jackknife_pairs(only, confidence),
        "unit": "copy",
        "n": copies_of(len(only)),
    }


def decide(interval: list[float] | None, boundary: float, below: str, above: str) -> str:
    """`below` when the whole interval lies below `boundary`, `above` when it lies at or above it, else undecided."""
    if interval is None:
        return UNDECIDED
    if interval[1] < boundary:
        return below
    if interval[0] >= boundary:
        return above
    return UNDECIDED


def stability_decision(
    points: list[dict[str, Any]], threshold: float, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """THE stability decision of one subject (kind) at one (k, level): `points` are its analysis records, one per
    replicate (stability.collect's entries or analysis.json's points). Returns `decision` (stable / unstable /
    undecided), `barrier_mean` and `barrier_interval` (test error barrier, percentage points), `unit`, `n` (units),
    `pairs` (each replicate's pair barriers), `threshold`, `confidence`, `diverged`."""
    common = {"threshold": threshold, "confidence": confidence}
    if any(p.get("diverged") for p in points):
        return {
            "decision": UNSTABLE,
            "barrier_mean": None,
            "barrier_interval": None,
            "unit": None,
            "n": len(points),
            "pairs": [],
            **common,
            "diverged": True,
        }
    pairs = [[pair["barrier_test"] for pair in p["data_order"]["pairs"]] for p in points]
    estimate = barrier_estimate(pairs, confidence)
    decision = decide(estimate["barrier_interval"], threshold, STABLE, UNSTABLE)
    return {"decision": decision, **estimate, "pairs": pairs, **common, "diverged": False}


def matching_decision(
    gaps: list[list[float]], tolerance: float = TOLERANCE, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Whether a subnetwork is matching: `gaps` are, per replicate, its runs' (or copies') test accuracy minus that
    replicate's dense accuracy, in points. With R >= 2 the unit is the replicate (its mean gap), with one
    replicate the run/copy. `matching` when the whole interval lies at or above -tolerance, `not_matching` when
    below it, else `undecided`. Returns decision, gap_mean, gap_interval, unit, n, tolerance, confidence."""
    gaps = [list(g) for g in gaps if g]
    if len(gaps) >= 2:
        values, unit = [statistics.fmean(g) for g in gaps], "replicate"
    else:
        values, unit = (gaps[0] if gaps else []), "copy"
    interval = t_interval(values, confidence)
    decision = decide(interval, -tolerance, NOT_MATCHING, MATCHING)
    return {
        "decision": decision,
        "gap_mean": statistics.fmean(values) if values else None,
        "gap_interval": interval,
        "unit": unit if values else None,
        "n": len(values),
        "tolerance": tolerance,
        "confidence": confidence,
    }


def stability_decisions(points: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """The decision of every analysed subject: points (stability.collect) grouped by (k, level, kind, target
    density) over replicates."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        groups[(p["rewind_iteration"], p["level"], p["kind"], p.get("target_density"))].append(p)
    out = []
    for (k, level, kind, target), members in groups.items():
        keys = {"rewind_iteration": k, "level": level, "kind": kind}
        if target is not None:
            keys["target_density"] = target
        density = [m["density"] for m in members if m.get("density") is not None]
        keys["density"] = statistics.fmean(density) if density else None
        out.append({**keys, "replicates": len(members), **stability_decision(members, threshold)})
    return out


def label(decision: dict[str, Any] | None, value: str = "barrier", scale: float = 1.0) -> str:
    """'stable 0.42 [0.10, 0.74]': the decision with its mean and interval, for tables."""
    if decision is None:
        return "-"
    mean, interval = decision.get(f"{value}_mean"), decision.get(f"{value}_interval")
    if mean is None:
        return decision["decision"]
    text = f"{decision['decision']} {scale * mean:.2f}"
    return text + ("" if interval is None else f" [{scale * interval[0]:.2f}, {scale * interval[1]:.2f}]")
