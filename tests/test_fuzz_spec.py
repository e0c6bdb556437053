"""Fuzzing the spec parser and step strings: whatever the input (random TOML-like values for every field,
random keys, random `--set` text, random spec files, random step strings), the only exception that may
escape is UserError, which the CLI prints as one line with exit code 2. Never a traceback."""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lottery.errors import UserError
from lottery.spec import Step, build, resolve, spec_hash, to_dict, to_toml
from lottery.spec.groups import GROUPS
from lottery.spec.parse import TOP_LEVEL, parse_override
from lottery.spec.steps import canonical

FIELDS = [(group, f.name) for group, cls in GROUPS.items() for f in dataclasses.fields(cls)]
FIELD_NAMES = sorted({name for _, name in FIELDS})
WORDS = [
    "sgd",
    "adam",
    "0it",
    "100it",
    "1ep",
    "2ep100it",
    "-1it",
    "global_magnitude",
    "layerwise_magnitude",
    "lenet_300_100",
    "resnet20",
    "synthetic",
    "mnist",
    "random_prune",
    "random_reinit",
    "none",
    "null",
    "fp32",
    "bf16",
    "output",
    "fc",
    "conv",
    "fresh",
    "rewind",
    "projection",
    "1e400",
    "nan",
    "inf",
    "",
]

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),  # beyond any float
    st.floats(),  # nan and infinities included
    st.text(max_size=20),
    st.sampled_from(WORDS),
    st.datetimes(),
    st.dates(),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.sampled_from(WORDS), inner),
    max_leaves=8,
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
groups = st.dictionaries(keys, values, max_size=4) | values
specs = st.dictionaries(st.sampled_from(TOP_LEVEL) | st.text(max_size=10), groups, max_size=4)
step_like = st.from_regex(r"\A\s*-?[0-9]{0,6}(ep)?[0-9]{0,6}(it|ep|s)?\s*\Z")
override_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(WORDS),
    step_like,
    st.from_regex(r"\A-?[0-9]{1,6}(\.[0-9]+)?(e-?[0-9]{1,3})?\Z"),
    st.lists(st.sampled_from(WORDS) | step_like, max_size=3).map(
        lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"
    ),
    st.integers(min_value=1, max_value=4).map(lambda n: "[" * n * 1000),  # deeper than the TOML parser recurses
    st.just("9" * 5000),  # more digits than int() converts
)


def only_user_errors(call, *args: object, **kwargs: object) -> object:  # noqa: ANN001
    """`call(*args, **kwargs)`, or None where it raised UserError (any other exception fails the test)."""
    try:
        return call(*args, **kwargs)
    except UserError as error:
        assert str(error) and "\n" not in str(error).strip()  # one line
        return None


def check_valid(spec: object) -> None:
    """A spec that was accepted is self-consistent: it survives JSON and TOML round trips unchanged."""
    if spec is None:
        return
    assert build(to_dict(spec)) == spec
    assert len(spec_hash(spec)) == 16
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.toml"
        path.write_text(to_toml(spec))
        again, preset = resolve(path)
    assert again == spec and preset is None


@FUZZ
@given(field=st.sampled_from(FIELDS), value=values)
def test_every_field_with_random_values(field: tuple[str, str], value: object) -> None:
    group, name = field
    check_valid(only_user_errors(build, {group: {name: value}}))


@FUZZ
@given(data=specs)
def test_random_nested_specs(data: dict) -> None:
    check_valid(only_user_errors(build, data))


@FUZZ
@given(
    field=st.sampled_from(FIELDS) | st.tuples(st.text(max_size=8), st.text(max_size=8)),
    raw=override_values,
    preset=st.sampled_from([None, "lenet_300_100", "resnet20", "lenet_30"]),
)
def test_random_overrides(field: tuple[str, str], raw: str, preset: str | None) -> None:
    group, name = field
    only_user_errors(parse_override, f"{group}.{name}={raw}")
    result = only_user_errors(resolve, None, preset, [f"{group}.{name}={raw}"])
    if result is not None:
        check_valid(result[0])


@FUZZ
@given(text=st.text(max_size=60))
def test_random_override_text(text: str) -> None:
    only_user_errors(parse_override, text)
    only_user_errors(resolve, None, None, [text])


def _tomlable(value: object) -> bool:
    if value is None or (isinstance(value, datetime.time) and value.tzinfo is not None):
        return False
    if isinstance(value, list):
        return all(_tomlable(v) for v in value)
    if isinstance(value, dict):
        return all(_tomlable(v) for v in value.values())
    return True


@FUZZ
@given(data=specs.filter(_tomlable), garbage=st.text(max_size=40), mode=st.sampled_from(["toml", "text", "bytes"]))
def test_random_spec_files(data: dict, garbage: str, mode: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.toml"
        if mode == "toml":
            path.write_text(tomli_w.dumps({k: v if isinstance(v, dict) else {"v": v} for k, v in data.items()}))
        elif mode == "text":
            path.write_text(garbage)
        else:
            path.write_bytes(garbage.encode("utf-16"))  # not UTF-8
        result = only_user_errors(resolve, path)
    if result is not None:
        check_valid(result[0])


@FUZZ
@given(
    text=st.one_of(
        st.text(),
        step_like,
        st.integers(),
        st.floats(),
        st.none(),
        st.booleans(),
        st.lists(st.integers()),
        st.just("1" * 5000 + "it"),
    )
)
def test_random_step_strings(text: object) -> None:
    step = only_user_errors(Step.parse, text, "training.training_steps")
    if step is None:
        return
    assert step.epochs >= 0 and step.iterations >= 0
    assert Step.parse(str(step)) == step  # the canonical spelling reads back
    assert canonical(str(step)) == str(step)
    assert step.to_iterations(7) == 7 * step.epochs + step.iterations
