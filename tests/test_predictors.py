"""Which stability measure predicts a ticket: Spearman's rho and its bootstrap interval, hand-checked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.experiments.predictors import cluster_bootstrap, correlate, observations, ranks, spearman


def test_ranks_average_ties_by_hand() -> None:
    # 10 -> 1, the two 20s share ranks 2 and 3 -> 2.5, 5 -> ... sorted: 5, 10, 20, 20, 30
    assert ranks(np.array([10.0, 20.0, 5.0, 20.0, 30.0])).tolist() == [2.0, 3.5, 1.0, 3.5, 5.0]


def test_spearman_by_hand() -> None:
    # Without ties rho = 1 - 6 sum d^2 / (n (n^2 - 1)). x ranks 1..5, y ranks (2, 1, 4, 3, 5): d^2 = 1+1+1+1+0 = 4,
    # rho = 1 - 24 / 120 = 0.8.
    assert spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)  # monotone, not linear: still 1
    # With ties: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4); centred: (-1.5, 0, 0, 1.5), (-1.5, -.5, .5, 1.5);
    # sum xy = 4.5, sum x^2 = 4.5, sum y^2 = 5: rho = 4.5 / sqrt(22.5) = 0.9487
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / 22.5**0.5)
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # a constant measure predicts nothing: undefined
    assert spearman([1], [2]) is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=2, max_size=20))
def test_spearman_is_invariant_under_monotone_maps_and_bounded(pairs: list[tuple[float, float]]) -> None:
    x, y = [a for a, _ in pairs], [b for _, b in pairs]
    rho = spearman(x, y)
    if rho is None:
        return
    assert -1 - 1e-12 <= rho <= 1 + 1e-12
    assert spearman([2 * v for v in x], y) == pytest.approx(rho, abs=1e-9)  # an exact increasing map (no rounding)
    assert spearman(ranks(np.array(x)), y) == pytest.approx(rho, abs=1e-12)  # only the ranks count
    assert spearman(x, [-v for v in y]) == pytest.approx(-rho, abs=1e-12)


def test_cluster_bootstrap_is_seeded_and_brackets_a_perfect_correlation() -> None:
    x = list(range(10))
    y = [v * v for v in x]
    clusters = [i % 5 for i in x]  # five replicates
    assert cluster_bootstrap(spearman, clusters, [x, y], seed=3, resamples=200) == [1.0, 1.0]
    noisy = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    a = cluster_bootstrap(spearman, clusters, [x, noisy], seed=3, resamples=200)
    assert a == cluster_bootstrap(spearman, clusters, [x, noisy], seed=3, resamples=200)
    assert a[0] <= spearman(x, noisy) <= a[1]
    assert cluster_bootstrap(spearman, clusters, [x, noisy], seed=4, resamples=200) != a


def _point(k: int, level: int, kind: str, barrier: float, l2: float, accuracy: float) -> dict:
    return {
        "replicate": 0,
        "rewind_iteration": k,
        "level": level,
        "kind": kind,
        "density": 0.5,
        "diverged": False,
        "copies": [{"final_test_accuracy": accuracy}, {"final_test_accuracy": accuracy}],
        "data_order": {"barrier_test": {"mean": barrier}, "l2": {"mean": l2}},
        "pruning": {"l2": {"mean": 2 * l2}} if kind != "random_reinit" else None,
    }


def test_correlation_table_on_fabricated_points_ranks_the_measures() -> None:
    # The gap to dense (90%) is 1, 2, 3, 4 points. The barrier follows it exactly (rho = 1); L2 is 4, 3, 1, 2 -> ranks
    # (4, 3, 1, 2) against (1, 2, 3, 4): d^2 = 9+1+4+4 = 18, rho = 1 - 108/60 = -0.8.
    points = [
        _point(0, 0, "dense", 0.0, 0.0, 0.90),  # the dense network is not an observation
        _point(0, 1, "imp", 0.5, 4.0, 0.89),
        _point(10, 1, "imp", 1.0, 3.0, 0.88),
        _point(0, 1, "random_prune", 2.0, 1.0, 0.87),
        _point(10, 1, "random_prune", 3.0, 2.0, 0.86),
    ]
    runs = [{"kind": "dense", "replicate": 0, "diverged": False, "final_test_accuracy": 0.90}]
    rows = observations(points, runs)
    assert [round(r["accuracy_gap"], 9) for r in rows] == [1.0, 2.0, 3.0, 4.0]
    table = {t["measure"]: t for t in correlate(rows, resamples=50)}
    assert table["data_order.barrier_test"]["spearman"] == pytest.approx(1.0)
    assert table["data_order.l2"]["spearman"] == pytest.approx(-0.8)
    assert table["pruning.l2"]["spearman"] == pytest.approx(-0.8) and table["pruning.l2"]["n"] == 4
    assert table["data_order.kl_test"]["spearman"] is None and table["data_order.kl_test"]["n"] == 0
    ordered = [t["measure"] for t in correlate(rows, resamples=50)]
    assert ordered[0] == "data_order.barrier_test"  # the best predictor first (largest |rho|)
    assert table["data_order.l2"]["interval"] is None  # one replicate: no cluster to resample
    assert table["data_order.l2"]["clusters"] == 1 and table["data_order.l2"]["partial_spearman"] is None
