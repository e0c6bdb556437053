"""Rewind-point search: the search logic on fabricated stability, a network whose stability point is known by
construction, agreement with a full sweep of the same grid, the budget, bit-exact prefixes and the CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_spec
from lottery.cli.main import main
from lottery.experiments import imp
from lottery.experiments.context import Context
from lottery.experiments.rewind_search import (
    BudgetSpent,
    bracket_search,
    default_grid,
    run_search,
    search_spec,
)
from lottery.experiments.run import run_experiment
from lottery.experiments.sweep import expand
from lottery.reports import write_report
from lottery.spec import spec_hash
from lottery.store import RunDir, layout
from lottery.store.layout import walk
from lottery.training import Runtime
from lottery.training.optimizer import OPTIMIZERS as _ALL

T = 30  # the learning rate drops by 1e-6 at T: copies from W_k, k >= T, cannot move apart; before T they do
KNOWN = [
    "dataset.name=synthetic_cifar100",  # 100 classes: hard enough that copies trained apart disagree
    "training.optimizer='sgd'",
    "training.lr=0.3",
    f"training.milestone_steps=['{T}it']",
    "training.gamma=1e-6",
    "imp.levels=1",
    "stability.interpolation_points=5",
    "stability.train_subset=300",
    "stability.threshold=0.1",  # below one test example (0.2 points): stable means no barrier at all
    "stability.copies=3",  # one replicate: the decision's interval is a jackknife over 3 copies
]
COPIES = 3  # max_copies: no extra copies (an undecided probe counts as not stable)
OPTIMIZERS = {"sgd", "adam", "adamw", "radam"}  # the example sweeps compare these (and SGD + warmup)
assert OPTIMIZERS <= set(_ALL)
GRID = ["0it", "8it", "16it", "32it", "48it"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=8, unique=True), st.integers(0, 600), st.integers(0, 12))
def test_bracket_search_finds_a_known_stability_point(grid: list[int], t: int, refine: int) -> None:
    grid = sorted(grid)
    probed: list[int] = []

    def stable(k: int) -> bool:
        probed.append(k)
        return k >= t

    k, (lo, hi), complete = bracket_search(stable, grid, refine)
    assert complete and len(probed) == len(set(probed))  # no point is probed twice
    earliest_on_grid = next((g for g in grid if g >= t), None)
    if earliest_on_grid is None:
        assert k is None and hi is None and lo == grid[-1]
    elif earliest_on_grid == grid[0]:
        assert k == grid[0] and lo is None and probed == [grid[0]]
    else:
        assert lo < t <= hi == k <= earliest_on_grid  # t within the bracket, refined inside the grid's
        if refine == 0:
            assert k == earliest_on_grid  # what a full sweep over the grid finds
            assert len(probed) <= 2 + (len(grid) - 1).bit_length()  # binary search, not a sweep
        if refine >= 12:
            assert hi - lo == 1 and k == t


def test_bracket_search_stops_when_the_budget_is_spent() -> None:
    calls = []

    def stable(k: int) -> bool:
        if len(calls) == 3:
            raise BudgetSpent
        calls.append(k)
        return k >= 37

    k, bracket, complete = bracket_search(stable, [0, 10, 20, 40, 80, 160], refine=5)
    assert not complete and calls == [0, 160, 20] and bracket == [20, 160] and k == 160


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunDir, dict]:
    root = tmp_path_factory.mktemp("rewind") / "runs"
    experiment, found = run_search(
        tiny_spec(*KNOWN), None, root, Runtime(progress=False), grid=GRID, refine=3, max_copies=COPIES
    )
    return root, experiment, found


def test_search_finds_the_stability_point_known_by_construction(known: tuple[Path, RunDir, dict]) -> None:
    _, experiment, found = known
    for subject in ("dense", "imp"):
        lo, hi = found[subject]["bracket"]
        assert found[subject]["complete"] and lo < T <= hi and found[subject]["k"] == hi, subject
        assert hi - lo == 2  # grid bracket [16, 32], bisected at 24, 28 and 30
        probes = {p["k"]: p for p in found[subject]["probes"]}
        assert probes[hi]["decision"] == "stable" and probes[hi]["barrier_mean"] == 0
        assert probes[hi]["barrier_interval"] == [0, 0] and probes[hi]["pairs"] == [[0, 0, 0]]
        assert probes[lo]["decision"] != "stable" and probes[hi]["unit"] == "copy" and probes[hi]["copies"] == 3
        assert {"k", "pairs", "barrier_mean", "barrier_interval", "decision", "accuracy", "matching"} <= set(probes[hi])
        assert probes[hi]["matching"] in ("matching", "not_matching", "undecided")
        # Beyond k = 30 the grid holds 32 and 48, both probed by the binary search already: stable, so monotone.
        assert found[subject]["monotone"] is True and found[subject]["offending"] == []
        assert found[subject]["interval"][1] == hi and found[subject]["interval"][0] in (None, *probes)
    assert found["imp"]["probes"][0]["control"]["kind"] == "random_prune"
    stored = json.loads((experiment.path / "rewind_search.json").read_text())
    assert stored["dense"]["bracket"] == found["dense"]["bracket"] and stored["cost"] == found["cost"]
    cost = found["cost"]
    prefixes = list((layout.store_of(experiment.path) / layout.NETWORKS / "prefix").iterdir())  # linked by none
    trainings = len(list(walk(experiment.path, "summary.json"))) + len(prefixes)
    assert cost["trainings"] == cost["probed"]["trainings"] == trainings


def test_a_prefix_retrained_to_k_is_the_dense_runs_w_k_bit_for_bit(known: tuple[Path, RunDir, dict]) -> None:
    _, experiment, found = known
    ctx = Context(json_spec(experiment), Runtime(progress=False))
    rdir = layout.replicate(experiment, 0)
    run = RunDir(experiment.path / "check_prefix_16")
    imp.train_prefix(ctx, run, 0, (16,))
    dense = layout.dense(rdir).read_tensors(layout.snapshot(16))  # a grid point: saved by the dense run itself
    prefix = run.read_tensors(layout.snapshot(16))
    assert dense.keys() == prefix.keys() and all(torch.equal(dense[k], prefix[k]) for k in dense)
    off_grid = [p["k"] for p in found["dense"]["probes"] if p["k"] not in (0, 8, 16, 32, 48)]
    assert off_grid and all(layout.dense(rdir).exists(layout.snapshot(k)) for k in off_grid)
    store = layout.store_of(experiment.path)
    made = [json.loads((p / layout.KEY_FILE).read_text()) for p in (store / layout.NETWORKS / "prefix").iterdir()]
    assert set(off_grid) <= {k for recipe in made for k in recipe["snapshots"]}  # networks of the store, unlinked
    assert not any("prefix" in view for view in json.loads((experiment.path / layout.RUNS_FILE).read_text())["runs"])


def json_spec(experiment: RunDir):  # noqa: ANN201
    from lottery.store import load_spec

    return load_spec(experiment.path)[0]


def test_search_agrees_with_a_full_sweep_of_the_same_grid(known: tuple[Path, RunDir, dict]) -> None:
    root, experiment, _ = known
    spec = json_spec(experiment)
    _, coarse = run_search(
        tiny_spec(*KNOWN), None, root, Runtime(progress=False), grid=GRID, refine=0, max_copies=COPIES
    )
    assert coarse["cost"]["trainings"] == 0  # every probe of the grid search is in the store already
    assert coarse["cost"]["probed"]["trainings"] < coarse["cost"]["full_sweep"]["trainings"]
    _, results = run_experiment(spec, None, root, Runtime(progress=False))  # the full sweep: every grid point
    grid = [0, 8, 16, 32, 48]  # the store also holds the earlier search's bisection points: every probe is recorded
    for subject, (kind, level) in (("dense", ("dense", 0)), ("imp", ("imp", 1))):
        stable = sorted(
            p["rewind_iteration"]
            for p in results["stability"]["points"]
            if p["kind"] == kind and p["level"] == level and p["data_order"]["stable"] and p["rewind_iteration"] in grid
        )
        assert coarse[subject]["k"] == stable[0], subject
    html = write_report(experiment.path)  # the search's figure and table, the predictors' scatter plots and table
    for figure in ("rewind_search_barrier", "predictors_scatter"):
        assert (html.parent / f"{figure}.png").read_bytes().startswith(b"\x89PNG"), figure
    page = html.read_text()
    assert "Rewind-point search (IMP level 1)" in page and "Which measure predicts the accuracy gap" in page
    assert results["predictors"]["table"] and len(results["predictors"]["observations"]) > 2 * len(GRID)


def test_budget_is_respected(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _, found = run_search(
        tiny_spec(*KNOWN),
        None,
        root,
        Runtime(progress=False),
        grid=GRID,
        refine=4,
        max_trainings=12,
        max_copies=COPIES,
    )
    assert found["cost"]["trainings"] <= 12 and not found["imp"]["complete"]
    trained = len(list(walk(root, "summary.json")))
    assert trained == found["cost"]["trainings"]
    # Dense k = 0 (the dense run + 3 copies), 48 and 16 (3 copies each) fit: 10; 32 would need 3 more, IMP at k = 0
    # seven (level 1, 3 copies of it and 3 of its control).
    assert found["cost"]["trainings"] == 10 and found["dense"]["bracket"] == [16, 48] and not found["dense"]["complete"]
    assert found["imp"]["probes"] == [] and found["imp"]["bracket"] == [None, None]


def test_cli_contract_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "runs")
    args = [
        "rewind-search",
        "--preset",
        "lenet_300_100",
        "--out",
        out,
        "--progress",
        "log",
        "--device",
        "cpu",
        "--grid",
        "0it,20it",
        "--level",
        "1",
        "--max-trainings",
        "30",
        *(
            f"--set={s}"
            for s in (
                "dataset.name=synthetic",
                "dataset.validation_size=200",
                "model.name=lenet_40_20",
                "training.batch_size=50",
                "training.training_steps=40it",
                "training.eval_every=20it",
                "stability.interpolation_points=3",
                "stability.train_subset=200",
            )
        ),
    ]
    assert main(args) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    found = json.loads((Path(stdout[-1]) / "rewind_search.json").read_text())
    for subject in ("dense", "imp"):
        assert {"k", "bracket", "interval", "monotone", "offending", "matching", "probes"} <= set(found[subject])
    assert (Path(stdout[-1]) / "results.json").exists()
    for bad in (
        ["--level", "0"],
        ["--max-trainings", "0"],
        ["--grid", "5000it"],
        ["--refine", "-1"],
        ["--max-copies", "1"],
    ):
        assert main([*args, *bad]) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lottery: error:"), bad


@pytest.mark.parametrize(
    "name, points, end",
    [
        ("rewind_optimizers.toml", 5, 916),
        ("rewind_dropout.toml", 4, 916),
        ("rewind_optimizers_resnet20.toml", 5, 30000),
    ],
)
def test_example_sweeps_share_the_searchs_directories(name: str, points: int, end: int) -> None:
    """Each point of the example sweeps is already the search's spec for the default grid: `lottery sweep FILE` and
    `lottery rewind-search FILE` train into the same experiment directories."""
    expanded = expand(Path(__file__).resolve().parents[1] / "examples" / name)
    assert len(expanded) == points
    grid = tuple(f"{k}it" for k in default_grid(end))  # 916: Fashion-MNIST's 55,000 examples / 60; ResNet-20: 30K
    for spec, _, _ in expanded:
        assert spec_hash(search_spec(spec, spec.imp.levels, grid)) == spec_hash(spec)
    assert {spec.training.optimizer for spec, _, _ in expanded} >= ({"sgd", "adam"} if points == 4 else set(OPTIMIZERS))


def test_rewind_search_over_a_sweep_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "sweep.toml"
    spec_file.write_text(
        'preset = "lenet_300_100"\n[dataset]\nname = "synthetic"\nvalidation_size = 200\n'
        '[model]\nname = "lenet_40_20"\n'
        '[training]\nbatch_size = 50\ntraining_steps = "40it"\neval_every = "20it"\n[imp]\nlevels = 1\n'
        "[stability]\ninterpolation_points = 3\ntrain_subset = 200\n[sweep.training]\nlr = [1.2e-3, 6e-4]\n"
    )
    out = tmp_path / "runs"
    assert main(["rewind-search", str(spec_file), "--out", str(out), "--progress", "log", "--grid", "0it,20it"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    dirs = [Path(lines[-2].split()[0]), Path(lines[-1])]
    assert dirs[0] != dirs[1] and "training.lr=0.0012" in lines[-2]
    for directory in dirs:
        assert directory.parent == out and (directory / "rewind_search.json").exists()


def test_python_api(tmp_path: Path) -> None:
    import lottery

    spec = tiny_spec("imp.levels=1", "stability.interpolation_points=3", "stability.train_subset=200")
    found = lottery.rewind_search(spec, level=1, max_trainings=3, out=tmp_path, grid=["0it", "20it"], max_copies=4)
    # The dense probe at k = 0 takes the dense run and its 2 copies: one pair of one replicate, no interval, so it is
    # undecided; a third copy does not fit in the budget, and neither does the next probe.
    assert found["path"].parent == tmp_path and found["cost"]["trainings"] == 3
    (probe,) = found["dense"]["probes"]
    assert probe["decision"] == "undecided" and probe["barrier_interval"] is None and probe["copies"] == 2
    assert found["dense"]["k"] is None and not found["dense"]["complete"] and not found["imp"]["complete"]
    assert json.loads((found["path"] / "rewind_search.json").read_text())["dense"]["bracket"] == [0, None]
