"""[dynamic] in the engine: dynamic runs and their rewound masks as networks of the store, their results, reuse,
and a run interrupted mid-training that resumes to the same bits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_tiny, tiny_spec
from lottery.errors import UserError
from lottery.experiments import dynamic as engine
from lottery.experiments.context import Context
from lottery.pruning import Mask
from lottery.store import RunDir, layout
from lottery.training import Runtime

DYNAMIC = (
    'dynamic.methods=["rigl", "gmp", "rigl_rewound"]',
    "dynamic.densities=[0.3]",
    "dynamic.update_every=10it",
    "dynamic.every=10it",
    'imp.rewind=["20it"]',
)


def _tensors(run: RunDir, name: str) -> dict[str, torch.Tensor]:
    tensors = run.read_tensors(name)
    assert tensors is not None, f"{run.path}/{name}"
    return tensors


def test_dynamic_runs_in_the_engine(store: Path) -> None:
    experiment, results = run_tiny(store, *DYNAMIC)
    rows = {row["kind"]: row for row in results["runs"]}
    assert {"dense", "rigl", "gmp", "rigl_rewound"} <= set(rows)
    rdir = layout.replicate(experiment, 0)
    spec = tiny_spec(*DYNAMIC)
    ctx = Context(spec, Runtime(progress=False))
    pool = sum(m.numel() for m in Mask.ones(ctx.model(0)).values())
    for method in ("rigl", "gmp"):
        run = layout.dynamic_run(rdir, method, 0.3, 0)
        mask = Mask(_tensors(run, "mask.safetensors"))
        assert mask.kept() == round(0.3 * pool)  # the final mask: exactly the target (lenet_40_20: every layer)
        final = _tensors(run, "final.safetensors")
        assert all(bool((final[n][~m] == 0).all()) for n, m in mask.items())
        record = run.read_json("dynamic.json")
        assert record["method"] == method and record["history"]
        assert all(entry["kept"] == (mask.kept() if method == "rigl" else entry["kept"]) for entry in record["history"])
        assert rows[method]["target_density"] == 0.3 and rows[method]["level"] is None
    assert [u["step"] for u in results["dynamic"][0]["movement"]] == [10, 20, 30, 40]  # rigl: stop 75% of 60 = 45
    gmp = layout.dynamic_run(rdir, "gmp", 0.3, 0).read_json("dynamic.json")
    assert [h["step"] for h in gmp["history"]] == [22, 32, 42, 45]  # start 20% = 12, every 10, end 75% = 45
    # GMP starts dense; RigL from a random mask at the density (ERK), both from the dense run's W_0.
    dense_start = _tensors(layout.dense(rdir), "start.safetensors")
    gmp_start = _tensors(layout.dynamic_run(rdir, "gmp", 0.3, 0), "start.safetensors")
    assert all(torch.equal(dense_start[n], gmp_start[n]) for n in dense_start)
    # rigl_rewound: RigL's final mask on W_20 of the dense run, trained from iteration 20.
    rewound = layout.dynamic_run(rdir, "rigl_rewound", 0.3, 0, 20)
    rigl_mask = _tensors(layout.dynamic_run(rdir, "rigl", 0.3, 0), "mask.safetensors")
    w20 = _tensors(layout.dense(rdir), layout.snapshot(20))
    start = _tensors(rewound, "start.safetensors")
    assert all(torch.equal(_tensors(rewound, "mask.safetensors")[n], rigl_mask[n]) for n in rigl_mask)
    assert all(torch.equal(start[n], w20[n] * rigl_mask[n]) for n in rigl_mask)
    assert rows["rigl_rewound"]["rewind_iteration"] == 20
    # Run again: everything is read back from the store, nothing trains.
    before = {p: p.stat().st_mtime_ns for p in (store / "networks").rglob("final.safetensors")}
    _, again = run_tiny(store, *DYNAMIC)
    assert again["runs"] == results["runs"]
    assert {p: p.stat().st_mtime_ns for p in (store / "networks").rglob("final.safetensors")} == before


def test_an_interrupted_dynamic_run_resumes_bit_identically(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ('dynamic.methods=["rigl"]', "dynamic.densities=[0.2]", "dynamic.update_every=5it")
    evaluate = engine.DynamicSession.evaluate

    def interrupted(self: engine.DynamicSession, lr: float) -> list:
        if self.t == 40:
            raise KeyboardInterrupt
        return evaluate(self, lr)

    monkeypatch.setattr(engine.DynamicSession, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_tiny(store, *overrides, checkpoint_every=10)
    monkeypatch.setattr(engine.DynamicSession, "evaluate", evaluate)
    experiment, _ = run_tiny(store, *overrides, checkpoint_every=10)  # resumes from the checkpoint at 30
    other, _ = run_tiny(tmp_path / "fresh", *overrides)
    a = layout.dynamic_run(layout.replicate(experiment, 0), "rigl", 0.2, 0)
    b = layout.dynamic_run(layout.replicate(other, 0), "rigl", 0.2, 0)
    assert a.read_json("dynamic.json") == b.read_json("dynamic.json")
    for name in ("final.safetensors", "mask.safetensors", "initial_mask.safetensors"):
        x, y = _tensors(a, name), _tensors(b, name)
        assert all(torch.equal(x[n], y[n]) for n in x)

    def metrics(run: RunDir) -> list[dict]:
        data = run.read("metrics.jsonl")
        assert data is not None
        rows = [json.loads(line) for line in data.decode().splitlines()]
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]

    assert metrics(a) == metrics(b)


def test_bad_dynamic_settings_are_refused_before_anything_is_written(store: Path) -> None:
    with pytest.raises(UserError, match="after the end of training"):
        run_tiny(store, 'dynamic.methods=["rigl"]', "dynamic.densities=[0.2]", "dynamic.stop=500")
    with pytest.raises(UserError, match="list 'set' too"):
        run_tiny(store, 'dynamic.methods=["set_rewound"]', "dynamic.densities=[0.2]")
    with pytest.raises(UserError, match="needs dynamic.densities"):
        run_tiny(store, 'dynamic.methods=["gmp"]')
    with pytest.raises(UserError, match="must come after start"):
        run_tiny(store, 'dynamic.methods=["gmp"]', "dynamic.densities=[0.2]", "dynamic.start=50%", "dynamic.end=40%")
    assert not store.exists() or not any(store.iterdir())


def test_the_report_draws_dynamic_methods_beside_imp(store: Path) -> None:
    from lottery.reports.dynamic_figures import accuracy_figure, movement_figure

    stats = {"mean": 0.9, "min": 0.85, "max": 0.95}
    summary = [
        {"kind": "dense", "rewind_iteration": None, "level": 0, "density": 1.0, "final_test_accuracy": stats},
        {"kind": "imp", "rewind_iteration": 0, "level": 1, "density": 0.2, "final_test_accuracy": stats},
        {
            "kind": "rigl",
            "rewind_iteration": None,
            "level": None,
            "density": 0.2,
            "target_density": 0.2,
            "final_test_accuracy": stats,
        },
        {
            "kind": "rigl_rewound",
            "rewind_iteration": 0,
            "level": None,
            "density": 0.2,
            "target_density": 0.2,
            "final_test_accuracy": stats,
        },
    ]
    figure = accuracy_figure(summary)
    assert figure is not None
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert sorted(labels) == ["IMP, k=0", "dense (100%)", "rigl", "rigl_rewound, k=0"]
    assert accuracy_figure(summary[:2]) is None  # no dynamic run: no figure
    runs = [{"kind": "gmp", "target_density": 0.2, "movement": [{"step": 10, "moved": 0.25, "kept": 3}]}]
    line = movement_figure(runs).axes[0].lines[0]
    assert list(line.get_xdata()) == [10] and list(line.get_ydata()) == [25.0]
