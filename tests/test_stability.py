"""Distances, error barriers, BatchNorm handling and an end-to-end stability sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import run_tiny, tiny_spec
from lottery.analysis import barrier, distances, interpolation_curve
from lottery.analysis.function_space import disagreement, jaccard, mean_kl
from lottery.experiments.context import Context
from lottery.experiments.plan import execute, plan
from lottery.experiments.stability import copy_training, distance_mask
from lottery.pruning import Mask
from lottery.reports import notes, write_comparison, write_report
from lottery.spec import TrainingSpec
from lottery.store import experiment_dir
from lottery.store.layout import walk
from lottery.training import Runtime


def test_distances_by_hand_count_only_kept_coordinates() -> None:
    a = {"w": torch.tensor([[3.0, 0.0], [100.0, 1.0]]), "b": torch.tensor([7.0])}
    b = {"w": torch.tensor([[0.0, 4.0], [-50.0, 1.0]]), "b": torch.tensor([-7.0])}
    mask = Mask({"w": torch.tensor([[True, True], [False, True]])})  # 'b' is not prunable: never counted
    d = distances(a, b, mask)
    # kept coordinates: a = (3, 0, 1), b = (0, 4, 1): difference (3, -4, 0) -> L2 = 5
    assert d["l2"] == pytest.approx(5.0)
    cosine = 1 / (math.sqrt(10) * math.sqrt(17))
    assert d["angle_degrees"] == pytest.approx(math.degrees(math.acos(cosine)))
    assert d["normalized_l2"] == pytest.approx(5 / math.sqrt(10))  # by the reference (a) masked norm
    assert distances(a, b, mask, reference=b)["normalized_l2"] == pytest.approx(5 / math.sqrt(17))
    assert distances(a, a, mask)["l2"] == 0 and distances(a, a, mask)["angle_degrees"] == pytest.approx(0, abs=1e-6)


def test_distance_params_all_adds_biases_and_batchnorm_but_never_buffers_or_pruned_coordinates() -> None:
    model = WithBatchNorm()
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: v.clone() for k, v in a.items()}
    b["fc.bias"] += 3.0  # 3 coordinates, each 3 apart
    b["bn.weight"] += 4.0  # 3 coordinates, each 4 apart
    b["bn.running_mean"] += 100.0  # a buffer: never counted
    b["fc.weight"][0, 0] += 1000.0  # pruned below: never counted
    mask = Mask({"fc.weight": torch.ones(3, 4, dtype=torch.bool), "out.weight": torch.ones(2, 3, dtype=torch.bool)})
    mask["fc.weight"][0, 0] = False
    assert distances(a, b, distance_mask(mask, model, "prunable"))["l2"] == 0
    assert distances(a, b, distance_mask(mask, model, "all"))["l2"] == pytest.approx(math.sqrt(3 * 9 + 3 * 16))
    assert list(distance_mask(mask, model, "all")) == [name for name, _ in model.named_parameters()]


def test_barrier_definition() -> None:
    assert barrier([1.0, 3.0, 2.0]) == pytest.approx(3.0 - 1.5)
    assert barrier([2.0, 1.0, 2.0]) == 0.0


class TwoPaths(nn.Module):
    """x -> relu(hidden) -> logits; endpoints use different hidden units, the midpoint neither."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(1, 2, bias=False)
        self.out = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def test_barrier_on_a_toy_model_with_a_known_curve() -> None:
    model = TwoPaths()
    bias = torch.tensor([0.0, 0.6])  # class 1 scores 0.6; class 0 scores (alpha² + (1 - alpha)²)
    w1 = {
        "hidden.weight": torch.tensor([[1.0], [0.0]]),
        "out.weight": torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
        "out.bias": bias,
    }
    w2 = {
        "hidden.weight": torch.tensor([[0.0], [1.0]]),
        "out.weight": torch.tensor([[0.0, 1.0], [0.0, 0.0]]),
        "out.bias": bias,
    }
    x, y = torch.ones(8, 1), torch.zeros(8, dtype=torch.long)
    curve = interpolation_curve(model, w1, w2, [0.0, 0.25, 0.5, 0.75, 1.0], {"test": (x, y)})
    assert curve["test_error"] == [0.0, 0.0, 100.0, 0.0, 0.0]
    assert barrier(curve["test_error"]) == 100.0


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bn(self.fc(x)).relu())


def test_batchnorm_recompute_and_interpolate_are_honoured() -> None:
    torch.manual_seed(0)
    model = WithBatchNorm()
    w1 = {k: v.clone() for k, v in model.state_dict().items()}
    w1["bn.running_mean"] = torch.tensor([5.0, 5.0, 5.0])
    w2 = {k: (v.clone() * 2 if v.is_floating_point() else v.clone()) for k, v in w1.items()}
    w2["bn.running_mean"] = torch.tensor([-5.0, -5.0, -5.0])
    x, y = torch.randn(64, 4), torch.zeros(64, dtype=torch.long)
    interpolation_curve(model, w1, w2, [0.5], {"test": (x, y)}, batchnorm="interpolate")
    assert torch.allclose(model.bn.running_mean, torch.zeros(3))  # halfway between +5 and -5
    interpolation_curve(
        model, w1, w2, [0.5], {"test": (x, y)}, batchnorm="recompute", bn_data=x, bn_batch_size=16, bn_batches=2
    )
    with torch.no_grad():
        features = model.fc(x[:32])  # the interpolated fc on the first two batches
    assert torch.allclose(model.bn.running_mean, features.mean(0), atol=1e-5)
    assert not torch.allclose(model.bn.running_mean, torch.zeros(3))


def test_copy_seeds_are_independent_of_the_chains() -> None:
    base = TrainingSpec(data_order_seed=3, augmentation_seed=4, init_seed=5)
    copies = [copy_training(base, i) for i in range(4)]
    assert len({c.data_order_seed for c in copies} | {3}) == 5  # copy 0 included: none reuses the chain's noise
    assert len({c.augmentation_seed for c in copies} | {4}) == 5
    assert all(c.init_seed == 5 for c in copies) and copy_training(base, 1) == copies[1]


def test_stability_sweep_end_to_end(store: Path) -> None:
    experiment, results = run_tiny(
        store,
        "imp.levels=1",
        "stability.rewind=[0, '20it']",
        "stability.controls=['random_prune', 'random_reinit']",
        "stability.interpolation_points=4",
        "stability.train_subset=300",
    )
    points = results["stability"]["points"]
    subjects = ((0, "dense"), (1, "imp"), (1, "random_prune"), (1, "random_reinit"))
    assert {(p["rewind_iteration"], p["level"], p["kind"]) for p in points} == {
        (k, level, kind) for k in (0, 20) for level, kind in subjects
    }
    for point in points:
        assert point["diverged"] is False
        pairs = point["data_order"]["pairs"]
        assert len(pairs) == 1 and len(point["copies"]) == 2
        pair = pairs[0]
        a, b = experiment.path / pair["a"], experiment.path / pair["b"]
        assert a != b
        # Recompute the distance from the saved files with plain PyTorch.
        wa, wb = load_file(a / "final.safetensors"), load_file(b / "final.safetensors")
        mask = load_file(a / "mask.safetensors")
        assert torch.equal(mask["out.weight"], load_file(b / "mask.safetensors")["out.weight"])
        diff = torch.cat([(wa[k].double() - wb[k].double())[mask[k]] for k in mask])
        assert float(diff.norm()) == pytest.approx(pair["l2"], rel=1e-9)
        # The distance relative to how far the copies travelled from their (shared) start, recomputed by hand.
        start = load_file(a / "start.safetensors")
        moved = [
            float(torch.cat([(w[k].double() - start[k].double())[mask[k]] for k in mask]).norm()) for w in (wa, wb)
        ]
        assert pair["travelled_l2"] == pytest.approx(pair["l2"] / (sum(moved) / 2), rel=1e-9)
        assert 0 <= pair["disagreement_test"] <= 1 and pair["kl_test"] >= 0 and 0 < pair["mask_jaccard"] <= 1
        assert (
            pair["loss_barrier_test"] >= 0
            and len(json.loads((experiment / pair["curve"]).path.read_text())["test_loss"]) == 4
        )
        curve = (experiment / pair["curve"]).path
        assert curve.exists() and len(json.loads(curve.read_text())["test_error"]) == 4
        mean_barrier = sum(p["barrier_test"] for p in pairs) / len(pairs)
        assert point["data_order"]["stable_mean_barrier"] == (mean_barrier < 2.0)
        assert point["data_order"]["stable"] == all(p["barrier_test"] < 2.0 for p in pairs)
        if point["kind"] in ("imp", "random_prune"):
            assert len(point["pruning"]["pairs"]) == 2
        else:  # no pruning distance for the dense network or a reinitialized subnetwork (not from W_k)
            assert point["pruning"] is None
        # Copies differ (independent data order) but share their start.
        assert not torch.equal(wa["out.weight"], wb["out.weight"])
        assert torch.equal(
            load_file(a / "start.safetensors")["out.weight"], load_file(b / "start.safetensors")["out.weight"]
        )
    csv_rows = (experiment.path / "stability.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 8 + 4 * 2  # header, 8 data-order pairs, 4 subnetworks (imp, random_prune) x 2
    assert not any(",random_reinit," in row and ",pruning," in row for row in csv_rows)

    html = write_report(experiment.path)
    figures = {
        "stability_l2_vs_rewind",
        "stability_normalized_l2_vs_rewind",
        "stability_angle_degrees_vs_rewind",
        "error_barrier_vs_rewind",
        "stability_accuracy_vs_rewind",
        "interpolation_curves",
        "accuracy_vs_remaining",
    }
    for name in figures:
        assert (html.parent / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
        assert (html.parent / f"{name}.svg").stat().st_size > 1000, name
    compared = write_comparison([experiment.path, experiment.path], experiment.path.parent / "cmp", ["a", "b"])
    assert (compared.parent / "compare_stability_vs_rewind.png").read_bytes().startswith(b"\x89PNG")
    page = html.read_text()
    # Footnotes link to docs/measured.md, relative to the report, where this checkout has it.
    for anchor in ("the-copies-sgd-noise", "distances", "stability-to-pruning", "stable", "controls"):
        assert f'measured.md#{anchor}"' in page, anchor
    href = page.split('measured.md#the-copies-sgd-noise"')[0].rsplit('href="', 1)[1] + "measured.md"
    assert (html.parent / href).resolve() == (Path(__file__).parents[1] / "docs" / "measured.md").resolve()
    headings = {line.lstrip("#").strip() for line in (html.parent / href).read_text().splitlines() if line[:1] == "#"}
    assert "The copies' SGD noise" in headings and "Stability to pruning" in headings
    assert "<h2>Stability</h2>" in page and "stable (mean)" in page
    assert page.count("<img") + page.count("<svg") >= len(figures) and "http://" not in page.replace(
        "http://www.w3.org", ""
    )


def test_copies_trained_together_give_the_analysis_of_copies_trained_alone(tmp_path: Path) -> None:
    overrides = (
        "imp.levels=1",
        "stability.rewind=['20it']",
        "stability.copies=3",
        "stability.controls=['random_prune']",
        "stability.interpolation_points=3",
        "stability.train_subset=300",
    )
    together, results = run_tiny(tmp_path / "together", *overrides, batch_copies=True)
    alone, reference = run_tiny(tmp_path / "alone", *overrides, batch_copies=False)
    files = sorted(str(p.relative_to(together.path)) for p in walk(together.path, "*") if p.is_file())
    assert files == sorted(str(p.relative_to(alone.path)) for p in walk(alone.path, "*") if p.is_file())
    points, expected = results["stability"]["points"], reference["stability"]["points"]
    assert [(p["level"], p["kind"]) for p in points] == [(p["level"], p["kind"]) for p in expected]
    for point, want in zip(points, expected):
        for measure in ("data_order", "pruning"):
            if want[measure] is None:
                continue
            for got_pair, want_pair in zip(point[measure]["pairs"], want[measure]["pairs"]):
                assert got_pair["l2"] == pytest.approx(want_pair["l2"], rel=1e-3, abs=1e-4)
                assert got_pair["angle_degrees"] == pytest.approx(want_pair["angle_degrees"], rel=1e-3, abs=1e-2)


def test_the_order_tasks_run_in_does_not_change_any_weight(tmp_path: Path) -> None:
    """Executors may run ready tasks in any order: every run must come out the same (the dense network's stability
    copies are trained by the first analysed level's task, which the others depend on)."""
    spec = tiny_spec(
        "imp.levels=1",
        "stability.rewind=[0]",
        "stability.copies=2",
        "stability.controls=['random_reinit']",
        "controls.kinds=['random_prune']",
        "stability.interpolation_points=3",
        "stability.train_subset=300",
    )
    stores, orders = {}, {}
    for order in ("first_ready", "last_ready"):
        ctx = Context(spec, Runtime(progress=False))
        tasks, done, ran = plan(ctx), set(), []
        orders[order] = ran
        while len(done) < len(tasks):
            ready = [t for t in tasks if t.name not in done and all(d in done for d in t.deps)]
            # last_ready: the analysis at level 0 before IMP level 1, the one at level 1 before the level's control
            task = ready[0] if order == "first_ready" else ready[-1]
            execute(task, ctx, experiment_dir(tmp_path / order, spec))
            done.add(task.name)
            ran.append(task.name)
        stores[order] = {
            str(p.relative_to(tmp_path / order)): p.read_bytes() for p in walk((tmp_path / order), "*.safetensors")
        }
        assert len(stores[order]) > 20
    assert orders["first_ready"] != orders["last_ready"]  # the orders really differ
    assert stores["first_ready"] == stores["last_ready"]


def test_stability_copies_use_noise_independent_of_the_mask(store: Path) -> None:
    """The mask was chosen by the IMP chain's SGD noise: no copy may reuse it ("Stabilizing" §2). Copy 0 used to be
    the IMP level (and, at k = 0, the dense run) itself, trained with the chain's seeds."""
    experiment, results = run_tiny(
        store,
        "imp.levels=1",
        "stability.rewind=[0]",
        "stability.interpolation_points=3",
        "stability.train_subset=300",
    )
    points = {p["kind"]: p for p in results["stability"]["points"]}
    chain = tiny_spec().training
    for point in points.values():
        assert point["chain_seeds"] == {
            "init_seed": chain.init_seed,
            "data_order_seed": chain.data_order_seed,
            "augmentation_seed": chain.augmentation_seed,
        }
        for copy in point["copies"]:
            assert copy["data_order_seed"] != chain.data_order_seed
            assert copy["augmentation_seed"] != chain.augmentation_seed
            assert "/stability/" in copy["path"]
    level_run, dense_run = "replicate_0/rewind_0it/level_1", "replicate_0/level_0"
    for pair in points["imp"]["pruning"]["pairs"]:
        assert pair["subnetwork"] != level_run and pair["full"] != dense_run
    # Copy 0 starts where the level run starts (m ⊙ W_0, same mask) but trains with other noise.
    copy0, level = experiment.path / points["imp"]["copies"][0]["path"], experiment.path / level_run
    assert torch.equal(
        load_file(copy0 / "start.safetensors")["hidden.0.weight"],
        load_file(level / "start.safetensors")["hidden.0.weight"],
    )
    assert not torch.equal(
        load_file(copy0 / "final.safetensors")["hidden.0.weight"],
        load_file(level / "final.safetensors")["hidden.0.weight"],
    )


def test_function_space_measures_by_hand() -> None:
    log_p = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]).log()
    log_q = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.7, 0.3]]).log()
    assert disagreement(log_p, log_q) == pytest.approx(1 / 3)  # rows 1 and 2 tie (argmax 0 both); row 3 differs
    kl = [
        0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4),
        0.0,
        0.2 * math.log(0.2 / 0.7) + 0.8 * math.log(0.8 / 0.3),
    ]
    lk = [
        0.6 * math.log(0.6 / 0.9) + 0.4 * math.log(0.4 / 0.1),
        0.0,
        0.7 * math.log(0.7 / 0.2) + 0.3 * math.log(0.3 / 0.8),
    ]
    assert mean_kl(log_p, log_q) == pytest.approx(sum(0.5 * (x + y) for x, y in zip(kl, lk)) / 3)
    assert mean_kl(log_p, log_q) == pytest.approx(mean_kl(log_q, log_p)) and mean_kl(log_p, log_p) == 0


def test_jaccard_by_hand() -> None:
    a = Mask({"w": torch.tensor([True, True, False, False]), "v": torch.tensor([True])})
    b = Mask({"w": torch.tensor([True, False, True, False]), "v": torch.tensor([True])})
    assert jaccard(a, b) == pytest.approx(2 / 4)  # both keep w[0] and v; either keeps w[0], w[1], w[2], v
    assert jaccard(a, a) == 1.0


def test_loss_curve_by_hand() -> None:
    model = nn.Linear(1, 2, bias=False)
    w1, w2 = {"weight": torch.tensor([[2.0], [0.0]])}, {"weight": torch.tensor([[0.0], [2.0]])}
    x, y = torch.ones(4, 1), torch.zeros(4, dtype=torch.long)
    curve = interpolation_curve(model, w1, w2, [0.0, 0.5, 1.0], {"test": (x, y)})
    # logits (2α, 2(1 − α)); the loss of class 0 is log(1 + e^{2(1 − α) − 2α})
    expected = [math.log(1 + math.exp(2 - 4 * alpha)) for alpha in (0.0, 0.5, 1.0)]
    assert curve["test_loss"] == pytest.approx(expected)
    # the maximum is at α = 0: log(1 + e²) − (log(1 + e²) + log(1 + e⁻²)) / 2 = 2 / 2
    assert barrier(curve["test_loss"]) == pytest.approx(1.0)


def test_report_notes_follow_the_spec_and_link_only_to_docs_that_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tiny_spec("stability.rewind=[0]", "stability.distance_params=all", "controls.kinds=['random_reinit']")
    html = notes.footnotes(spec, Path.cwd())
    assert "of all parameters" in html and "pairing = &#x27;paired&#x27;" in html and 'href="' in html
    assert notes.marker("stable", spec) == '<sup><a href="#note-stable">7</a></sup>'  # early_stop, controls, ...
    assert notes.marker("warmup", spec) == ""  # no warmup, no note
    monkeypatch.setattr(notes, "MEASURED", "docs/absent.md")
    html = notes.footnotes(spec, Path.cwd())
    assert 'href="' not in html and "docs/absent.md § stable" in html
