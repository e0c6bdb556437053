"""Networks as recipes: a stored network is exactly what its recipe says (experiments/recipes.py).

The five ways today's store could hand back the wrong network, each a test; the seed table; content identity of
the data; nothing trusted by its name; network files that name the network; `verify --recompute`; the property
that the same spec gives bit-identical networks in a shared store and in an empty one."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from conftest import run_tiny
from lottery import seeding
from lottery.cli.main import main
from lottery.errors import UserError
from lottery.store import layout
from lottery.store.provenance import read_metadata

MASKS = ('masks.sources=["magnitude", "snip", "random"]', "masks.densities=[0.3]", 'masks.ablations=["shuffle"]')
CONTROLS = ('controls.kinds=["random_reinit", "random_prune"]',)
SEEDS_1 = ("training.init_seed=1", "training.data_order_seed=1", "training.augmentation_seed=1")


def networks_of(experiment: Path) -> dict[str, Path]:
    """runs.json: view -> the network directory."""
    runs = json.loads((experiment / layout.RUNS_FILE).read_text())["runs"]
    return {view: (experiment / view).resolve() for view in runs}


def weights(run: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(run / "final.safetensors")
    tensors.update({f"mask/{k}": v for k, v in load_file(run / "mask.safetensors").items()})
    tensors.update({f"start/{k}": v for k, v in load_file(run / "start.safetensors").items()})
    return tensors


def assert_same_networks(ours: Path, theirs: Path) -> None:
    """Every network of two experiments of one spec: the same recipe and bit-identical weights, mask and start."""
    a, b = networks_of(ours), networks_of(theirs)
    assert a.keys() == b.keys()
    for view in a:
        assert a[view].name == b[view].name, view  # the same recipe
        wa, wb = weights(a[view]), weights(b[view])
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.equal(wa[name], wb[name]), (view, name)


# -- seeds ---------------------------------------------------------------------------------------------------


@given(
    st.sampled_from(sorted(seeding.STREAMS)),
    st.sampled_from(sorted(seeding.STREAMS)),
    st.lists(st.integers(0, 2**40), max_size=4),
    st.lists(st.integers(0, 2**40), max_size=4),
)
def test_distinct_purposes_or_values_get_distinct_seeds(p: str, q: str, a: list[int], b: list[int]) -> None:
    if (p, a) != (q, b):
        assert seeding.derive(p, *a) != seeding.derive(q, *b)
    else:
        assert seeding.derive(p, *a) == seeding.derive(q, *b)


def test_trailing_zeros_and_streams_never_collide() -> None:
    assert seeding.derive("masks.magnitude", 0, 0, 0) != seeding.derive("masks.magnitude", 0, 0, 0, 0)
    assert len(set(seeding.STREAMS.values())) == len(seeding.STREAMS)  # one id per purpose
    # today's collisions: copy 0's data order was the magnitude source's seed; [masks] streams were the copies'
    assert seeding.derive("copy_data_order", 0, 0) != seeding.derive("masks.magnitude", 0, 0)
    assert seeding.derive("data_order", 0, 0) != seeding.derive("augmentation", 0, 0)
    with pytest.raises(KeyError):
        seeding.derive("no such purpose", 1)


# -- case 1: seeds by value, never by replicate number -----------------------------------------------------


def test_a_replicate_is_the_network_of_its_seed_values(store: Path, tmp_path: Path) -> None:
    """A replicates = 1 spec with every seed 1, in a store holding a replicates = 2 experiment (whose replicate 1
    has seeds 1), reuses replicate 1's networks only where they are the same networks: every control and [masks]
    network is bit-identical to what an empty store computes."""
    run_tiny(store, "imp.levels=1", "replicates=2", *CONTROLS, *MASKS)
    shared, _ = run_tiny(store, "imp.levels=1", *SEEDS_1, *CONTROLS, *MASKS)
    fresh, _ = run_tiny(tmp_path / "empty", "imp.levels=1", *SEEDS_1, *CONTROLS, *MASKS)
    assert_same_networks(shared.path, fresh.path)


def test_paired_controls_stay_paired_after_adding_a_level(store: Path) -> None:
    run_tiny(store, "imp.levels=1", "replicates=2", 'controls.kinds=["random_reinit"]')
    experiment, _ = run_tiny(store, "imp.levels=2", *SEEDS_1, 'controls.kinds=["random_reinit"]')
    rdir = layout.replicate(experiment.path, 0)
    one, two = (load_file(layout.control(rdir, 0, level, "random_reinit", 0) / "start.safetensors") for level in (1, 2))
    masks = [load_file(layout.control(rdir, 0, level, "random_reinit", 0) / "mask.safetensors") for level in (1, 2)]
    for name in one:
        if name in masks[1]:
            shared = masks[0][name].bool() & masks[1][name].bool()
            assert shared.any() and torch.equal(one[name][shared], two[name][shared])  # the same fresh draw


# -- case 2: an early-bird run's recipe holds what its traced source reads ------------------------------------


def test_early_bird_scored_by_snip_changes_with_snip_batches(store: Path) -> None:
    spec = ('masks.sources=["early_bird"]', "masks.densities=[0.3]", 'masks.early_bird_source="snip"')
    first, _ = run_tiny(store, *spec)
    second, _ = run_tiny(store, *spec, "masks.snip_batches=2")
    view = "replicate_0/masks/early_bird/density_0.3_seed0"
    assert networks_of(first.path)[view] != networks_of(second.path)[view]


# -- case 3: the data's content, not its path --------------------------------------------------------------


def _idx(shape: tuple[int, ...], data: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + data.tobytes()


def write_mnist(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for prefix, n in (("train", 300), ("t10k", 100)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = (rng.random((n, 28, 28)) * 80 + labels[:, None, None] * 17).astype(np.uint8)
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(_idx((n, 28, 28), images))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx((n,), labels))
    return root


def test_data_changed_in_place_gives_new_networks_and_a_copy_elsewhere_reuses(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_mnist(tmp_path / "mnist")
    spec = ("dataset.name=mnist", "dataset.validation_size=50", "imp.levels=1")
    first, _ = run_tiny(store, *spec, f"dataset.root={data}")
    before = networks_of(first.path)
    copy = tmp_path / "elsewhere"
    shutil.copytree(data, copy)
    trained: list[Path] = []
    import lottery.training.loop as loop

    original = loop.Session.__init__

    def counting(self, run, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        trained.append(run.path)
        original(self, run, *args, **kwargs)

    monkeypatch.setattr(loop.Session, "__init__", counting)
    moved, _ = run_tiny(store, *spec, f"dataset.root={copy}")
    assert trained == [] and networks_of(moved.path) == before  # identical data at another path: reused
    labels = data / "train-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    header = 8
    raw[header:] = bytes(np.random.default_rng(1).permutation(np.frombuffer(bytes(raw[header:]), np.uint8)))
    labels.write_bytes(bytes(raw))  # the training labels permuted in place
    changed, _ = run_tiny(store, *spec, f"dataset.root={data}")
    dense = "replicate_0/level_0"
    assert networks_of(changed.path)[dense] != before[dense]  # retrained on what the files now hold
    assert changed.path == first.path  # the same spec: its view now links to the new networks


# -- case 4: how a network is computed is part of it --------------------------------------------------------


def test_stacked_and_alone_are_different_networks(store: Path, tmp_path: Path) -> None:
    dense = "replicate_0/level_0"
    stacked, _ = run_tiny(store, "imp.levels=1", "replicates=2", batch_copies=True)
    a = networks_of(stacked.path)[dense]
    alone, _ = run_tiny(store, "imp.levels=1", "replicates=2", batch_copies=False)  # the same view: re-linked
    b = networks_of(alone.path)[dense]
    assert a != b
    assert json.loads((a / layout.KEY_FILE).read_text())["arithmetic"]["stacked"] is True
    fresh, _ = run_tiny(tmp_path / "empty", "imp.levels=1", "replicates=2", batch_copies=False)
    assert_same_networks(alone.path, fresh.path)


@pytest.mark.parametrize("threads", [1, 2])
def test_lenet_stacked_bits_do_not_depend_on_the_stack(tmp_path: Path, threads: int) -> None:
    """What lets LeNet's recipes leave out the size (two or more) and position of a stack
    (recipes.stack_independent): the network of seed 1 at position 1 of a stack of 2 and of 3, and at position 0 of
    a stack of 2, is bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        two, _ = run_tiny(tmp_path / "a", "replicates=2", "imp.levels=0", "model.name=lenet_300_100", batch_copies=True)
        three, _ = run_tiny(
            tmp_path / "b", "replicates=3", "imp.levels=0", "model.name=lenet_300_100", batch_copies=True
        )
        first, _ = run_tiny(
            tmp_path / "c", "replicates=2", "imp.levels=0", "model.name=lenet_300_100", *SEEDS_1, batch_copies=True
        )
    finally:
        torch.set_num_threads(before)
    runs = [two.path / "replicate_1/level_0", three.path / "replicate_1/level_0", first.path / "replicate_0/level_0"]
    tensors = [load_file(run / "final.safetensors") for run in runs]
    for other in tensors[1:]:
        assert all(torch.equal(tensors[0][name], other[name]) for name in tensors[0])


# -- case 5: a field that changes no weight stays out ---------------------------------------------------------


def test_the_reinit_ablation_does_not_depend_on_the_optimizer_state_option(store: Path) -> None:
    spec = ('masks.sources=["magnitude"]', "masks.densities=[0.3]", 'masks.ablations=["reinit"]')
    first, _ = run_tiny(store, *spec)
    second, _ = run_tiny(store, *spec, 'imp.optimizer_state="rewind"')
    view = "replicate_0/masks/magnitude_reinit/density_0.3_seed0"
    assert networks_of(first.path)[view] == networks_of(second.path)[view]
    view = "replicate_0/masks/magnitude/density_0.3_seed0"
    assert networks_of(first.path)[view] != networks_of(second.path)[view]


# -- nothing trusted by its name; files name the network -------------------------------------------------------


def test_a_network_copied_under_another_name_is_refused(store: Path) -> None:
    seed0, _ = run_tiny(store, "imp.levels=0")
    seed5, _ = run_tiny(store, "imp.levels=0", "training.init_seed=5")
    a, b = networks_of(seed0.path)["replicate_0/level_0"], networks_of(seed5.path)["replicate_0/level_0"]
    shutil.rmtree(b)
    shutil.copytree(a, b)  # seed 0's network under seed 5's name
    with pytest.raises(UserError, match="holds another network than its name says"):
        run_tiny(store, "imp.levels=0", "training.init_seed=5")


def test_a_shared_network_has_the_same_bytes_whichever_experiment_computed_it(store: Path, tmp_path: Path) -> None:
    one, _ = run_tiny(store, "imp.levels=1")
    two, _ = run_tiny(tmp_path / "other", "imp.levels=1", "stability.threshold=1.0")  # another experiment
    for view in ("replicate_0/level_0", "replicate_0/rewind_0it/level_1"):
        a, b = networks_of(one.path)[view], networks_of(two.path)[view]
        assert a.name == b.name
        for name in ("final.safetensors", "start.safetensors", "mask.safetensors"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (view, name)
        metadata = read_metadata(a / "final.safetensors")
        assert metadata["network"] == f"{a.parent.name}/{a.name}" and "experiment" not in metadata


def test_a_store_of_the_previous_format_is_refused_in_one_line(store: Path, capsys: pytest.CaptureFixture) -> None:
    from lottery.store import networks

    experiment, _ = run_tiny(store, "imp.levels=0")
    marker = store / layout.NETWORKS / layout.FORMAT_FILE
    marker.unlink()  # deleted: the format is read from the networks' recipes (this format's), and marked again
    networks._checked_stores.clear()
    run_tiny(store, "imp.levels=0")
    assert json.loads(marker.read_text()) == {"format": layout.FORMAT}
    for content, message in (
        (json.dumps({"format": 2}), "store format 2, before networks were named"),
        (json.dumps({"format": 99}), "store format 99, written by a newer version"),
        ('{"format": "3"}', "is damaged"),
    ):
        marker.write_text(content)
        networks._checked_stores.clear()
        with pytest.raises(UserError, match=message):
            run_tiny(store, "imp.levels=1")
    marker.unlink()  # a format-2 store has no marker, and its recipes no version
    dense = networks_of(experiment.path)["replicate_0/level_0"]
    recipe = json.loads((dense / layout.KEY_FILE).read_text())
    (dense / layout.KEY_FILE).write_text(json.dumps({k: v for k, v in recipe.items() if k != "version"}))
    networks._checked_stores.clear()
    with pytest.raises(UserError, match="store format 2"):
        run_tiny(store, "imp.levels=1")
    assert main(["show", str(experiment.path)]) == 0  # still read


# -- verify --recompute -------------------------------------------------------------------------------------------


def test_verify_recompute_retrains_from_recipes_and_finds_a_tampered_network(
    store: Path, capsys: pytest.CaptureFixture
) -> None:
    experiment, _ = run_tiny(store, "imp.levels=1", 'controls.kinds=["random_prune"]')
    capsys.readouterr()
    assert main(["verify", str(store), "--recompute", "all"]) == 0
    out = capsys.readouterr().out
    assert "3 network(s) recomputed from their recipes, 0 not bit-identical" in out
    level = networks_of(experiment.path)["replicate_0/rewind_0it/level_1"]
    tensors = load_file(level / "final.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-3  # a network that is not what its recipe computes, checksums made valid
    from lottery.store import RunDir

    RunDir(level).write_tensors("final.safetensors", tensors)
    assert main(["verify", str(store), "--recompute", "all"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "not what its recipe computes" in line]
    assert len(lines) == 1 and str(level) in lines[0]
    assert not any(p.name.startswith(".recompute-") for p in store.iterdir())  # the scratch directory is gone


def test_recompute_links_a_network_that_several_views_name_once(store: Path) -> None:
    """The dense network's copies are named by every analysed level's view: recomputing a level's IMP copy links
    each of its dependencies into the scratch store once (a second link of the same files failed)."""
    from lottery.experiments.recompute import Found, recompute_one

    experiment, _ = run_tiny(store, "imp.levels=1", 'stability.rewind=["20it"]')
    view = "replicate_0/rewind_20it/stability/level_1/imp_copy0"
    path = networks_of(experiment.path)[view]
    found = Found(path, experiment.path, json.loads((path / layout.KEY_FILE).read_text()))
    assert recompute_one(store, found, view) is None  # bit-identical


def test_verify_recompute_refuses_a_bad_count(store: Path, capsys: pytest.CaptureFixture) -> None:
    run_tiny(store, "imp.levels=0")
    capsys.readouterr()
    assert main(["verify", str(store), "--recompute", "zero"]) == 2
    assert "--recompute takes a positive number" in capsys.readouterr().err


# -- the property: the same spec, the same networks, whatever the store holds --------------------------------------

SPECS = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2),
        "replicates": st.integers(1, 2),
        "levels": st.integers(0, 2),
        "controls": st.sampled_from([(), ("random_prune",), ("random_reinit", "random_prune")]),
        "batch_copies": st.sampled_from([None, False]),
    }
)


def overrides(case: dict) -> tuple[list[str], dict]:
    s = case["seed"]
    spec = [
        f"training.init_seed={s}",
        f"training.data_order_seed={s}",
        f"training.augmentation_seed={s}",
        f"replicates={case['replicates']}",
        f"imp.levels={case['levels']}",
        "training.training_steps=40it",
        f"controls.kinds={json.dumps(list(case['controls']))}",
    ]
    return spec, {"batch_copies": case["batch_copies"]}


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=SPECS, second=SPECS)
def test_a_spec_computes_the_same_networks_in_a_shared_store_and_an_empty_one(
    tmp_path_factory: pytest.TempPathFactory, first: dict, second: dict
) -> None:
    shared = tmp_path_factory.mktemp("shared")
    spec, runtime = overrides(first)
    run_tiny(shared, *spec, **runtime)
    spec, runtime = overrides(second)
    ours, _ = run_tiny(shared, *spec, **runtime)
    theirs, _ = run_tiny(tmp_path_factory.mktemp("empty"), *spec, **runtime)
    assert_same_networks(ours.path, theirs.path)


def test_a_plugins_identity_covers_the_helpers_it_imports_from_its_directory(tmp_path: Path) -> None:
    from lottery.plugins import Plugin

    (tmp_path / "myhelpers.py").write_text("WIDTH = 8\n")
    (tmp_path / "myplugin.py").write_text("import myhelpers\n\ndef build():\n    return myhelpers.WIDTH\n")
    namespace: dict = {"__name__": "myplugin"}
    exec(compile("def build():\n    return 8\n", str(tmp_path / "myplugin.py"), "exec"), namespace)
    build = namespace["build"]  # defined in myplugin.py (its code object says so), which imports myhelpers
    before = Plugin("model", "mine", build).source_hash()
    (tmp_path / "myhelpers.py").write_text("WIDTH = 16\n")  # only the helper changes
    assert Plugin("model", "mine", build).source_hash() != before


def test_a_store_inside_another_store_is_refused_before_anything_is_written(store: Path) -> None:
    experiment, _ = run_tiny(store, "imp.levels=0")
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    for inside in (store / layout.NETWORKS, experiment.path, store / layout.NETWORKS / "dense"):
        with pytest.raises(UserError, match="lies inside the store"):
            run_tiny(inside, "imp.levels=1")
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_a_killed_recomputations_scratch_directory_is_removed_by_the_next(store: Path) -> None:
    from lottery.experiments.recompute import remove_stale_scratch
    from lottery.store.networks import SCRATCH_PREFIX

    run_tiny(store, "imp.levels=0")
    dead, alive = store / f"{SCRATCH_PREFIX}{2**22 + 12345}", store / f"{SCRATCH_PREFIX}{os.getpid()}"
    for scratch in (dead, alive):
        (scratch / "networks").mkdir(parents=True)
    (store / ".recompute-notapid").mkdir()  # not a name this module makes: never removed
    remove_stale_scratch(store)
    assert not dead.exists() and alive.exists() and (store / ".recompute-notapid").exists()


def test_a_link_to_a_device_inside_a_network_is_never_read(store: Path, capsys: pytest.CaptureFixture) -> None:
    """A network file replaced by a link to /dev/zero: verify, show and run neither follow it nor read forever."""
    experiment, _ = run_tiny(store, "imp.levels=0")
    dense = networks_of(experiment.path)["replicate_0/level_0"]
    (dense / "metrics.jsonl").unlink()
    (dense / "metrics.jsonl").symlink_to("/dev/zero")
    capsys.readouterr()
    assert main(["verify", str(store)]) == 1
    assert "metrics.jsonl: unreadable" in capsys.readouterr().out
    run_tiny(store, "imp.levels=0")  # the link is not trusted: the run's evaluations are recomputed
    assert not (dense / "metrics.jsonl").is_symlink()


def test_a_run_link_re_pointed_to_another_network_is_never_read(store: Path, capsys: pytest.CaptureFixture) -> None:
    experiment, _ = run_tiny(store, "imp.levels=2")
    level1 = experiment.path / "replicate_0/rewind_0it/level_1"
    level2 = (experiment.path / "replicate_0/rewind_0it/level_2").resolve()
    level1.unlink()
    level1.symlink_to(os.path.relpath(level2, level1.parent))  # a valid network of the store, but not this one
    capsys.readouterr()
    for command in (["show", str(experiment.path)], ["export", str(experiment.path), "--level", "1"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "but runs.json says" in err, err
    run_tiny(store, "imp.levels=2")  # links it again
    assert main(["show", str(experiment.path)]) == 0
