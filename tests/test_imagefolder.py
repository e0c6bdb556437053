"""Image folders streamed from disk: real JPEGs written here with Pillow, decoded by worker processes."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lottery.cli.main import main
from lottery.data import load
from lottery.data import stream as streaming
from lottery.data.imaging import Item, crop_params, decode, resize_size
from lottery.data.jpegs import write_folder
from lottery.errors import UserError
from lottery.seeding import derive
from lottery.spec import DatasetSpec
from lottery.store import RunDir
from lottery.training import Runtime

SIZE = 16


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("jpegs"), classes=3, train_per_class=8, val_per_class=3)


def folder(root: Path, **settings: object) -> streaming.FolderSplits:
    spec = DatasetSpec(
        **{
            "name": "imagefolder",
            "root": str(root),
            "validation_size": 3,
            "augment": True,
            "image_size": SIZE,
            **settings,
        }
    ).validate()
    return load(spec)


def test_listing_splits_and_labels(images: Path) -> None:
    data = folder(images)
    assert (data.num_classes, data.train_size, len(data.val), len(data.test)) == (3, 21, 3, 9)
    assert data.input_shape == (3, SIZE, SIZE)
    assert not set(data.train.paths) & set(data.val.paths)  # the validation split is held out of train/
    assert all("/val/" in p for p in data.test.paths)  # val/ is the test split
    for path, label in zip(data.test.paths, data.test.labels.tolist()):
        assert Path(path).parent.name == f"n{label:08d}"


def test_eval_transform_is_resize_then_center_crop(images: Path) -> None:
    path = next((images / "val" / "n00000001").iterdir())  # 30 x 40 (portrait)
    out = decode(Item(str(path)), SIZE)
    with Image.open(path) as image:
        reference = image.convert("RGB")
    short = resize_size(SIZE)
    assert short == 18
    resized = reference.resize((short, int(short * 40 / 30)), Image.BILINEAR)
    top, left = round((resized.height - SIZE) / 2), round((resized.width - SIZE) / 2)
    expected = np.asarray(resized.crop((left, top, left + SIZE, top + SIZE)))
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
    assert np.array_equal(out, expected)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(0, 2**32))
def test_random_resized_crop_box_inside_image(height: int, width: int, seed: int) -> None:
    top, left, h, w = crop_params(random.Random(seed), height, width)
    assert 0 <= top and 0 <= left and 0 < h and 0 < w and top + h <= height and left + w <= width
    tried = h * w / (height * width)
    assert 0.08 * 0.9 <= tried <= 1 or (h == height or w == width)  # a sampled box, or the fallback


def batches(data: streaming.FolderSplits, iterations: range, seed: int = 3) -> list[tuple[torch.Tensor, ...]]:
    s = data.stream(6, data_order_seed=seed, augmentation_seed=seed + 1)
    return [s.batch(t) for t in iterations]


def test_batches_identical_across_worker_counts_and_replayed_from_k(images: Path) -> None:
    data = folder(images)
    inline = batches(data.with_workers(0), range(8))  # 8 iterations: more than two epochs of 3
    pooled = batches(data.with_workers(2), range(8))
    for (x0, y0), (x2, y2) in zip(inline, pooled):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    replay = batches(data.with_workers(2), range(5, 8))  # a fresh stream started at iteration k = 5
    for (x, y), (xr, yr) in zip(inline[5:], replay):
        assert torch.equal(x, xr) and torch.equal(y, yr)
    assert not torch.equal(inline[0][0], inline[3][0])  # epoch 2 reorders and re-crops
    assert not torch.equal(inline[0][0], batches(data, range(1), seed=11)[0][0])  # the seeds matter


def test_slice_is_the_batch_slice(images: Path) -> None:
    data = folder(images).with_workers(1)
    s = data.stream(6, 0, 0)
    x, y = s.batch(2)
    xs, ys = s.slice(2, 2, 5)  # a rank's share decodes only its examples, with the same crops
    assert torch.equal(xs, x[2:5]) and torch.equal(ys, y[2:5])


def test_without_augmentation_the_eval_transform_is_used(images: Path) -> None:
    data = folder(images, augment=False)
    s = data.stream(4, 0, 0)
    x, y = s.batch(0)
    ex = next(data.eval_batches("train", 0, data.train_size, batch_size=data.train_size))[0]
    assert torch.equal(x, ex[s.indices(0)])
    assert abs(float(x.mean())) < 3 and x.dtype == torch.float32  # normalised


def test_class_and_example_subsets(images: Path) -> None:
    two = folder(images, classes=2, validation_size=0)
    assert two.num_classes == 2 and two.train_size == 16 and len(two.test) == 6
    kept = {Path(p).parent.name for p in two.train.paths}
    assert kept == {Path(p).parent.name for p in folder(images, classes=2, validation_size=0).train.paths}
    half = folder(images, fraction=0.5, validation_size=0)
    assert half.train_size == 12 and torch.bincount(half.train.labels).tolist() == [4, 4, 4]
    assert len(half.test) == 9  # val/ keeps every image of the kept classes
    with pytest.raises(UserError, match="dataset.classes = 5 but imagefolder has 3 classes"):
        folder(images, classes=5)


def cli(out: Path, root: Path, *extra: str) -> list[str]:
    args = ["run", "--out", str(out), "--progress", "log", "--device", "cpu", "--data-workers", "1"]
    settings = [
        f"dataset.root={root}",
        "dataset.name=imagefolder",
        f"dataset.image_size={SIZE}",
        "dataset.validation_size=0",
        "dataset.augment=true",
        "model.name=conv2",
        "training.batch_size=6",
        "training.training_steps=4it",
        "training.eval_every=2it",
        *extra,
    ]
    for setting in settings:
        args += ["--set", setting]
    return args


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lottery: error:") and "Traceback" not in err[0], err
    return err[0]


def test_bad_folders_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_folder(tmp_path / "bad", classes=2, train_per_class=6, val_per_class=2)
    (root / "val" / "n00000001" / "val_1_0.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert "cannot decode image" in one_line_error(capsys, cli(tmp_path / "o1", root))
    (root / "val" / "n00000001" / "val_1_0.JPEG").unlink()
    (root / "train" / "n00000002").mkdir()
    assert "n00000002 holds no images" in one_line_error(capsys, cli(tmp_path / "o2", root))
    (root / "train" / "n00000002").rmdir()
    for path in (root / "val").rglob("*"):
        if path.is_file():
            path.unlink()
    for path in sorted((root / "val").rglob("*"), reverse=True):
        path.rmdir()
    (root / "val").rmdir()
    assert "missing split folder" in one_line_error(capsys, cli(tmp_path / "o3", root))
    assert "imagefolder: set dataset.root" in one_line_error(
        capsys, ["run", "--set", "dataset.name=imagefolder", "--out", str(tmp_path / "o4")]
    )
    assert "applies to image-folder datasets only" in one_line_error(
        capsys, ["run", "--set", "dataset.name=synthetic", "--set", "dataset.classes=3", "--out", str(tmp_path / "o5")]
    )


def test_training_resumed_mid_epoch_ends_bit_identical(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lottery.experiments.run import run_experiment
    from lottery.spec import resolve

    overrides = [
        f"dataset.root={images}",
        "dataset.name=imagefolder",
        f"dataset.image_size={SIZE}",
        "dataset.validation_size=3",
        "dataset.augment=true",
        "model.name=conv2",
        "training.batch_size=6",
        "training.training_steps=7it",
        "training.eval_every=3it",
        "training.optimizer=sgd",
        "training.momentum=0.9",
        "training.lr=0.01",
    ]
    spec, _ = resolve(overrides=overrides)
    reference, _ = run_experiment(spec, None, tmp_path / "a", Runtime(progress=False, data_workers=0))
    original, calls = streaming.FolderStream.slice, {"n": 0}

    def crash_once(self: streaming.FolderStream, iteration: int, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
        calls["n"] += 1
        if calls["n"] == 6:  # iteration 5: mid-epoch 2, after the checkpoint at iteration 4
            raise KeyboardInterrupt
        return original(self, iteration, lo, hi)

    monkeypatch.setattr(streaming.FolderStream, "slice", crash_once)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, None, tmp_path / "b", Runtime(progress=False, data_workers=2, checkpoint_every=4))
    monkeypatch.setattr(streaming.FolderStream, "slice", original)
    level0 = RunDir(tmp_path / "b" / reference.path.name / "replicate_0" / "level_0")
    assert level0.read_torch("checkpoint.pt")["iteration"] == 4
    resumed, _ = run_experiment(spec, None, tmp_path / "b", Runtime(progress=False, data_workers=2))
    final = "replicate_0/level_0/final.safetensors"
    assert (resumed.path / final).read_bytes() == (reference.path / final).read_bytes()


def test_large_jpegs_decode_at_reduced_scale_close_to_full_decode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
    path = tmp_path / "big.JPEG"
    small.resize((1200, 900), Image.BICUBIC).save(path, quality=95)
    with Image.open(path) as image:
        full = image.convert("RGB")
    for item in (Item(str(path)), Item(str(path), (1, 2, 3))):
        out = decode(item, 64).astype(np.float64)
        if item.seed is None:  # the same geometry as a full-size decode, resize and crop
            short = resize_size(64)
            resized = full.resize((int(short * 1200 / 900), short), Image.BILINEAR)
            left, top = round((resized.width - 64) / 2), round((resized.height - 64) / 2)
            reference = np.asarray(resized.crop((left, top, left + 64, top + 64)), dtype=np.float64)
        else:
            r = random.Random(derive("augmentation", 1, 2, 3))
            top, left, h, w = crop_params(r, 900, 1200)
            reference_image = full.resize((64, 64), Image.BILINEAR, box=(left, top, left + w, top + h))
            if r.random() < 0.5:
                reference_image = reference_image.transpose(Image.FLIP_LEFT_RIGHT)
            reference = np.asarray(reference_image, dtype=np.float64)
        assert np.abs(out - reference).mean() < 3.0  # DCT-domain downscaling: pixels within a few levels


def test_each_rank_trains_its_slice_of_the_global_batch(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lottery import collective
    from lottery.training import distributed

    data = folder(images)
    x, y = data.stream(6, 1, 2).batch(4)
    monkeypatch.setattr(collective, "world_size", lambda: 3)
    parts = []
    for r in range(3):
        monkeypatch.setattr(collective, "rank", lambda r=r: r)
        parts.append(distributed.local_batch(data.stream(6, 1, 2), 4))  # a fresh stream per rank
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


# A network with BatchNorm (its statistics are re-estimated along the path), a train subset of 10 of the 24 images.
STABILITY = (
    "model.name=resnet20",
    "model.width=4",
    "stability.batchnorm_batches=2",
    "stability.train_subset=10",
    "stability.interpolation_points=3",
)


def test_stability_analysis_streams_image_folders(images: Path, tmp_path: Path) -> None:
    argv = cli(
        tmp_path / "o",
        images,
        *STABILITY,
        "imp.levels=1",
        'stability.rewind=["2it"]',
        "stability.controls=['random_prune']",
    )
    assert main(argv) == 0
    analyses = sorted((tmp_path / "o").rglob("analysis.json"))
    assert [p.parent.name for p in analyses] == ["level_0", "level_1"]
    kinds = set()
    for path in analyses:
        for point in json.loads(path.read_text())["points"]:
            kinds.add(point["kind"])
            assert point["diverged"] is False and len(point["copies"]) == 2
            pairs = point["data_order"]["pairs"] + (point["pruning"] or {"pairs": []})["pairs"]
            assert len(pairs) == (3 if point["kind"] == "imp" or point["kind"] == "random_prune" else 1)
            for pair in pairs:
                assert 0 <= pair["disagreement_test"] <= 1 and math.isfinite(pair["kl_test"]) and pair["kl_test"] >= 0
            for pair in point["data_order"]["pairs"]:
                assert all(math.isfinite(pair[k]) for k in ("barrier_test", "barrier_train", "loss_barrier_test"))
                curve = json.loads((path.parent / Path(pair["curve"]).name).read_text())
                assert len(curve["train_error"]) == 3 and len(curve["test_loss"]) == 3
                for key, n in (("train_error", 10), ("test_error", 9)):  # train_subset and val/ examples
                    assert all(abs(n * e / 100 - round(n * e / 100)) < 1e-9 for e in curve[key]), (key, curve)
    assert kinds == {"dense", "imp", "random_prune"}


def test_streamed_stability_analysis_equals_the_in_memory_one(images: Path, tmp_path: Path) -> None:
    """The same images decoded into tensors up front (`Splits`) and streamed from the folder: the same training
    subset, BatchNorm batches and test predictions, hence the same curves and function-space measures."""
    from lottery.data import Splits
    from lottery.experiments.context import Context
    from lottery.experiments.stability import Analyzer
    from lottery.spec import resolve

    settings = [
        f"dataset.root={images}",
        "dataset.name=imagefolder",
        f"dataset.image_size={SIZE}",
        "dataset.validation_size=0",
        "dataset.augment=true",
        "training.batch_size=4",
        *STABILITY,
    ]
    spec, _ = resolve(overrides=settings)
    streamed = Context(spec, Runtime(progress=False, data_workers=0))
    folder_data = streamed.data
    assert not isinstance(folder_data, Splits)

    def decoded(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        batches = list(folder_data.examples(name).batches())
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    (train_x, train_y), (test_x, test_y) = decoded("train"), decoded("test")
    in_memory = Context(spec, Runtime(progress=False))
    in_memory.__dict__["data"] = Splits(
        train_x, train_y, train_x[:0], train_y[:0], test_x, test_y, folder_data.num_classes, torch.zeros(3)
    )
    w1, w2 = streamed.model(1).state_dict(), streamed.model(2).state_dict()
    results = {}
    for name, ctx in (("streamed", streamed), ("in_memory", in_memory)):
        analyzer = Analyzer(ctx, RunDir(tmp_path))
        out = RunDir(tmp_path / name)
        curve = analyzer.curve(out, "curve.json", ("a", "b"), w1, w2)
        runs = RunDir(tmp_path / name / "one"), RunDir(tmp_path / name / "two")
        results[name] = curve, analyzer.predictions(runs[0], w1), analyzer.predictions(runs[1], w2)
    (curve_s, *log_p_s), (curve_m, *log_p_m) = results["streamed"], results["in_memory"]
    for key in ("train_error", "train_loss", "test_error", "test_loss"):
        assert curve_s[key] == pytest.approx(curve_m[key], rel=1e-5, abs=1e-6), key
    assert len(set(curve_s["train_loss"])) == 3  # the curve is not flat: it measures the examples it is given
    for p_s, p_m in zip(log_p_s, log_p_m):
        assert p_s.shape == (9, 3) and torch.allclose(p_s, p_m, rtol=1e-5, atol=1e-6)
