"""Everything derives from `views.networks`: the plan's tasks are the tasks of the networks a spec implies (plus the
early-bird trace, the one task that trains no network), each network's task comes with its dependencies, and the
rewind search's missing lists and costs count the networks of `views.point_networks` that the store lacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import tiny_spec
from lottery.errors import UserError
from lottery.experiments import rewind_search, views
from lottery.experiments import tasks as names
from lottery.experiments.context import Context
from lottery.experiments.plan import index, plan
from lottery.store import experiment_dir, write_spec
from lottery.training import Runtime

KINDS = ("random_prune", "random_reinit")
SOURCES = ("magnitude", "snip", "random", "early_bird")


@st.composite
def specs(draw: st.DrawFn) -> list[str]:
    """Overrides of a tiny spec with any of every kind of network: dense, IMP levels, controls, stability copies
    (of the dense network, IMP, controls and [masks] runs), [masks] runs and their ablations, dynamic sparsity."""
    levels = draw(st.integers(1, 3))
    out = [f"replicates={draw(st.integers(1, 3))}", f"imp.levels={levels}"]
    out.append(f"imp.rewind={draw(st.sampled_from([['0it'], ['20it'], ['0it', '20it']]))}")
    kinds = draw(st.lists(st.sampled_from(KINDS), unique=True, max_size=2))
    out += [f"controls.kinds={kinds}", f"controls.seeds={draw(st.sampled_from([[0], [0, 1]]))}"]
    stability_points = draw(st.sampled_from([[], ["20it"], ["0it", "20it"]]))
    if stability_points:
        analysed = draw(st.lists(st.integers(0, levels), unique=True, min_size=1, max_size=levels + 1))
        controls = draw(st.lists(st.sampled_from(KINDS), unique=True, max_size=2))
        out += [f"stability.rewind={stability_points}", f"stability.levels={analysed}"]
        out += [f"stability.controls={controls}", "stability.copies=2"]
    sources = draw(st.lists(st.sampled_from(SOURCES), unique=True, max_size=3))
    if sources:
        ablations = draw(st.sampled_from([[], ["shuffle"]]))
        out += [f"masks.sources={sources}", f"masks.densities={draw(st.sampled_from([[0.3], [0.3, 0.5]]))}"]
        out += [f"masks.ablations={ablations}", f"masks.seeds={draw(st.sampled_from([[0], [0, 2]]))}"]
        if "20it" in stability_points and draw(st.booleans()):
            out += ["masks.at='20it'", f"stability.masks={[sources[0], *(f'{sources[0]}_{a}' for a in ablations)]}"]
    methods = draw(st.lists(st.sampled_from(("rigl", "set")), unique=True, max_size=2))
    if methods:
        out += [f"dynamic.methods={methods}", "dynamic.densities=[0.2]"]
    return out


def context(overrides: list[str], batch_copies: bool | None) -> Context:
    try:
        ctx = Context(tiny_spec(*overrides), Runtime(progress=False, batch_copies=batch_copies))
        ctx.validate()
    except UserError:
        assume(False)
    return ctx


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(specs(), st.sampled_from([None, False]))
def test_the_plans_tasks_are_the_tasks_of_the_networks(overrides: list[str], batch_copies: bool | None) -> None:
    ctx = context(overrides, batch_copies)
    found = list(views.networks(ctx))
    tasks = plan(ctx)
    by_name = index(tasks)
    traces = (
        {names.mask_trace(r) for r in range(ctx.spec.replicates)} if "early_bird" in ctx.spec.masks.sources else set()
    )
    members = {member for task in tasks for member in (task.members or (task.name,))}
    assert members == {network.task for network in found} | traces
    for network in found:  # each network's task, with its dependencies, is (or is a member of) a task of the plan
        task = by_name[network.task]
        assert {by_name[dep].name for dep in network.step.deps} - {task.name} <= set(task.deps)
    done: set[str] = set()
    for task in tasks:  # in dependency order, every dependency a task of the plan
        assert set(task.deps) <= done, task.name
        done.add(task.name)
    dense = plan(ctx, dense_only=True)
    assert [t.name for t in dense] == list(
        dict.fromkeys(by_name[names.dense(r)].name for r in range(ctx.spec.replicates))
    )


@pytest.mark.parametrize("batch_copies", [None, False])
def test_a_hand_counted_plan(batch_copies: bool | None) -> None:
    """imp.levels=2 at one rewind point, one control kind, stability at (20it, levels 0 and 2), two replicates:
    per replicate the dense run, 2 levels, 2 controls, 2 stability points; stacked (the default on LeNet/CPU) the
    replicates' dense runs and levels are one task each."""
    overrides = ["replicates=2", "imp.levels=2", "imp.rewind=['20it']", "controls.kinds=['random_prune']"]
    ctx = context([*overrides, "stability.rewind=['20it']", "stability.levels=[0, 2]"], batch_copies)
    tasks = plan(ctx)
    # 2 x (dense 1 + levels 2 + controls 2 + copies: dense 2 at level 0, imp 2 at level 2)
    assert len(list(views.networks(ctx))) == 2 * (1 + 2 + 2 + 2 + 2) + 2 * 2  # the dense copies once per level
    assert len({n.view for n in views.networks(ctx)}) == 2 * (1 + 2 + 2 + 2 + 2)
    stacked = batch_copies is None
    assert len(tasks) == (1 + 2 if stacked else 2 * 3) + 2 * (2 + 2)
    level2 = index(tasks)["r1/k20/level2"]
    assert level2.name == ("r*/k20/level2" if stacked else "r1/k20/level2")
    assert index(tasks)["r1/k20/stability/level2"].deps == (level2.name, "r1/k20/stability/level0")


def test_the_rewind_searchs_missing_list_and_cost_count_the_networks_the_store_lacks(tmp_path: Path) -> None:
    spec = rewind_search.search_spec(tiny_spec(), 1, ("0it", "20it"))
    ctx = Context(spec, Runtime(progress=False))
    experiment = experiment_dir(tmp_path / "runs", spec)
    write_spec(experiment, spec, None)
    search = rewind_search.Search(ctx, experiment, 1, None, 1.0, max_copies=2)  # no escalation
    empty = search.missing(20, 1)
    cost = rewind_search.cost_of(ctx, 1, [20], [20])
    point = views.point_networks(ctx, 0, 20, 1, (rewind_search.CONTROL,))
    assert len(empty) == cost["trainings"] == len(point) == 1 + 1 + 3 * 2  # dense, level 1, 3 subjects' copies
    assert sum(its for _, its in empty) == cost["iterations"] == 60 + 40 + 3 * 2 * 40

    search.probe("dense", 20)  # trains the dense run and its copies at 20
    stored = [n for n in point if (experiment / n.view.as_posix()).read_json("summary.json") is not None]
    assert len(stored) == 1 + 2
    after = search.missing(20, 1)
    assert {run.path for run, _ in after} == {(experiment / n.view.as_posix()).path for n in point if n not in stored}
    assert search.trained == 3 == cost["trainings"] - len(after)


def test_planning_computes_no_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network's recipe is computed when first asked (binding, verify), never to plan: an executor's worker plans
    once per task, and a large spec's recipes take seconds."""
    overrides = ["replicates=2", "imp.levels=2", "controls.kinds=['random_prune']", "stability.rewind=['20it']"]
    ctx = context([*overrides, "masks.sources=['magnitude']", "masks.densities=[0.3]"], None)
    expected = [task.name for task in plan(ctx)]

    def refuse(*args: object) -> None:
        raise AssertionError("a recipe was computed to plan")

    for kind in ("dense", "level", "control", "copy", "mask_copy", "mask_run"):
        monkeypatch.setattr(f"lottery.experiments.recipes.{kind}", refuse)
    assert [task.name for task in plan(ctx)] == expected
    with pytest.raises(AssertionError, match="a recipe was computed"):
        _ = next(iter(views.networks(ctx))).recipe
