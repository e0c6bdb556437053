"""Stacked groups at torch's default thread count: a level's controls, the replicates' runs and a stability
point's copies train as one stacked model, and with more than one thread a copy's bits depend on the size of
the stack and its position in it. A member that resumes, or is recomputed, while the rest of its group is
finished must still end bit for bit where the uninterrupted group put it, and `lottery verify` must notice a
member computed another way. These run the CLI in subprocesses WITHOUT pinning the thread count (the test
process itself runs one thread, see conftest.py)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from reliability_helpers import (
    assert_same_outcomes,
    cli_args,
    experiment_dir,
    files,
    run_cli,
    run_killed_after_finishing,
    run_subprocess,
)

# A level's two controls are one stacked group (LeNet on the CPU); the first layer (784 x 64 weights) is large
# enough for torch to split its optimizer step between two threads.
CONTROLS = (
    "model.name=lenet_64_32",
    "training.training_steps=30it",
    "imp.levels=1",
    'imp.rewind=["10it"]',
    'controls.kinds=["random_prune", "random_reinit"]',
)
EXTRA = ("--checkpoint-every", "10")
LEVEL = Path("replicate_0/rewind_10it/controls/level_1")


def test_group_member_resumed_alone_and_member_recomputed_alone_are_bit_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference_out, crashed_out = tmp_path / "reference", tmp_path / "crashed"
    reference = run_subprocess(cli_args(reference_out, *CONTROLS, extra=EXTRA), threads=None)
    assert reference.returncode == 0, reference.stderr

    # Killed right after the first control finished: the second has only its checkpoint at iteration 20.
    killed = run_killed_after_finishing("random_prune_seed0", cli_args(crashed_out, *CONTROLS, extra=EXTRA))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    experiment = experiment_dir(crashed_out)
    assert (experiment / LEVEL / "random_reinit_seed0" / "checkpoint.pt").exists()
    # ... and the first one's weights are lost as well: it is recomputed from the start, without its partner.
    (experiment / LEVEL / "random_prune_seed0" / "final.safetensors").unlink()

    resumed = run_subprocess(cli_args(crashed_out, *CONTROLS, extra=EXTRA), threads=None)
    assert resumed.returncode == 0, resumed.stderr
    assert "random_reinit_seed0: resuming from iteration 20" in resumed.stderr
    assert files(experiment, ".safetensors") == files(experiment_dir(reference_out), ".safetensors")
    assert_same_outcomes(experiment, experiment_dir(reference_out))  # summaries record the same arithmetic
    summary = (experiment / LEVEL / "random_reinit_seed0" / "summary.json").read_text()
    assert '"position": 1' in summary and '"stacked": true' in summary
    code, out, _ = run_cli(["verify", str(crashed_out)], capsys)
    assert code == 0, out

    # The same control trained in this process (one thread) and moved into that store: every checksum matches,
    # but the member is not what its group computes: its recipe (threads 1) does not name that directory, and
    # `verify` says so.
    one_thread_out = tmp_path / "one_thread"
    code, _, err = run_cli(cli_args(one_thread_out, *CONTROLS), capsys)
    assert code == 0, err
    target = experiment / LEVEL / "random_prune_seed0"
    shutil.rmtree(target.resolve())  # the network the experiment's directory links to
    shutil.copytree(experiment_dir(one_thread_out) / LEVEL / "random_prune_seed0", target.resolve())
    code, out, _ = run_cli(["verify", str(crashed_out)], capsys)
    assert code == 1
    assert f"{target.resolve()}/key.json: key.json hashes to " in out and "foreign or damaged network" in out, out


# The command in small: a stability point (level 2: the dense network, IMP and both controls, 2 copies
# each, all stacked together) after two IMP levels, each with its two controls stacked.
STABILITY = (
    "model.name=lenet_64_32",
    "training.training_steps=40it",
    "imp.levels=2",
    'imp.rewind=["10it"]',
    'controls.kinds=["random_prune", "random_reinit"]',
    'stability.rewind=["10it"]',
    "stability.levels=[2]",
    "stability.copies=2",
    "stability.interpolation_points=3",
)


@pytest.mark.slow
def test_stability_copies_and_controls_recomputed_without_their_group_are_bit_identical(tmp_path: Path) -> None:
    reference_out, repaired_out = tmp_path / "reference", tmp_path / "repaired"
    reference = run_subprocess(cli_args(reference_out, *STABILITY, extra=EXTRA), threads=None, timeout=600)
    assert reference.returncode == 0, reference.stderr
    shutil.copytree(reference_out, repaired_out, symlinks=True)
    experiment = experiment_dir(repaired_out)
    point = experiment / "replicate_0/rewind_10it/stability"
    for lost in (
        point / "level_0/dense_copy1/final.safetensors",  # the dense network's copy, trained in level 2's group
        point / "level_2/imp_copy1/final.safetensors",
        experiment / "replicate_0/rewind_10it/controls/level_2/random_reinit_seed0/final.safetensors",
    ):
        lost.unlink()
    (point / "level_2/analysis.json").unlink()
    repaired = run_subprocess(cli_args(repaired_out, *STABILITY, extra=EXTRA), threads=None, timeout=600)
    assert repaired.returncode == 0, repaired.stderr
    assert files(experiment, ".safetensors") == files(experiment_dir(reference_out), ".safetensors")
    assert_same_outcomes(experiment, experiment_dir(reference_out))
    assert run_subprocess(["verify", str(repaired_out)]).returncode == 0
