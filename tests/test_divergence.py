"""Divergence: a NaN or infinite training loss stops the run at the next evaluation point. The run's
metrics, summary and the experiment's results record it as diverged (never as an accuracy), the table
prints 'diverged', and no later IMP level is trained from it. A diverged run counts as finished: running
the command again changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lottery.errors import UserError
from lottery.experiments import imp
from lottery.experiments.context import Context
from lottery.experiments.run import run_experiment
from lottery.spec import resolve
from lottery.store import layout
from lottery.store.layout import walk
from lottery.training import Runtime, loop
from reliability_helpers import TINY, cli_args, experiment_dir, run_cli, trained, tree

SGD_BLOWUP = ("training.optimizer=sgd", "training.lr=1e6")  # the loss is NaN within a few steps


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def table_row(table: str, kind: str, level: int) -> str:
    rows = [line for line in table.splitlines() if line.split()[:1] == [kind] and line.split()[2] == str(level)]
    assert len(rows) == 1, table
    return rows[0]


def test_dense_run_with_exploding_lr_stops_and_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    argv = cli_args(store, *SGD_BLOWUP, "imp.levels=2", 'imp.rewind=["0it", "40it"]', 'controls.kinds=["random_prune"]')
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    experiment = experiment_dir(store)
    dense = experiment / "replicate_0" / "level_0"

    metrics = read_jsonl(dense / "metrics.jsonl")
    assert metrics[-1] == {**metrics[-1], "iteration": 20, "split": "train", "loss": None, "diverged": True}
    assert max(row["iteration"] for row in metrics) == 20  # stopped there, 40 iterations before the end
    summary = json.loads((dense / "summary.json").read_text())
    assert summary["diverged"] is True and summary["diverged_at"] == 20
    assert summary["final_test_accuracy"] is None and summary["early_stop_test_accuracy"] is None

    results = json.loads((experiment / "results.json").read_text())
    (row,) = results["runs"]
    assert row["kind"] == "dense" and row["diverged"] is True and row["diverged_at"] == 20
    assert row["final_test_accuracy"] is None
    (aggregate,) = results["summary"]
    assert aggregate["diverged"] == 1 and aggregate["final_test_accuracy"] is None
    assert "diverged" in table_row(out, "dense", 0)

    assert "train loss diverged" in err
    assert f"{dense} diverged at iteration 20; IMP level 1 and later levels (and their controls) skipped" in err
    assert walk(experiment / "replicate_0", "summary.json") == [dense / "summary.json"]  # nothing pruned from NaN

    # A diverged run is finished: the same command trains nothing and changes nothing.
    before = tree(store)
    code, out_again, err = run_cli(argv, capsys)
    assert code == 0 and not trained(err) and out_again == out
    assert tree(store) == before


def test_nan_loss_at_an_imp_level_skips_later_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NaN injected into the loss from the 30th step of IMP level 1 on (the dense run has 60 steps)."""
    calls = []

    def make(training):  # noqa: ANN001, ANN202  (the training loop's loss, by training.loss)
        def cross_entropy(logits, labels, reduction="mean"):  # noqa: ANN001, ANN202
            if reduction != "mean":  # evaluation
                return F.cross_entropy(logits, labels, reduction=reduction)
            calls.append(1)
            loss = F.cross_entropy(logits, labels)
            return loss * float("nan") if len(calls) > 60 + 29 else loss

        return cross_entropy

    store = tmp_path / "store"
    argv = cli_args(store, "imp.levels=3", 'controls.kinds=["random_prune"]')
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "losses", SimpleNamespace(make=make))
        code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    # dense: 60 steps; level 1: 40 steps (NaN from step 29, detected at the evaluation at 40); its control:
    # 20 steps (NaN from the start, detected at 20); levels 2 and 3 never start.
    assert len(calls) == 60 + 40 + 20

    experiment = experiment_dir(store)
    level_1 = experiment / "replicate_0" / "rewind_0it" / "level_1"
    assert json.loads((level_1 / "summary.json").read_text())["diverged_at"] == 40
    assert read_jsonl(level_1 / "metrics.jsonl")[-1]["diverged"] is True
    assert not (level_1.parent / "level_2" / "summary.json").exists()  # never trained
    assert not (level_1.parent / "level_3" / "summary.json").exists()
    assert f"{level_1} diverged at iteration 40; IMP level 2 and later levels (and their controls) skipped" in err

    results = json.loads((experiment / "results.json").read_text())
    by_kind = {(r["kind"], r["level"]): r for r in results["runs"]}
    assert set(by_kind) == {("dense", 0), ("imp", 1), ("random_prune", 1)}
    assert by_kind[("dense", 0)]["diverged"] is False and by_kind[("dense", 0)]["final_test_accuracy"] > 0.5
    for key in (("imp", 1), ("random_prune", 1)):
        assert by_kind[key]["diverged"] is True and by_kind[key]["final_test_accuracy"] is None
    assert "diverged" not in table_row(out, "dense", 0)
    assert "diverged" in table_row(out, "imp", 1) and "diverged" in table_row(out, "random_prune", 1)

    code, _, err = run_cli(argv, capsys)  # unpatched now: still nothing to retrain
    assert code == 0 and not trained(err)


def test_rewind_point_after_divergence_is_refused_not_retried_forever(tmp_path: Path) -> None:
    """W_k for a k the diverged dense run never reached cannot be produced by retraining it."""
    spec, _ = resolve(preset="lenet_300_100", overrides=[*TINY, *SGD_BLOWUP, 'imp.rewind=["40it"]'])
    experiment, _ = run_experiment(spec, None, tmp_path, Runtime(progress=False), dense_only=True)
    ctx = Context(spec, Runtime(progress=False))
    with pytest.raises(UserError, match="diverged at iteration 20, before rewind point 40; lower training.lr"):
        imp.rewind_state(ctx, layout.replicate(experiment, 0), 0, 40)


def test_a_diverged_chain_with_a_stability_analysis_reports_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dense run diverges after the rewind point: the analysis at level 2 has no subnetwork to study. It is
    marked diverged, the run completes with its results, and the 'skipped' line is printed once."""
    store = tmp_path / "store"
    stability = ('stability.rewind=["10it"]', "stability.levels=[0, 2]", "stability.interpolation_points=3")
    controls = ('controls.kinds=["random_prune", "random_reinit"]', 'stability.controls=["random_prune"]')
    argv = cli_args(store, *SGD_BLOWUP, "imp.levels=2", 'imp.rewind=["10it"]', *stability, *controls)
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert err.count("IMP level 1 and later levels (and their controls) skipped") == 1, err
    experiment = experiment_dir(store)
    points = json.loads((experiment / "results.json").read_text())["stability"]["points"]
    assert [(p["level"], p["kind"], p["diverged"]) for p in points] == [
        (0, "dense", True),  # its copies diverge like the dense run
        (2, "imp", True),
        (2, "random_prune", True),
    ]
    assert "diverged" in table_row(out, "dense", 0)


def test_a_finite_but_exploding_loss_is_divergence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Adam at lr 10^6: the loss stays finite (about 1e20) while the accuracy is at chance. The rule: a mean
    training loss above 1000 x ln(classes) (or non-finite, or non-finite weights) is divergence."""
    store = tmp_path / "store"
    argv = cli_args(store, "training.optimizer=adam", "training.lr=1e6", "imp.levels=1", 'imp.rewind=["0it"]')
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    dense = experiment_dir(store) / "replicate_0" / "level_0"
    last = read_jsonl(dense / "metrics.jsonl")[-1]
    assert last["diverged"] is True and last["loss"] > 1000 * 2.303  # finite, and recorded
    summary = json.loads((dense / "summary.json").read_text())
    assert summary["diverged"] is True and summary["final_test_accuracy"] is None
    assert "IMP level 1 and later levels (and their controls) skipped" in err
    trained = walk(experiment_dir(store) / "replicate_0", "summary.json")
    assert [p.parent.name for p in trained] == ["level_0"]  # nothing pruned from those weights


def test_non_finite_weights_are_divergence() -> None:
    model = torch.nn.Linear(3, 2)
    assert not loop.diverged(0.5, model, 10)
    assert loop.diverged(float("nan"), model, 10) and loop.diverged(2303.0, model, 10)
    assert not loop.diverged(2302.0, model, 10)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    assert loop.diverged(0.5, model, 10)
