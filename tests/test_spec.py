"""Spec parsing, overrides, validation, step strings and hash stability."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lottery.errors import UserError
from lottery.spec import ExperimentSpec, Step, build, resolve, spec_hash, to_dict, to_toml
from lottery.spec.parse import parse_override


@pytest.mark.parametrize(
    ("text", "epochs", "iterations"),
    [("50000it", 0, 50000), ("160ep", 160, 0), ("2ep100it", 2, 100), ("0it", 0, 0), (7, 0, 7), (" 3ep ", 3, 0)],
)
def test_step_strings(text: object, epochs: int, iterations: int) -> None:
    step = Step.parse(text)
    assert (step.epochs, step.iterations) == (epochs, iterations)


def test_step_conversion_uses_epoch_length() -> None:
    assert Step.parse("2ep100it").to_iterations(916) == 1932
    assert Step.parse("160ep").to_iterations(390) == 62400


@pytest.mark.parametrize("text", ["", "ep", "it", "10", "1.5ep", "-3it", "3it2ep", "3 ep", "epit", True, 1.0, None, -1])
def test_malformed_steps(text: object) -> None:
    with pytest.raises(UserError, match="step"):
        Step.parse(text)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_step_round_trip(epochs: int, iterations: int) -> None:
    step = Step(epochs, iterations)
    assert Step.parse(str(step)).to_iterations(37) == epochs * 37 + iterations


def test_overrides_read_toml_values_or_bare_strings() -> None:
    assert parse_override("training.lr=0.01") == (["training", "lr"], 0.01)
    assert parse_override("training.training_steps=2ep") == (["training", "training_steps"], "2ep")
    assert parse_override('imp.rewind=["0it", "500it"]') == (["imp", "rewind"], ["0it", "500it"])
    assert parse_override("dataset.augment=true") == (["dataset", "augment"], True)
    assert parse_override("replicates=3") == (["replicates"], 3)
    with pytest.raises(UserError, match="group.field=value"):
        parse_override("training.lr")


def test_preset_file_and_overrides_stack(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('preset = "lenet_300_100"\n[training]\nlr = 0.5\nbatch_size = 10\n[imp]\nlevels = 2\n')
    spec, preset = resolve(path, overrides=["training.lr=0.25", "imp.rewind=100"])
    assert preset == "lenet_300_100"
    assert spec.training.optimizer == "adam"  # from the preset
    assert spec.training.batch_size == 10  # from the file
    assert spec.training.lr == 0.25  # from --set, last wins
    assert spec.imp.rewind == ("100it",)  # canonical step, scalar promoted to a list
    assert spec.imp.levels == 2


def test_toml_round_trip(tmp_path: Path) -> None:
    spec, _ = resolve(preset="lenet_300_100", overrides=['imp.rewind=["0it","1ep"]', "stability.rewind=[0]"])
    path = tmp_path / "back.toml"
    path.write_text(to_toml(spec))
    assert resolve(path)[0] == spec
    assert build(to_dict(spec)) == spec


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.lr=0"], "training.lr must be > 0"),
        (["training.lr=-1"], "training.lr must be > 0"),
        (["training.optimizer=adamx"], "unknown training.optimizer 'adamx'; did you mean 'adam"),
        (["training.lrr=0.1"], "did you mean 'lr'"),
        (["trainig.lr=0.1"], "did you mean 'training'"),
        (["training.batch_size=ten"], "training.batch_size must be an integer"),
        (["training.batch_size=1.5"], "training.batch_size must be an integer"),
        (["pruning.fraction=1.0"], "pruning.fraction must be in (0, 1)"),
        (["pruning.fraction=0"], "pruning.fraction must be in (0, 1)"),
        (["training.training_steps=12x"], "malformed step"),
        (["imp.rewind=[]"], "imp.rewind needs at least one"),
        (["stability.copies=1"], "stability.copies must be at least 2"),
        (["stability.batchnorm=average"], "stability.batchnorm"),
        (["controls.kinds=['random']"], "unknown controls.kinds"),
        (["training.nesterov=true"], "nesterov needs"),
        (["imp.levels=1", "controls.levels=[2]"], "controls.levels names level 2"),
    ],
)
def test_validation_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as error:
        resolve(preset="lenet_300_100", overrides=overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_preset_suggests() -> None:
    with pytest.raises(UserError, match="did you mean 'lenet_300_100'"):
        resolve(preset="lenet300_100")


def test_defaults_are_omitted_from_the_hash() -> None:
    explicit, _ = resolve(overrides=["training.lr=0.1", "training.momentum=0.0", "imp.rewind=0"])
    assert spec_hash(explicit) == spec_hash(ExperimentSpec())
    assert to_dict(explicit, omit_defaults=True) == {}
    changed, _ = resolve(overrides=["training.lr=0.2"])
    assert spec_hash(changed) != spec_hash(ExperimentSpec())


def test_pinned_hashes() -> None:
    """Run directories are named by these hashes: changing them renames every stored run."""
    assert spec_hash(ExperimentSpec()) == "44136fa355b3678a"
    assert spec_hash(resolve(preset="lenet_300_100")[0]) == "0703f6334d87bb78"
    assert spec_hash(resolve(preset="lenet_300_100", overrides=["imp.levels=3"])[0]) == "a0c6085851931178"
