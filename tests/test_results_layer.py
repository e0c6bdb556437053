"""The results layer (lottery.results): mask kinds parsed back from their spelling, the rewind search's probe cells
on a hand-made probe, stability pairs of a hand-made point, and the results source readers ask (provided by the
engine through lottery.wiring; a clear error where nothing provides it)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lottery.extension_points import mask_sources
from lottery.results import source
from lottery.results.kinds import split_kind
from lottery.results.pairs import pair_rows
from lottery.results.probes import CONTROL, PROBE_COLUMNS, answer, probe_cells
from lottery.spec.groups import MASK_ABLATIONS


@given(st.sampled_from([*mask_sources, "early_bird"]), st.sampled_from((None, *MASK_ABLATIONS)))
def test_a_mask_kind_splits_into_its_source_and_ablation(source_name: str, ablation: str | None) -> None:
    kind = source_name if ablation is None else f"{source_name}_{ablation}"
    assert split_kind(kind) == (source_name, ablation)


def test_probe_cells_follow_the_columns_with_intervals_and_missing_values() -> None:
    probe = {
        "k": 14,
        "copies": 3,
        "barrier_mean": 1.234,
        "barrier_interval": [0.5, 1.968],
        "decision": "undecided",
        "accuracy": 0.9876,
        "gap_mean": -0.1,
        "gap_interval": None,
        "matching": None,
        "trainings": 4,
        "control": {"barrier_mean": 7.0, "barrier_interval": None},
    }
    cells = probe_cells(probe, missing="–")
    assert len(cells) == len(PROBE_COLUMNS) and PROBE_COLUMNS[7] == f"{CONTROL} barrier"
    assert cells == ["14", "3", "1.23 [0.50, 1.97]", "undecided", "98.76", "-0.10", "–", "7.00", "4"]
    found = {
        "level": 2,
        "imp": {
            "k": 14,
            "bracket": [7, 14],
            "interval": [7, 28],
            "monotone": False,
            "offending": [56],
            "matching": "matching",
            "complete": False,
        },
    }
    assert answer(found, "imp") == (
        "imp level 2 stable from k = 14 (bracket [7, 14], interval for k [7, 28]); NOT monotone: unstable again at "
        "k = [56]; matching at k: matching (budget spent: the bracket so far)"
    )


def test_pair_rows_give_one_row_per_pair_and_skip_diverged_points() -> None:
    keys = {"replicate": 0, "rewind_iteration": 20, "level": 1, "kind": "imp", "density": 0.5}
    point = {
        **keys,
        "diverged": False,
        "pruning": {"pairs": [{"full": "dense_copy0", "subnetwork": "imp_copy0", "l2": 3.0}]},
        "data_order": {"pairs": [{"a": "imp_copy0", "b": "imp_copy1", "barrier_test": 0.5}]},
    }
    rows = pair_rows([point, {**point, "diverged": True}])
    assert [(r["measure"], r["a"], r["b"]) for r in rows] == [
        ("pruning", "dense_copy0", "imp_copy0"),
        ("data_order", "imp_copy0", "imp_copy1"),
    ]
    assert all(r["target_density"] is None and {**r, **keys} == r for r in rows)


def test_the_results_source_says_so_where_no_engine_provides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "_provided", {})
    with pytest.raises(RuntimeError, match="no engine provides results"):
        source.compute(None, None)  # type: ignore[arg-type]
    calls = []
    source.provide(compute=lambda e, s: calls.append(("compute", e)) or {}, write=lambda e, s: {"written": e})
    assert source.compute("x", None) == {} and source.write("y", None) == {"written": "y"}  # type: ignore[arg-type]
    assert calls == [("compute", "x")]
