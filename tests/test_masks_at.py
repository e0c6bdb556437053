"""`masks.at` takes exactly the step strings `imp.rewind` takes ('0it', '100it', '2ep', '1ep50it', or a whole
number of iterations) and refuses everything else with one UserError line naming `masks.at`."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.errors import UserError
from lottery.spec.parse import build

counts = st.integers(min_value=0, max_value=10**12)
steps = st.one_of(
    counts,
    counts.map(lambda n: f"{n}it"),
    counts.map(lambda n: f"{n}ep"),
    st.tuples(counts, counts).map(lambda p: f"{p[0]}ep{p[1]}it"),
    st.tuples(st.integers(0, 3), counts).map(lambda p: "0" * p[0] + f"{p[1]}it"),  # leading zeros
)
STEP = re.compile(r"^(?:[0-9]+ep)?(?:[0-9]+it)?$")


def masks_at(value: object) -> str:
    return build({"masks": {"at": value}}).masks.at


def rewind(value: object) -> str:
    return build({"imp": {"rewind": [value]}}).imp.rewind[0]


@settings(max_examples=200, deadline=None)
@given(steps)
def test_masks_at_accepts_what_imp_rewind_accepts(step: object) -> None:
    assert masks_at(step) == rewind(step)
    assert masks_at(masks_at(step)) == masks_at(step)  # canonical: parsing it again changes nothing


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=12), st.floats(), st.booleans(), st.integers(max_value=-1), st.lists(counts)))
def test_masks_at_refuses_what_imp_rewind_refuses(value: object) -> None:
    valid = isinstance(value, str) and value.strip() and STEP.match(value.strip())
    if valid:
        assert masks_at(value) == rewind(value)
        return
    with pytest.raises(UserError) as refused:
        masks_at(value)
    message = str(refused.value)
    assert "masks.at" in message and "\n" not in message
    with pytest.raises(UserError):
        rewind(value)


def test_masks_at_examples() -> None:
    assert [masks_at(s) for s in ("0it", "100it", "2ep", "1ep50it", 250, "0100it")] == [
        "0it",
        "100it",
        "2ep",
        "1ep50it",
        "250it",
        "100it",
    ]
    for bad, words in (("5x", "malformed step '5x'"), ("", "malformed step ''"), (1.5, "must be a string")):
        with pytest.raises(UserError, match=re.escape(words)):
            masks_at(bad)
