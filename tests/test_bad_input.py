"""Bad input: every case exits with code 2 and one stderr line (no traceback) that names the problem and
what is allowed, and leaves the store byte for byte as it was. The store already holds a finished
experiment, which a refused command must not touch."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest

from lottery.cli.main import main
from reliability_helpers import cli_args, experiment_dir, one_error_line, run_cli, run_subprocess, tree

# (id, extra --set overrides, words the message must contain)
SETTINGS = [
    ("unknown model", ["model.name=resnet21"], ["unknown model 'resnet21'", "did you mean 'resnet20'", "valid:"]),
    ("unknown dataset", ["dataset.name=fashion_mnst"], ["unknown dataset", "did you mean 'fashion_mnist'"]),
    ("unknown optimizer", ["training.optimizer=adm"], ["unknown training.optimizer 'adm'", "did you mean 'adam'"]),
    (
        "unknown strategy",
        ["pruning.strategy=global_magnitud"],
        ["unknown pruning strategy", "did you mean 'global_magnitude'", "layerwise_magnitude"],
    ),
    ("unknown control", ['controls.kinds=["random_prun"]'], ["unknown controls.kinds", "did you mean 'random_prune'"]),
    ("unknown init", ["model.init=glorot"], ["unknown initializer 'glorot'", "glorot_normal"]),
    ("misspelled key", ["training.lrr=0.1"], ["unknown setting in [training] 'lrr'", "did you mean 'lr'"]),
    ("misspelled group", ["trainng.lr=0.1"], ["unknown top-level spec key 'trainng'", "did you mean 'training'"]),
    ("wrong type int", ["training.batch_size=abc"], ["training.batch_size must be an integer", "'abc'"]),
    ("wrong type float", ['training.lr="fast"'], ["training.lr must be a number", "'fast'"]),
    ("wrong type levels", ["imp.levels=1.5"], ["imp.levels must be an integer", "1.5"]),
    ("wrong type list", ["controls.kinds={a=1}"], ["controls.kinds must be"]),
    ("lr zero", ["training.lr=0"], ["training.lr must be > 0", "got 0.0"]),
    ("lr negative", ["training.lr=-0.1"], ["training.lr must be > 0", "got -0.1"]),
    ("lr nan", ["training.lr=nan"], ["training.lr must be a finite number"]),
    ("lr huge int", ["training.lr=" + "9" * 400], ["training.lr must be a finite number"]),
    ("fraction above 1", ["pruning.fraction=1.5"], ["pruning.fraction must be in (0, 1)", "1.5"]),
    ("fraction zero", ["pruning.fraction=0"], ["pruning.fraction must be in (0, 1)"]),
    ("rate one", ["pruning.rates={output=1.0}"], ["pruning.rates.output must be in (0, 1)"]),
    ("malformed steps", ["training.training_steps=10epochs"], ["malformed step '10epochs'", "'500it', '160ep'"]),
    ("malformed rewind", ['imp.rewind=["5x"]'], ["imp.rewind: malformed step '5x'", "'2ep100it'"]),
    ("negative steps", ["training.training_steps=-5"], ["training.training_steps", "'500it'"]),
    ("too many digits", ["training.training_steps=" + "1" * 5000 + "it"], ["training.training_steps", "too large"]),
    ("eval every zero", ["training.eval_every=0it"], ["training.eval_every must be at least 1 iteration"]),
    (
        "rewind at end",
        ['imp.rewind=["60it"]'],
        ["imp.rewind point 60it", "must be before the end of training", "60 iterations"],
    ),
    ("rewind after end", ['imp.rewind=["2ep"]'], ["imp.rewind point 2ep", "must be before the end of training"]),
    ("malformed masks.at", ["masks.at=5x"], ["masks.at: malformed step '5x'", "'2ep100it'"]),
    ("negative masks.at", ["masks.at=-5"], ["masks.at: malformed step '-5it'", "'500it'"]),
    ("masks.at list", ['masks.at=["0it"]'], ["masks.at must be a string", "['0it']"]),
    (
        "masks.at after end",
        ['masks.sources=["snip"]', "masks.densities=[0.1]", "masks.at=2ep"],
        ["masks.at point 2ep", "must be before the end of training", "60 iterations"],
    ),
    ("batch too large", ["training.batch_size=100000"], ["training.batch_size = 100000", "larger than the training"]),
    ("validation too large", ["dataset.validation_size=2000"], ["dataset.validation_size = 2000", "no training data"]),
    ("replicates zero", ["replicates=0"], ["replicates must be > 0"]),
    ("controls level", ["imp.levels=1", "controls.levels=[5]"], ["controls.levels names level 5", "imp.levels is 1"]),
    ("momentum one", ["training.momentum=1"], ["training.momentum must be in [0, 1)"]),
    ("dropout lenet", ["model.dropout=0.5"], ["model.dropout is not supported by lenet", "allowed: 0"]),
    (
        "ignored layer",
        ["imp.levels=1", 'pruning.layers_to_ignore=["hiden.0"]'],
        ["'hiden.0' matches no prunable layer", "did you mean 'hidden.0'"],
    ),
    ("seed 2**64", ["training.init_seed=18446744073709551616"], ["training.init_seed must be below 2**63"]),
    (
        "seed shifted past 2**63",
        ["training.data_order_seed=9223372036854775807", "replicates=2"],
        ["training.data_order_seed must be below 2**63", "replicates = 2 use seeds up to"],
    ),
    ("control seed 2**63", ["controls.seeds=[9223372036854775808]"], ["controls.seeds must be below 2**63"]),
    ("lenet width 0", ["model.name=lenet_0"], ["model.name 'lenet_0'", "every layer width must be at least 1"]),
    ("lenet second width 0", ["model.name=lenet_300_0"], ["every layer width must be at least 1"]),
    ("lenet huge", ["model.name=lenet_999999999999"], ["parameters: training it needs at least", "GiB", "has"]),
    ("huge width", ["model.width=999999999999999"], ["with model.width = 999999999999999", "cannot fit in memory"]),
    ("full-width digits", ["model.name=lenet_\uff13\uff10\uff10_100"], ["must be written in ASCII"]),
    ("huge replicates", ["replicates=99999999999999999999"], ["replicates must be at most 1000"]),
    ("huge levels", ["imp.levels=99999999999999999999"], ["imp.levels must be at most 1000"]),
    ("huge copies", ["stability.copies=99999999999999999999"], ["stability.copies must be at most 1000"]),
    (
        "huge interpolation",
        ["stability.interpolation_points=99999999999999999999"],
        ["stability.interpolation_points must be at most 100000"],
    ),
    ("set without value", ["training.lr"], ["--set expects group.field=value"]),
    ("set preset", ["preset=vgg19"], ["--preset NAME"]),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one finished experiment."""
    out = tmp_path_factory.mktemp("finished")
    assert main(cli_args(out)) == 0
    return out


@pytest.fixture
def store(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "store", symlinks=True)
    return tmp_path / "store"


def assert_refused(store: Path, argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(store)
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    line = one_error_line(err)
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert out == ""
    assert tree(store) == before  # nothing written, nothing touched


@pytest.mark.parametrize(("overrides", "words"), [c[1:] for c in SETTINGS], ids=[c[0] for c in SETTINGS])
def test_bad_setting(store: Path, overrides: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(store, cli_args(store, *overrides), words, capsys)


def test_bad_setting_for_train_too(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lottery train` prunes nothing, yet still refuses a wrong strategy name."""
    argv = cli_args(store, "pruning.strategy=magnitude", command="train")
    assert_refused(store, argv, ["unknown pruning strategy 'magnitude'", "global_magnitude"], capsys)


def idx(ndim_shape: tuple[int, ...], data: bytes, magic: int = 0x08) -> bytes:
    return bytes([0, 0, magic, len(ndim_shape)]) + struct.pack(f">{len(ndim_shape)}I", *ndim_shape) + data


def mnist_dir(root: Path, images: bytes | None = None, images_name: str = "train-images-idx3-ubyte") -> Path:
    """A directory of MNIST IDX files: 4 tiny valid files, with the training images replaced if given."""
    root.mkdir()
    (root / "train-images-idx3-ubyte").write_bytes(idx((4, 28, 28), bytes(4 * 784)))
    (root / "train-labels-idx1-ubyte").write_bytes(idx((4,), bytes(4)))
    (root / "t10k-images-idx3-ubyte").write_bytes(idx((2, 28, 28), bytes(2 * 784)))
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx((2,), bytes(2)))
    if images is not None:
        (root / "train-images-idx3-ubyte").unlink()
        (root / images_name).write_bytes(images)
    return root


DATA = [
    ("no directory", None, ["data directory", "does not exist", "set dataset.root"]),
    ("missing files", "empty", ["missing", "train-images-idx3-ubyte[.gz]", "set dataset.root"]),
    ("bad magic", idx((4, 28, 28), bytes(4 * 784), magic=0x0D), ["not an unsigned-byte IDX file", "magic"]),
    ("truncated", idx((4, 28, 28), bytes(100)), ["truncated or malformed", "(4, 28, 28)"]),
    ("labels mismatch", idx((3, 28, 28), bytes(3 * 784)), ["train images (3, 28, 28) and labels (4,) do not match"]),
    ("corrupted gzip", gzip.compress(b"")[:10] + b"\xff" * 32, ["cannot read IDX file", "train-images-idx3-ubyte.gz"]),
    ("not gzip", b"plain bytes", ["cannot read IDX file", "train-images-idx3-ubyte.gz"]),
]


@pytest.mark.parametrize(("images", "words"), [c[1:] for c in DATA], ids=[c[0] for c in DATA])
def test_missing_or_malformed_dataset_files(
    store: Path, tmp_path: Path, images: bytes | str | None, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "mnist"
    if images == "empty":
        root.mkdir()
    elif isinstance(images, bytes):
        gz = images.startswith(b"\x1f\x8b") or images == b"plain bytes"
        mnist_dir(root, images, "train-images-idx3-ubyte" + (".gz" if gz else ""))
    argv = cli_args(store, "dataset.name=mnist", f"dataset.root={root}", "dataset.validation_size=1")
    assert_refused(store, argv, words, capsys)


def idx_files(root: Path, train: tuple[tuple[int, ...], bytes], test: tuple[tuple[int, ...], bytes]) -> Path:
    """An MNIST directory whose images are zeros of the given shapes, with the given labels."""
    root.mkdir()
    for stem, (shape, labels) in (("train", train), ("t10k", test)):
        (root / f"{stem}-images-idx3-ubyte").write_bytes(idx(shape, bytes(shape[0] * shape[1] * shape[2])))
        (root / f"{stem}-labels-idx1-ubyte").write_bytes(idx((len(labels),), labels))
    return root


CONTENTS = [
    (
        "train label out of range",
        ((4, 28, 28), bytes([0, 1, 200, 3])),
        ((2, 28, 28), bytes(2)),
        ["train label 200 is out of range for 10 classes", "0..9"],
    ),
    (
        "test label = classes",
        ((4, 28, 28), bytes(4)),
        ((2, 28, 28), bytes([0, 10])),
        ["test label 10 is out of range for 10 classes"],
    ),
    (
        "test shape differs",
        ((4, 28, 28), bytes(4)),
        ((2, 32, 32), bytes(2)),
        ["test images are (1, 32, 32), train images (1, 28, 28)"],
    ),
    ("empty test set", ((4, 28, 28), bytes(4)), ((0, 28, 28), b""), ["the test set is empty"]),
    (
        "0x0 images",
        ((4, 0, 0), bytes(4)),
        ((2, 0, 0), bytes(2)),
        ["train images of shape (1, 0, 0)", "each needs some pixels"],
    ),
]


@pytest.mark.parametrize(("train", "test", "words"), [c[1:] for c in CONTENTS], ids=[c[0] for c in CONTENTS])
def test_dataset_contents_are_checked_when_loaded(
    store: Path, tmp_path: Path, train: tuple, test: tuple, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = idx_files(tmp_path / "mnist", train, test)
    argv = cli_args(store, "dataset.name=mnist", f"dataset.root={root}", "dataset.validation_size=1")
    assert_refused(store, [*argv[:-2], "--out", str(store / "new")], words, capsys)
    assert not (store / "new").exists()  # not even the store directory


def test_empty_or_conflicting_input(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(store, ["run", "--preset", "", "--out", str(store)], ["--preset is empty", "preset name"], capsys)
    assert_refused(store, cli_args(store, extra=("--out", "")), ["--out is empty", "store directory"], capsys)
    assert_refused(store, cli_args(store, "dataset.root=''"), ["dataset.root is empty"], capsys)
    assert_refused(store, ["presets", "--show", ""], ["unknown preset ''"], capsys)
    not_a_table = tmp_path / "five.toml"
    not_a_table.write_text('preset = "lenet_300_100"\ntraining = 5\n')
    argv = ["run", str(not_a_table), "--set", "training.lr=0.1", "--out", str(store)]
    assert_refused(store, argv, ["training must be a table of settings ([training])", "got 5"], capsys)
    nope = tmp_path / "nope.toml"
    nope.write_text('preset = "nope"\n')
    argv = ["run", str(nope), "--preset", "lenet_300_100", "--out", str(store)]
    assert_refused(store, argv, ["starts from preset 'nope' but --preset 'lenet_300_100' was given"], capsys)


def test_bad_spec_files(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert_refused(store, ["run", str(missing), "--out", str(store)], ["spec file not found", "missing.toml"], capsys)
    broken = tmp_path / "broken.toml"
    broken.write_text("[training\nlr = ")
    assert_refused(store, ["run", str(broken), "--out", str(store)], ["is not valid TOML"], capsys)
    typo = tmp_path / "typo.toml"
    typo.write_text('preset = "lenet_300_100"\n[training]\nbatch_sise = 10\n')
    words = ["unknown setting in [training] 'batch_sise'", "did you mean 'batch_size'"]
    assert_refused(store, ["run", str(typo), "--out", str(store)], words, capsys)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--preset", "lenet_300"], ["unknown preset 'lenet_300'", "did you mean 'lenet_300_100'"]),
        (["run"], ["give a spec file, --preset NAME or --set overrides"]),
        (["runn"], ["invalid choice: 'runn'", "'run'"]),
        (["run", "--preset", "lenet_300_100", "--frobnicate"], ["unrecognized arguments: --frobnicate"]),
        (["run", "--preset", "lenet_300_100", "--checkpoint-every", "0"], ["--checkpoint-every must be at least 1"]),
        (["run", "--preset", "lenet_300_100", "--checkpoint-every", "x"], ["--checkpoint-every", "invalid int"]),
        (["run", "--preset", "lenet_300_100", "--device", "tpu"], ["--device 'tpu'", "auto, cpu, cuda"]),
        (["run", "--preset", "lenet_300_100", "--progress", "loud"], ["--progress", "'bar', 'log'"]),
    ],
    ids=["preset", "nothing", "command", "option", "checkpoint-every", "checkpoint-type", "device", "progress"],
)
def test_bad_command_line(store: Path, argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(store, [*argv, "--out", str(store)], words, capsys)


def make_collision(store: Path) -> Path:
    """Edit the stored spec.json into a different (valid) spec, manifest updated to match: what a true hash
    collision would look like. Returns the experiment directory."""
    experiment = experiment_dir(store)
    spec = json.loads((experiment / "spec.json").read_text())
    spec["training"]["lr"] = 0.5
    data = (json.dumps(spec, indent=2) + "\n").encode()
    (experiment / "spec.json").write_bytes(data)
    manifest = json.loads((experiment / "manifest.json").read_text())
    manifest["spec.json"] = hashlib.sha256(data).hexdigest()
    (experiment / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return experiment


def test_hash_collision_with_a_different_stored_spec(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = make_collision(store)
    words = [str(experiment), "holds a different spec", "hash collision", "--out"]
    assert_refused(store, cli_args(store), words, capsys)
    assert_refused(store, cli_args(store, command="train"), words, capsys)


def test_store_that_is_not_a_directory(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (store / "not_a_dir").write_text("a file\n")
    words = ["cannot lock", "not_a_dir", "Not a directory", "writable directory"]
    assert_refused(store, cli_args(store / "not_a_dir"), words, capsys)


@pytest.mark.parametrize("case", ["unknown model", "batch too large", "collision"])
def test_refused_by_the_real_command(store: Path, case: str) -> None:
    """The installed entry point (`python -m lottery`): exit code 2, one line, no traceback, store untouched."""
    overrides = {"unknown model": ["model.name=resnet21"], "batch too large": ["training.batch_size=100000"]}
    if case == "collision":
        make_collision(store)
    before = tree(store)
    result = run_subprocess(cli_args(store, *overrides.get(case, [])))
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert {"unknown model": "did you mean", "batch too large": "larger than", "collision": "different spec"}[
        case
    ] in line
    assert result.stdout == ""
    assert tree(store) == before
