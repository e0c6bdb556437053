"""Conclusions with their uncertainty, on hand-computed cases: the stability and matching decisions
(results/conclusions.py), the cluster bootstrap and the partial Spearman of the predictors, the rewind search's
check of monotonicity and its extra copies, and You et al.'s online early-bird rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.experiments.predictors import cluster_bootstrap, correlate, partial_spearman, spearman
from lottery.experiments.rewind_search import bracket_search, check, escalate, k_interval
from lottery.pruning.early_bird import drawn_at, online_drawn_at, settled_at
from lottery.results import conclusions
from lottery.results.conclusions import (
    barrier_estimate,
    jackknife_pairs,
    matching_decision,
    stability_decision,
    t_interval,
    t_quantile,
)


def test_t_quantiles_match_the_tables() -> None:
    for df, value in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert t_quantile(0.95, df) == pytest.approx(value, abs=1e-4)
    assert t_quantile(0.90, 5) == pytest.approx(2.0150, abs=1e-4)


def _points(barriers: list[list[float]]) -> list[dict]:
    return [{"diverged": False, "data_order": {"pairs": [{"barrier_test": b} for b in pairs]}} for pairs in barriers]


def test_stability_decision_over_replicates_by_hand() -> None:
    # Replicate means 1.1, 0.9, 1.0: mean 1.0, sd 0.1, se 0.1/sqrt(3); t_2 = 4.3027 -> half width 0.24841.
    d = stability_decision(_points([[1.0, 1.2], [0.8, 1.0], [1.1, 0.9]]), threshold=2.0)
    assert d["unit"] == "replicate" and d["n"] == 3 and d["barrier_mean"] == pytest.approx(1.0)
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert d["barrier_interval"] == pytest.approx([1.0 - half, 1.0 + half], abs=1e-5)
    assert d["decision"] == "stable" and d["pairs"] == [[1.0, 1.2], [0.8, 1.0], [1.1, 0.9]]
    assert stability_decision(_points([[1.0, 1.2], [0.8, 1.0], [1.1, 0.9]]), threshold=0.5)["decision"] == "unstable"
    assert stability_decision(_points([[1.0, 1.2], [0.8, 1.0], [1.1, 0.9]]), threshold=1.1)["decision"] == "undecided"
    # Every pair below the threshold, yet two replicates far apart: the mean is 1.5, the interval [-4.9, 7.9].
    wide = stability_decision(_points([[1.0, 1.0], [1.99, 1.99]]), threshold=2.0)
    assert wide["decision"] == "undecided" and wide["barrier_interval"][1] > 2.0
    diverged = stability_decision([{"diverged": True}], threshold=2.0)
    assert diverged["decision"] == "unstable" and diverged["diverged"]


def test_one_replicate_uses_a_jackknife_over_copies() -> None:
    # 3 copies: pairs (0,1) = 1, (0,2) = 2, (1,2) = 3. Leaving copy 0, 1, 2 out leaves the pair 3, 2, 1: their mean is
    # 2, se^2 = 2/3 * (1 + 0 + 1) = 4/3; t_2 = 4.3027 -> 2 +- 4.9683.
    lo, hi = jackknife_pairs([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((2 - 4.302653 * math.sqrt(4 / 3), 2 + 4.302653 * math.sqrt(4 / 3)), abs=1e-5)
    one = barrier_estimate([[1.0, 2.0, 3.0]])
    assert one["unit"] == "copy" and one["n"] == 3 and one["barrier_mean"] == 2.0
    assert jackknife_pairs([0.4]) is None  # 2 copies, one pair: no interval
    assert stability_decision(_points([[0.4]]), threshold=2.0)["decision"] == "undecided"
    assert stability_decision(_points([[0.0, 0.0, 0.0]]), threshold=0.1)["decision"] == "stable"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=8), st.floats(-3, 3))
def test_t_interval_is_centred_and_shifts_with_the_data(values: list[float], shift: float) -> None:
    lo, hi = t_interval(values)
    mean = sum(values) / len(values)
    assert lo <= mean + 1e-9 and mean - 1e-9 <= hi and (lo + hi) / 2 == pytest.approx(mean, abs=1e-9)
    lo2, hi2 = t_interval([v + shift for v in values])
    assert lo2 == pytest.approx(lo + shift, abs=1e-6) and hi2 == pytest.approx(hi + shift, abs=1e-6)


def test_matching_decision_by_hand() -> None:
    # Gaps to dense per replicate: +0.5, +0.3, +0.4 (means of the runs): mean 0.4, sd 0.1 -> [0.152, 0.648].
    d = matching_decision([[0.5], [0.2, 0.4], [0.4]], tolerance=0.2)
    assert d["unit"] == "replicate" and d["gap_mean"] == pytest.approx(0.4) and d["decision"] == "matching"
    assert d["gap_interval"][0] == pytest.approx(0.4 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-5)
    assert matching_decision([[-1.0], [-1.2], [-1.1]])["decision"] == "not_matching"
    assert matching_decision([[0.5], [-0.9]])["decision"] == "undecided"
    assert matching_decision([[0.1]])["decision"] == "undecided"  # one replicate, one run: no interval
    copies = matching_decision([[0.3, 0.5, 0.4]])
    assert copies["unit"] == "copy" and copies["decision"] == "matching"


def test_decisions_per_subject_group_over_replicates() -> None:
    points = [
        {"replicate": r, "rewind_iteration": 0, "level": 1, "kind": kind, "density": 0.5, **_points([b])[0]}
        for r, (imp_b, control_b) in enumerate([([0.1, 0.2], [5.0, 6.0]), ([0.2, 0.1], [6.0, 5.5])])
        for kind, b in (("imp", imp_b), ("random_prune", control_b))
    ]
    found = {d["kind"]: d for d in conclusions.stability_decisions(points, threshold=2.0)}
    assert found["imp"]["decision"] == "stable" and found["imp"]["replicates"] == 2
    assert found["random_prune"]["decision"] == "unstable"
    assert conclusions.label(found["imp"]).startswith("stable 0.15 [")


def test_cluster_bootstrap_keeps_each_replicate_whole() -> None:
    # Three replicates of two rows each, x = 0, 1, 2 within them. A cluster resample draws 3 replicates: the mean of
    # x is S/3 with S the sum of 3 draws from {0, 1, 2}: P(S=0..6) = (1, 3, 6, 7, 6, 3, 1)/27, CDF 0.037, 0.148,
    # 0.370, 0.630, 0.852, 0.963, 1. Its 10% and 90% quantiles are S = 1 and 5, its 25% and 75% S = 2 and 4 (each
    # several standard errors of 1000 resamples away from a jump of the CDF).
    clusters = ["a", "a", "b", "b", "c", "c"]
    x = [0, 0, 1, 1, 2, 2]

    def whole_mean(values: np.ndarray) -> float:
        counts = np.unique(values, return_counts=True)[1]
        assert (counts % 2 == 0).all()  # rows of a replicate are drawn together
        return float(values.mean())

    assert cluster_bootstrap(whole_mean, clusters, [x], seed=1, level=0.8) == pytest.approx([1 / 3, 5 / 3])
    assert cluster_bootstrap(whole_mean, clusters, [x], seed=1, level=0.5) == pytest.approx([2 / 3, 4 / 3])
    assert cluster_bootstrap(whole_mean, ["a"] * 6, [x]) is None  # one replicate: no interval


def test_partial_spearman_against_a_worked_example() -> None:
    # z = 1..5; x ranks (1, 2, 3, 5, 4): r_xz = 1 - 6*2/120 = 0.9; y ranks (2, 1, 3, 4, 5): r_yz = 0.9;
    # x vs y: d = (-1, 1, 0, 1, -1), r_xy = 1 - 6*4/120 = 0.8. Partial: (0.8 - 0.81) / (1 - 0.81) = -1/19.
    x, y, z = [1, 2, 3, 5, 4], [2, 1, 3, 4, 5], [1, 2, 3, 4, 5]
    assert spearman(x, z) == pytest.approx(0.9) and spearman(x, y) == pytest.approx(0.8)
    assert partial_spearman(x, y, z) == pytest.approx(-1 / 19)
    assert partial_spearman(x, y, x) is None  # x is its own control: undefined


def test_predictor_table_has_partial_rho_clusters_and_ranks_within_equal_n() -> None:
    rows = []
    for r in range(3):
        for i, density in enumerate([0.8, 0.6, 0.4, 0.2]):
            gap = 1.0 + i + 0.1 * r
            measures = {"data_order.barrier_test": gap + (0.3 if i % 2 else -0.3), "data_order.l2": density}
            if r < 2:
                measures["pruning.l2"] = gap
            rows.append({"replicate": r, "density": density, "accuracy_gap": gap, "measures": measures})
    table = correlate(rows, resamples=100)
    by_name = {t["measure"]: t for t in table}
    assert by_name["data_order.barrier_test"]["n"] == 12 and by_name["data_order.barrier_test"]["clusters"] == 3
    assert by_name["pruning.l2"]["n"] == 8 and by_name["pruning.l2"]["clusters"] == 2
    assert by_name["data_order.l2"]["spearman"] < -0.9 and by_name["data_order.l2"]["partial_spearman"] is None
    assert by_name["data_order.barrier_test"]["interval"] is not None
    ns = [t["n"] for t in table]
    assert ns == sorted(ns, reverse=True)  # measures over more observations first, never interleaved


def test_search_reports_a_non_monotone_dip() -> None:
    # Stable from 20, except an unstable dip at 80. Binary search: 0 (unstable), 160 (stable), 20 (stable),
    # 10 (unstable): k = 20. The check probes 40 and 80 and finds 80 unstable.
    profile = {0: "unstable", 10: "unstable", 20: "stable", 40: "stable", 80: "unstable", 160: "stable"}
    grid = sorted(profile)
    probed: dict[int, str] = {}

    def decide(k: int) -> str:
        probed[k] = profile[k]
        return profile[k]

    k, bracket, complete = bracket_search(lambda k: decide(k) == "stable", grid, refine=0)
    assert (k, bracket, complete) == (20, [10, 20], True)
    checked = check(decide, grid, k, dict(probed))
    assert checked["monotone"] is False and checked["offending"] == [80]
    assert checked["interval"] == [80, 160]  # stability holds from 160 on as far as the probes tell
    smooth = {**profile, 80: "stable"}
    ok = check(lambda j: smooth[j], grid, 20, {0: "unstable", 10: "unstable", 20: "stable", 160: "stable"})
    assert ok["monotone"] is True and ok["offending"] == [] and ok["interval"] == [10, 20]


def test_undecided_probes_widen_the_interval_for_k() -> None:
    assert k_interval({0: "unstable", 10: "undecided", 20: "stable", 40: "stable"}) == [0, 20]
    assert k_interval({0: "unstable", 10: "stable", 20: "undecided", 40: "stable"}) == [0, 40]
    assert k_interval({0: "stable"}) == [None, 0] and k_interval({0: "unstable"}) == [0, None]


def test_an_undecided_probe_gets_more_copies() -> None:
    # One replicate. Copy i's pairs with the earlier copies have barrier 0.5 + 0.1 * (i + j) / 2 (pairs in
    # itertools.combinations order): with 2 copies one pair (no interval: undecided); with 3 the jackknife interval
    # [0.15, 1.15] lies below 2: stable.
    calls = []

    def measure(copies: int) -> dict:
        calls.append(copies)
        pairs = [0.5 + 0.05 * (i + j) for i in range(copies) for j in range(i + 1, copies)]
        return {"copies": copies, **stability_decision(_points([pairs]), threshold=2.0)}

    record = escalate(measure, base=2, max_copies=6, affordable=lambda c: True)
    assert calls == [2, 3] and record["copies"] == 3 and record["decision"] == "stable"
    calls.clear()
    capped = escalate(measure, base=2, max_copies=6, affordable=lambda c: c <= 2)  # the budget allows no more
    assert calls == [2] and capped["decision"] == "undecided"

    def noisy(copies: int) -> dict:
        calls.append(copies)
        pairs = [0.5, 3.9, 1.2, 3.1, 0.2, 3.6][: copies * (copies - 1) // 2]  # around the threshold, widely spread
        return {"copies": copies, **stability_decision(_points([pairs]), threshold=2.0)}

    calls.clear()
    assert escalate(noisy, base=2, max_copies=4, affordable=lambda c: True)["decision"] == "undecided"
    assert calls == [2, 3, 4]  # up to max_copies, then it stays undecided


def test_online_early_bird_rule_on_a_hand_made_sequence() -> None:
    # Trace points 0..70 every 10. window distances: the newest mask against the previous four (None until four
    # exist). At 40 one of them is 0.12 >= 0.1; at 50 all are below: drawn at 50. The hindsight rule on the
    # successive distances (0.3, 0.05, 0.2, 0.05, 0.04, 0.03, 0.02) settles at 40 (below from there on).
    iterations = [0, 10, 20, 30, 40, 50, 60, 70]
    successive = [None, 0.3, 0.05, 0.2, 0.05, 0.04, 0.03, 0.02]
    recent = [
        None,
        None,
        None,
        None,
        [0.05, 0.08, 0.12, 0.3],
        [0.04, 0.07, 0.09, 0.09],
        [0.03, 0.05, 0.06, 0.08],
        [0.02, 0.04, 0.05, 0.07],
    ]
    assert online_drawn_at(iterations, recent, 0.1) == 50
    assert settled_at(iterations, successive, 0.1) == 40
    assert drawn_at("online", iterations, successive, recent, 0.1) == 50
    assert drawn_at("hindsight", iterations, successive, recent, 0.1) == 40
    # The online rule draws as soon as the window is quiet, even if the mask moves later (hindsight would not).
    later = [*recent[:-1], [0.5, 0.5, 0.5, 0.5]]
    assert online_drawn_at(iterations, later, 0.1) == 50
    assert settled_at(iterations, [*successive[:-1], 0.5], 0.1) is None
    assert online_drawn_at(iterations, [None] * 8, 0.1) is None
    with pytest.raises(ValueError):
        drawn_at("sometime", iterations, successive, recent, 0.1)


def test_results_summary_decides_matching_over_replicates() -> None:
    from lottery.results.rows import aggregate, table

    def row(kind: str, r: int, accuracy: float, seed: int | None = None) -> dict:
        return {
            "kind": kind,
            "replicate": r,
            "rewind_iteration": None if kind == "dense" else 0,
            "level": 0 if kind == "dense" else 1,
            "seed": seed,
            "density": 1.0 if kind == "dense" else 0.5,
            "final_test_accuracy": accuracy,
            "early_stop_test_accuracy": accuracy,
            "early_stop_iteration": 10,
            "train_seconds": 1.0,
            "diverged": False,
        }

    dense = [0.90, 0.91, 0.92]
    rows = [row("dense", r, a) for r, a in enumerate(dense)]
    rows += [row("imp", r, a + 0.005) for r, a in enumerate([0.90, 0.91, 0.92])]  # +0.5 points in every replicate
    # random pruning, two seeds per replicate: gaps (-1.0, -1.2), (-1.1, -0.9), (-1.0, -1.0) -> means -1.1, -1.0, -1.0
    gaps = [(-1.0, -1.2), (-1.1, -0.9), (-1.0, -1.0)]
    rows += [row("random_prune", r, dense[r] + g / 100, s) for r, gs in enumerate(gaps) for s, g in enumerate(gs)]
    summary = {r["kind"]: r for r in aggregate(rows)}
    assert "matching" not in summary["dense"]
    imp = summary["imp"]["matching"]
    assert imp["decision"] == "matching" and imp["gap_mean"] == pytest.approx(0.5) and imp["unit"] == "replicate"
    assert imp["gap_interval"] == pytest.approx([0.5, 0.5])
    control = summary["random_prune"]["matching"]
    assert (
        control["n"] == 3 and control["gap_mean"] == pytest.approx(-31 / 30) and control["decision"] == "not_matching"
    )
    text = table(aggregate(rows))
    assert "+0.50 [+0.50, +0.50] matching" in text and "not_matching" in text
