"""`stability.dynamic`: copies of a dynamic run from its state at k, their error barrier and the Jaccard overlap of
their final masks, in analysis.json, stability.csv, results.json and the report; the copies as networks of the store
(reuse, verify --recompute); a killed copy resumes bit-identically; bad settings refused in one line."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import run_tiny, tiny_spec
from lottery.analysis.function_space import jaccard
from lottery.errors import UserError
from lottery.experiments import dynamic, dynamic_stability, plan, views
from lottery.experiments.context import Context
from lottery.experiments.stability import Analyzer
from lottery.pruning import Mask
from lottery.store import RunDir, layout
from lottery.training import Runtime

K = 20
BASE = (
    "imp.levels=0",
    f'stability.rewind=["{K}it"]',
    'dynamic.methods=["rigl"]',
    "dynamic.densities=[0.3]",
    "dynamic.update_every=10it",
)
WITH = (*BASE, 'stability.dynamic=["rigl"]')
SUBJECT = ("rigl", 0.3, 0)


def _tensors(run: RunDir, name: str) -> dict[str, torch.Tensor]:
    tensors = run.read_tensors(name)
    assert tensors is not None, f"{run.path}/{name}"
    return tensors


def _copy(experiment: RunDir, i: int) -> RunDir:
    where = dynamic_stability.subject_dir(layout.replicate(experiment, 0), K, 0, SUBJECT)
    return layout.copy(where, "rigl", i)


def _finals(store: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (store / "networks").rglob("final.safetensors")}


def test_jaccard_of_a_hand_built_pair_of_masks() -> None:
    a = Mask({"w": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool), "v": torch.tensor([True, False])})
    b = Mask({"w": torch.tensor([[1, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.bool), "v": torch.tensor([True, True])})
    # both: w (0,0), (1,0) and v[0] = 3; either: w (0,0), (0,1), (0,2), (1,0), (1,3) and v[0], v[1] = 7
    assert jaccard(a, b) == pytest.approx(3 / 7)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, Mask({"w": ~a["w"], "v": ~a["v"]})) == 0.0


def test_the_summary_gives_barrier_and_jaccard_intervals_over_replicates() -> None:
    def point(r: int, barriers: list[float], overlaps: list[float]) -> dict:
        pairs = [{"barrier_test": b, "mask_jaccard": j} for b, j in zip(barriers, overlaps)]
        return {
            "replicate": r,
            "rewind_iteration": K,
            "level": 0,
            "kind": "set",
            "target_density": 0.2,
            "density": 0.2,
            "diverged": False,
            "data_order": {"pairs": pairs},
        }

    dense = {"replicate": 0, "rewind_iteration": K, "level": 0, "kind": "dense", "diverged": False}
    (row,) = dynamic_stability.summary([dense, point(0, [1.0, 3.0], [0.5, 0.7]), point(1, [4.0], [0.9])])
    # replicate means: barrier 2 and 4, Jaccard 0.6 and 0.9; t_{0.975, 1} = 12.706
    assert row["kind"] == "set" and row["replicates"] == 2 and row["unit"] == "replicate" and row["n"] == 2
    assert row["barrier_mean"] == pytest.approx(3.0) and row["jaccard_mean"] == pytest.approx(0.75)
    half = 12.7062 * math.sqrt(2) / math.sqrt(2)  # sd of (2, 4) = sqrt(2)
    assert row["barrier_interval"] == pytest.approx([3.0 - half, 3.0 + half], rel=1e-4)
    half = 12.7062 * (0.3 / math.sqrt(2)) / math.sqrt(2)
    assert row["jaccard_interval"] == pytest.approx([0.75 - half, 0.75 + half], rel=1e-4)


def test_copies_from_k_are_analysed_beside_imp_and_reported(store: Path) -> None:
    experiment, results = run_tiny(store, *WITH)
    rdir = layout.replicate(experiment, 0)
    run = layout.dynamic_run(rdir, *SUBJECT)
    # The dynamic run saved its whole state at k: weights, optimizer state, the handle's mask, step and history.
    state = run.read_torch(dynamic.state_name(K))
    assert state["step"] == K and [h["step"] for h in state["history"]] == [10]
    assert run.read_torch(layout.snapshot(K, optimizer=True)) is not None
    w_k = _tensors(run, layout.snapshot(K))
    for i in range(2):
        copy = _copy(experiment, i)
        start = _tensors(copy, "start.safetensors")
        assert all(torch.equal(start[n], w_k[n]) for n in w_k)  # every copy starts from the run's W_k
        history = copy.read_json("dynamic.json")["history"]
        assert history[0] == state["history"][0] and [h["step"] for h in history] == [10, 20, 30, 40]
        initial = Mask(_tensors(copy, "initial_mask.safetensors"))
        assert all(torch.equal(initial[n], state["mask"][n]) for n in state["mask"])  # the mask at k
    a, b = (_tensors(_copy(experiment, i), "final.safetensors") for i in range(2))
    assert any(not torch.equal(a[n], b[n]) for n in a)  # other data orders: other networks
    # analysis.json: a point of kind 'rigl' beside the dense network's, in the same shape
    analysis = layout.stability(rdir, K, 0).read_json("analysis.json")
    points = {p["kind"]: p for p in analysis["points"]}
    assert set(points) == {"dense", "rigl"}
    rigl = points["rigl"]
    assert rigl["target_density"] == 0.3 and rigl["seed"] == 0 and not rigl["diverged"]
    assert rigl["density"] == pytest.approx(0.3, abs=1e-3) and rigl["pruning"] is None
    (pair,) = rigl["data_order"]["pairs"]
    masks = [dynamic_stability.final_mask(Context(tiny_spec(*WITH), Runtime()), _copy(experiment, i)) for i in (0, 1)]
    assert pair["mask_jaccard"] == pytest.approx(jaccard(*masks)) and 0 < pair["mask_jaccard"] <= 1
    assert set(pair) >= set(points["dense"]["data_order"]["pairs"][0])  # every measure IMP's pairs have
    assert rigl["data_order"]["barrier_test"]["mean"] == pair["barrier_test"]
    # stability.csv, results.json and the report
    rows = list(csv.DictReader(io.StringIO((experiment.path / "stability.csv").read_text())))
    (row,) = [r for r in rows if r["kind"] == "rigl"]
    assert float(row["mask_jaccard"]) == pytest.approx(pair["mask_jaccard"]) and row["target_density"] == "0.3"
    (summary,) = results["stability"]["dynamic"]
    assert summary["kind"] == "rigl" and summary["jaccard_mean"] == pytest.approx(pair["mask_jaccard"])
    assert any(d["kind"] == "rigl" for d in results["stability"]["decisions"])
    from lottery.reports.dynamic_figures import stability_figure, stability_section
    from lottery.reports.masks_figures import mask_figures

    html = stability_section(results, experiment.path)
    assert html is not None and "<td>rigl</td>" in html and f"{pair['mask_jaccard']:.3f}" in html
    figure = stability_figure(results["stability"])
    labels = {label for ax in figure.axes for label in ax.get_legend_handles_labels()[1]}
    assert {"rigl, 30%", "dense"} <= labels
    assert mask_figures(results, experiment.path) == []  # a dynamic method is not a mask source
    # views.networks lists the copies with their own recipe kind and the point's task; the plan waits for the run
    ctx = Context(tiny_spec(*WITH), Runtime(progress=False))
    listed = [n for n in views.networks(ctx) if n.kind == "dynamic_copy"]
    assert [str(n.view) for n in listed] == [str(_copy(RunDir(Path()), i).path) for i in range(2)]
    assert {n.task for n in listed} == {f"r0/k{K}/stability/level0"}
    task = plan.index(plan.plan(ctx))[f"r0/k{K}/stability/level0"]
    assert dynamic.task_name(0, *SUBJECT) in task.deps
    links = json.loads((experiment.path / layout.RUNS_FILE).read_text())["runs"]
    assert all(links[str(n.view)].startswith("networks/dynamic_copy/") for n in listed)


def test_two_copies_with_the_same_data_order_end_identical(store: Path) -> None:
    experiment, _ = run_tiny(store, *WITH)
    ctx = Context(tiny_spec(*WITH), Runtime(progress=False))
    rdir = layout.replicate(experiment, 0)
    training = dynamic_stability.copy_training(ctx.training(0), 0, 0)
    runs = [experiment / "same_order" / f"rigl_copy{i}" for i in range(2)]
    for run in runs:
        dynamic_stability.train_copy(ctx, rdir, run, 0, K, SUBJECT, 0, training)  # both: copy 0's seeds
    record = dynamic_stability.point(ctx, Analyzer(ctx, experiment), 0, SUBJECT, runs, [], experiment / "same_order")
    (pair,) = record["data_order"]["pairs"]
    assert pair["mask_jaccard"] == 1.0
    assert abs(pair["barrier_test"]) < 1e-9 and abs(pair["barrier_train"]) < 1e-9 and pair["l2"] == 0.0
    # the analysed copies of the experiment (other data orders) do differ: the measure can tell them apart
    analysis = layout.stability(rdir, K, 0).read_json("analysis.json")
    (other,) = [p for p in analysis["points"] if p["kind"] == "rigl"][0]["data_order"]["pairs"]
    assert other["l2"] > 0 and other["mask_jaccard"] < 1.0


def test_adding_stability_dynamic_to_a_finished_spec_trains_only_the_copies(store: Path) -> None:
    run_tiny(store, *BASE)
    before = _finals(store)
    experiment, _ = run_tiny(store, *WITH)
    after = _finals(store)
    assert {p: t for p, t in after.items() if p in before} == before  # nothing trained before is trained again
    assert sorted(p.parent.parent.name for p in set(after) - set(before)) == ["dynamic_copy", "dynamic_copy"]
    run_tiny(store, *WITH)
    assert _finals(store) == after  # and once finished, nothing trains


def test_a_run_trained_without_its_state_at_k_is_retrained_to_the_same_bits(store: Path) -> None:
    spec = ("imp.levels=0", 'dynamic.methods=["rigl"]', "dynamic.densities=[0.3]", "dynamic.update_every=10it")
    experiment, _ = run_tiny(store, *spec)  # no stability analysis: the run saves no state at k
    run = layout.dynamic_run(layout.replicate(experiment, 0), *SUBJECT)
    final = run.read("final.safetensors")
    assert run.read_torch(dynamic.state_name(K)) is None
    experiment, results = run_tiny(store, *WITH)
    run = layout.dynamic_run(layout.replicate(experiment, 0), *SUBJECT)
    assert run.read("final.safetensors") == final  # retrained once for its state at k: the same network
    assert run.read_torch(dynamic.state_name(K))["step"] == K
    assert results["stability"]["dynamic"][0]["kind"] == "rigl"


def test_a_killed_copy_resumes_bit_identically(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluate = dynamic.DynamicSession.evaluate

    def interrupted(self: dynamic.DynamicSession, lr: float) -> list:
        if self.job.start == K and self.t == 40 and "copy1" in str(self.run.path):
            raise KeyboardInterrupt
        return evaluate(self, lr)

    monkeypatch.setattr(dynamic.DynamicSession, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_tiny(store, *WITH, checkpoint_every=10)
    assert _copy(_experiment(store), 1).exists("checkpoint.pt")  # killed at 40, checkpointed at 30
    monkeypatch.setattr(dynamic.DynamicSession, "evaluate", evaluate)
    experiment, _ = run_tiny(store, *WITH, checkpoint_every=10)  # resumes copy 1 from its checkpoint at 30
    fresh, _ = run_tiny(tmp_path / "fresh", *WITH)
    a, b = _copy(experiment, 1), _copy(fresh, 1)
    assert a.read_json("dynamic.json") == b.read_json("dynamic.json")
    for name in ("final.safetensors", "mask.safetensors", "initial_mask.safetensors"):
        x, y = _tensors(a, name), _tensors(b, name)
        assert all(torch.equal(x[n], y[n]) for n in x)


def _experiment(store: Path) -> RunDir:
    (path,) = [p for p in store.iterdir() if len(p.name) == 16 and p.is_dir()]
    return RunDir(path)


def test_bad_stability_dynamic_settings_are_refused_in_one_line(store: Path) -> None:
    with pytest.raises(UserError, match=r"stability.dynamic names 'set', not a method dynamic.methods runs"):
        run_tiny(store, *BASE, 'stability.dynamic=["set"]')
    with pytest.raises(UserError, match=r"'rigl_rewound', not a method .* \(allowed: rigl\)"):
        run_tiny(store, *BASE, 'dynamic.methods=["rigl", "rigl_rewound"]', 'stability.dynamic=["rigl_rewound"]')
    with pytest.raises(UserError, match=r"stability.dynamic needs stability.rewind"):
        run_tiny(store, *BASE[2:], 'stability.dynamic=["rigl"]')
    assert not store.exists() or not any(store.iterdir())


def test_the_cli_refuses_a_method_not_run_with_exit_2(store: Path, capsys: pytest.CaptureFixture) -> None:
    from lottery.cli.main import main

    code = main(
        [
            "run",
            "--preset",
            "lenet_dynamic",
            "--out",
            str(store),
            "--set",
            'stability.rewind=["0it"]',
            "--set",
            'stability.dynamic=["snip"]',
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "stability.dynamic names 'snip'" in err[0]


@pytest.mark.slow  # about 20 s: six networks retrained
def test_verify_recompute_retrains_the_copies_from_their_recipes(store: Path, capsys: pytest.CaptureFixture) -> None:
    from lottery.cli.main import main

    run_tiny(store, *WITH)
    capsys.readouterr()
    assert main(["verify", str(store), "--recompute", "all"]) == 0
    out = capsys.readouterr().out
    # dense run, rigl run, the dense network's two copies and the rigl run's two copies
    assert "6 network(s) recomputed from their recipes, 0 not bit-identical" in out


masks = st.lists(st.booleans(), min_size=6, max_size=6).map(lambda b: Mask({"w": torch.tensor(b).reshape(2, 3)}))


@given(a=masks, b=masks)
def test_jaccard_is_symmetric_bounded_and_one_only_for_the_same_mask(a: Mask, b: Mask) -> None:
    value = jaccard(a, b)
    assert value == jaccard(b, a) and 0.0 <= value <= 1.0
    both, either = int((a["w"] & b["w"]).sum()), int((a["w"] | b["w"]).sum())
    assert value == (both / either if either else 1.0)
    assert (value == 1.0) == torch.equal(a["w"], b["w"])
