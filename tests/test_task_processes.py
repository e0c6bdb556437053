"""A task trained by several processes (`--nproc-per-task`): one data-parallel job per task, started with torchrun,
gloo on the CPU. Its masks equal those of one process and its weights match within float tolerance; a rank whose
weights differ after resuming from a checkpoint stops the job with one line (nothing in the store is lost), and
the same command then resumes and finishes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lottery.experiments.sweep import run_sweep
from lottery.store.layout import walk
from lottery.training import Runtime
from lottery.training.loop import Session

PLUGIN = Path(__file__).resolve().parent / "cluster_scripts" / "perturb_rank.py"
SPEC = """
preset = "lenet_300_100"
[dataset]
name = "synthetic"
validation_size = 200
[model]
name = "lenet_40_20"
[training]
batch_size = 50
training_steps = "60it"
eval_every = "20it"
[imp]
levels = 1
"""


def tensors(root: Path, name: str) -> dict[str, dict[str, torch.Tensor]]:
    return {str(p.parent.relative_to(root)): load_file(p) for p in walk(root, name) if "networks" not in p.parts}


@pytest.mark.slow
def test_two_process_tasks_match_one_process_and_stop_on_a_rank_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))
    runtime = Runtime(progress=False, batch_copies=False, threads=1, checkpoint_every=20)
    _, outcome = run_sweep(spec, None, [], tmp_path / "one", runtime)
    assert not outcome.failed and len(outcome.done) == 2

    # the dense run is interrupted right after its first checkpoint
    original = Session.checkpoint

    def interrupted(self):  # noqa: ANN001, ANN202
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Session, "checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, None, [], tmp_path / "two", runtime)
    monkeypatch.setattr(Session, "checkpoint", original)
    checkpoint = next(iter(walk(tmp_path / "two", "checkpoint.pt")))
    saved = checkpoint.read_bytes()

    # rank 1 resumes with other weights: the job stops with one line on every rank, the checkpoint stays
    monkeypatch.setenv("LOTTERY_TEST_PERTURB_RANK", "1")
    perturbed = Runtime(**{**runtime.__dict__, "imports": (str(PLUGIN),)})
    capfd.readouterr()
    _, outcome = run_sweep(spec, None, [], tmp_path / "two", perturbed, retries=0, nproc=2)
    assert len(outcome.failed) == 1 and len(outcome.skipped) == 1 and not outcome.done
    error = next(iter(outcome.failed.values()))
    assert "weights digest differs between ranks (ranks [1] disagree with rank 0)" in error
    err = capfd.readouterr().err
    # one line per rank at least (under load, with two test workers, a third copy of a rank's line was seen once)
    assert err.count("lottery: error: the weights digest differs between ranks") >= 2
    assert "Traceback" not in err
    assert checkpoint.read_bytes() == saved  # nothing lost

    # the same sweep again: both ranks resume from the checkpoint and finish
    monkeypatch.delenv("LOTTERY_TEST_PERTURB_RANK")
    _, outcome = run_sweep(spec, None, [], tmp_path / "two", runtime, retries=0, nproc=2)
    assert not outcome.failed and len(outcome.done) == 2
    assert "resuming from iteration 20" in capfd.readouterr().err
    masks, reference = tensors(tmp_path / "two", "mask.safetensors"), tensors(tmp_path / "one", "mask.safetensors")
    assert masks.keys() == reference.keys() and len(masks) == 2
    for run, mask in masks.items():
        assert all(torch.equal(mask[k], reference[run][k]) for k in mask)  # identical masks
    finals, reference = tensors(tmp_path / "two", "final.safetensors"), tensors(tmp_path / "one", "final.safetensors")
    for run, weights in finals.items():
        for k in weights:
            torch.testing.assert_close(weights[k], reference[run][k], rtol=0, atol=1e-5)
    assert os.environ.get("LOTTERY_TEST_PERTURB_RANK") is None
