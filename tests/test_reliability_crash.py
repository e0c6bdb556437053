"""Crash safety: `lottery run` killed with SIGKILL at random moments (seeded) and started again with the same
command, until it finishes, ends with the same weights, masks, metrics and results, bit for bit, as an
uninterrupted run. Files left behind by interrupted writes are never trusted."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from reliability_helpers import (
    Started,
    assert_same_outcomes,
    cli_args,
    experiment_dir,
    files,
    manifest_entries,
    run_subprocess,
    temp_files,
)

# Dense run, two IMP levels rewound to iteration 10, a random-pruning control per level: five training
# runs of 150 iterations, a checkpoint every 10 iterations.
OVERRIDES = (
    "training.training_steps=150it",
    "training.eval_every=50it",
    "imp.levels=2",
    'imp.rewind=["10it"]',
    'controls.kinds=["random_prune"]',
)
EXTRA = ("--checkpoint-every", "10")
# Two replicates with both controls: the dense runs, the levels and each level's controls are trained as
# stacked groups (`--batch-copies auto` stacks LeNet on the CPU), checkpointed and resumed as groups.
STACKED = (
    "model.name=lenet_64_32",  # a first layer torch splits between threads (784 x 64 > 32768 weights)
    "training.training_steps=150it",
    "training.eval_every=50it",
    "replicates=2",
    "imp.levels=1",
    'imp.rewind=["10it"]',
    'controls.kinds=["random_prune", "random_reinit"]',
)
KILLS = 5
SEED = 20240601


@pytest.mark.parametrize(
    ("overrides", "threads"),
    [(OVERRIDES, 1), pytest.param(STACKED, None, marks=pytest.mark.slow)],
    ids=["separate_runs", "stacked_runs_default_threads"],
)
def test_sigkill_at_random_points_then_resume_is_bit_identical(
    tmp_path: Path, overrides: tuple[str, ...], threads: int | None
) -> None:
    """`threads` None: torch's default thread count, where a stacked run's bits depend on its group's size and
    its position in it (test_reliability_stacked.py has the deterministic case in the default run)."""
    reference_out, crashed_out = tmp_path / "reference", tmp_path / "crashed"

    # The uninterrupted run, timed from its first progress line to its end.
    start = Started(cli_args(reference_out, *overrides, extra=EXTRA), threads=threads)
    start.first_line.wait(timeout=120)
    began = time.perf_counter()
    assert start.proc.wait(timeout=300) == 0, start.stderr()
    training_seconds = time.perf_counter() - began

    rng = random.Random(SEED)
    kills, logs = 0, []
    for attempt in range(KILLS):
        run = Started(cli_args(crashed_out, *overrides, extra=EXTRA), threads=threads)
        run.first_line.wait(timeout=120)
        if attempt == 0:
            # The first kill lands mid-run, after checkpoints (the evaluation at iteration 50 follows those at 10,
            # 20, ...), so the resume path is exercised whatever the random kills after it hit.
            run.wait_for("iteration 50/150", timeout=300)
        try:
            code = run.proc.wait(timeout=0 if attempt == 0 else rng.uniform(0.05, 0.4) * training_seconds)
        except subprocess.TimeoutExpired:
            run.proc.send_signal(signal.SIGKILL)
            code = run.proc.wait(timeout=30)
            assert code == -signal.SIGKILL
            kills += 1
        logs.append(run.stderr())
        assert "Traceback" not in logs[-1]
        if code == 0:
            break
    final = run_subprocess(cli_args(crashed_out, *overrides, extra=EXTRA), timeout=300, threads=threads)
    assert final.returncode == 0, final.stderr
    logs.append(final.stderr)

    assert kills >= 3, f"only {kills} kills landed before the run finished"
    assert any("resuming from iteration" in log for log in logs), "no restart resumed from a checkpoint"

    reference, crashed = experiment_dir(reference_out), experiment_dir(crashed_out)
    assert files(crashed, ".safetensors") == files(reference, ".safetensors")  # weights and masks, bit for bit
    assert_same_outcomes(crashed, reference)  # and metrics, summaries, sparsity, specs, results

    # Temporary files of writes cut short may be left behind, but nothing ever refers to them, and every
    # recorded artifact matches its checksum.
    recorded = manifest_entries(crashed)
    assert not {str(p.relative_to(crashed)) for p in temp_files(crashed)} & recorded
    verify = run_subprocess(["verify", str(crashed_out)])
    assert verify.returncode == 0, verify.stdout
    assert verify.stdout.strip().endswith("0 problem(s)")


def test_sigterm_says_how_to_resume(tmp_path: Path) -> None:
    """SIGTERM (a scheduler pre-empting the job) stops like Ctrl-C: exit 143, one line saying the same command
    resumes, no traceback; the same command then resumes from the checkpoint and finishes clean."""
    out = tmp_path / "store"
    run = Started(cli_args(out, extra=EXTRA))
    run.wait_for("iteration 20/60")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish(timeout=60) == 143
    err = run.stderr()
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "lottery: terminated (SIGTERM); run the same command again to resume"
    again = run_subprocess(cli_args(out, extra=EXTRA), timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming from iteration" in again.stderr
    assert run_subprocess(["verify", str(out)]).returncode == 0
