"""Data parallel training under torchrun: 2 CPU processes with gloo on 127.0.0.1.

One experiment (synthetic data, lenet_50_20, global batch 64, 20 iterations, one IMP level) is trained in
this process and again by two ranks, the second time killed during level 1 and resumed. The weights must
match the single-process run within float tolerance, the masks exactly, and the store must hold one
set of verified artifacts. A second launch checks the collective helpers and the divisibility error.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lottery import collective
from lottery.cli.main import main
from lottery.data.batches import BatchStream
from lottery.pruning import Mask
from lottery.store.layout import walk
from lottery.training import distributed

SETTINGS = [
    "dataset.name=synthetic",
    "dataset.validation_size=200",
    "model.name=lenet_50_20",
    "training.batch_size=64",
    "training.training_steps=20it",
    "training.eval_every=5it",
    "imp.levels=1",
]
CHECKPOINT_EVERY = 7  # level 1 is killed right after its checkpoint at iteration 7
ATOL = 1e-5
LAUNCH_TIMEOUT_S = 180


def run_args(out: Path) -> list[str]:
    args = ["run", "--out", str(out), "--progress", "log", "--checkpoint-every", str(CHECKPOINT_EVERY)]
    for setting in SETTINGS:
        args += ["--set", setting]
    return args


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(target: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc_per_node=2 TARGET...` on 127.0.0.1 with gloo."""
    env = {**os.environ, "LOTTERY_DIST_TIMEOUT": "120", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOTTERY_RUNS"):
        env.pop(name, None)
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        *target,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)


def only_experiment(root: Path) -> Path:
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name != "networks"]
    assert len(dirs) == 1, dirs
    return dirs[0]


def files(experiment: Path) -> set[str]:
    return {str(p.relative_to(experiment)) for p in walk(experiment, "*") if p.is_file() and p.name != ".lock"}


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


KILL_IN_LEVEL_1 = """
import os, signal, sys
from lottery.cli.main import main
from lottery.store import run_dir

original = run_dir.RunDir.write

def write(self, name, data):
    original(self, name, data)  # collective: rank 0 wrote it and every rank passed the barrier after
    if name == "checkpoint.pt" and "rewind_" in str(self.path):
        os.kill(os.getpid(), signal.SIGKILL)  # every rank dies, as when the job is killed

run_dir.RunDir.write = write
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The experiment trained by one process, and by two ranks (killed in level 1, then resumed)."""
    tmp = tmp_path_factory.mktemp("distributed")
    single_root, ddp_root = tmp / "single", tmp / "ddp"
    assert main(run_args(single_root)) == 0
    killer = tmp / "kill_in_level_1.py"
    killer.write_text(KILL_IN_LEVEL_1)
    killed = torchrun([str(killer), *run_args(ddp_root)], cwd=tmp)
    resumed = torchrun(["-m", "lottery", *run_args(ddp_root)], cwd=tmp)
    return {
        "single": only_experiment(single_root),
        "ddp_root": ddp_root,
        "killed": killed,
        "resumed": resumed,
    }


def test_kill_interrupts_level_1_after_its_checkpoint(runs: dict) -> None:
    killed = runs["killed"]
    assert killed.returncode != 0, killed.stderr[-3000:]
    resumed = runs["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from iteration {CHECKPOINT_EVERY}" in resumed.stderr, resumed.stderr[-3000:]
    assert resumed.stderr.count("resuming from iteration") == 2, resumed.stderr[-3000:]  # each rank, level 1 only


def test_weights_match_single_process_and_masks_are_identical(runs: dict) -> None:
    single, ddp = runs["single"], only_experiment(runs["ddp_root"])
    tensors = sorted(name for name in files(single) if name.endswith(".safetensors"))
    assert any(name.endswith("level_1/final.safetensors") for name in tensors)
    for name in tensors:
        a, b = load_file(single / name), load_file(ddp / name)
        assert a.keys() == b.keys(), name
        for key in a:
            if name.endswith("mask.safetensors") or "snapshots" in name or name.endswith("start.safetensors"):
                assert torch.equal(a[key], b[key]), (name, key)  # masks and untrained weights: exactly
            else:
                assert torch.allclose(a[key], b[key], rtol=0, atol=ATOL), (name, key)
    level_1 = load_file(single / "replicate_0/rewind_0it/level_1/mask.safetensors")
    assert 0 < sum(int(m.sum()) for m in level_1.values()) < sum(m.numel() for m in level_1.values())


def test_metrics_match_single_process(runs: dict) -> None:
    single, ddp = runs["single"], only_experiment(runs["ddp_root"])
    for name in sorted(n for n in files(single) if n.endswith("metrics.jsonl")):
        a, b = metrics(single / name), metrics(ddp / name)
        assert [(r["iteration"], r["split"]) for r in a] == [(r["iteration"], r["split"]) for r in b], name
        for ra, rb in zip(a, b):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4, abs=1e-5), (name, ra, rb)
            assert ra.get("accuracy") == rb.get("accuracy"), (name, ra, rb)


def test_one_set_of_verified_artifacts(runs: dict, capsys: pytest.CaptureFixture) -> None:
    single, root = runs["single"], runs["ddp_root"]
    ddp = only_experiment(root)
    assert files(ddp) == files(single)  # no per-rank copies, no leftover checkpoint or temporary files
    assert main(["verify", str(root)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    out = runs["resumed"].stdout.strip().splitlines()
    assert out[-1] == str(ddp)
    assert sum(line.endswith(ddp.name) for line in out) == 1  # the run directory printed by rank 0 only
    assert sum(line.startswith("kind") for line in out) == 1


HELPERS = """
import os
import sys
from pathlib import Path

import torch
from lottery import collective
from lottery.cli.main import main
from lottery.data.augment import crop_and_flip
from lottery.data.batches import BatchStream
from lottery.errors import UserError
from lottery.pruning import Mask
from lottery.store import RunDir, lock
from lottery.training import distributed
from lottery.training.evaluate import evaluate

out, settings = sys.argv[1], sys.argv[2:]
assert distributed.setup(torch.device("cpu")) == torch.device("cpu")
r, n = collective.rank(), collective.world_size()
assert n == 2 and collective.is_main() == (r == 0)

def gather(t):
    parts = [torch.empty_like(t) for _ in range(n)]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts)

# the CLI refuses a global batch that does not split evenly, before writing anything
args = ["run", "--out", out + "/bad"] + [x for s in settings for x in ("--set", s)]
args += ["--set", "training.batch_size=63"]
assert main(args) == 2
assert not os.path.exists(out + "/bad")

# the slices of every rank make up the global batch, with and without augmentation
torch.manual_seed(0)  # the same training set on every rank
x, y = torch.rand(100, 3, 8, 8), torch.arange(100)
for augment in (None, lambda b, g: crop_and_flip(b, g, torch.zeros(3), padding=2)):
    stream = BatchStream(x, y, 10, data_order_seed=3, augmentation_seed=4, augment=augment)
    for t in (0, 9, 10, 23):
        bx, by = distributed.local_batch(stream, t)
        assert len(bx) == 5
        fx, fy = stream.batch(t)
        assert torch.equal(gather(bx), fx) and torch.equal(gather(by), fy)

# rank 0's decisions, averages, sharded evaluation
assert distributed.due(r == 0, distributed.SYNC_EVERY * 3) is True
assert distributed.due(r == 1, distributed.SYNC_EVERY * 3) is False
assert distributed.due(True, distributed.SYNC_EVERY * 3 + 1) is False
assert distributed.average_(torch.tensor([float(r + 1)])).item() == 1.5
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
ex, ey = torch.randn(101, 12), torch.randint(0, 5, (101,))
loss, accuracy = distributed.evaluate(net, ex, ey)
loss1, accuracy1 = evaluate(net, ex, ey)
assert abs(loss - loss1) < 1e-6 and accuracy == accuracy1, (loss, loss1, accuracy, accuracy1)

# masks: rank 0's is broadcast; disagreement is detected on every rank
torch.manual_seed(r)
mine = Mask({"a.weight": torch.rand(6, 4) < 0.5, "b.weight": torch.rand(3) < 0.5})
torch.manual_seed(0)
rank0 = Mask({"a.weight": torch.rand(6, 4) < 0.5, "b.weight": torch.rand(3) < 0.5})
got = distributed.broadcast_mask(mine)
assert list(got) == list(rank0) and all(torch.equal(got[k], rank0[k]) for k in rank0)
distributed.check_equal(got)
try:
    distributed.check_equal(mine)
    raise AssertionError("differing masks not detected")
except RuntimeError as error:
    assert "differs between ranks" in str(error)

# artifacts: only rank 0 writes, every rank reads what it wrote
run = RunDir(out + "/artifacts")
run.write_json("who.json", {"rank": r})
assert run.read_json("who.json") == {"rank": 0}
run.remove("who.json")
assert not run.exists("who.json")

# the experiment lock: taken by rank 0 for all; --no-wait's refusal reaches every rank
with distributed.exclusive(Path(out) / "free"):
    pass
held = lock.exclusive(Path(out) / "held")
if r == 0:
    held.__enter__()
try:
    with distributed.exclusive(Path(out) / "held", wait=False):
        raise AssertionError("lock not refused")
except UserError as error:
    assert "in use by another lottery process" in str(error)
print(f"rank {r} ok", flush=True)
"""


def test_collective_helpers_and_divisibility_error(tmp_path: Path) -> None:
    script = tmp_path / "helpers.py"
    script.write_text(textwrap.dedent(HELPERS))
    result = torchrun([str(script), str(tmp_path), *SETTINGS], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "rank 0 ok" in result.stdout and "rank 1 ok" in result.stdout
    assert result.stderr.count("is not divisible by the number of processes (2)") == 2
    assert "rank 1: the mask computed here differs from rank 0's" in result.stderr
    assert not (tmp_path / "artifacts" / "who.json").exists()


def test_single_process_helpers_are_identities(tmp_path: Path) -> None:
    assert not collective.active() and collective.world_size() == 1 and collective.is_main()
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")
    distributed.check_batch(63)
    assert distributed.shard(10) == (0, 10) and distributed.shard(10, 1, 2) == (5, 10)
    stream = BatchStream(torch.rand(50, 1, 4, 4), torch.arange(50), 8, data_order_seed=1)
    assert all(torch.equal(a, b) for a, b in zip(distributed.local_batch(stream, 3), stream.batch(3)))
    mask = Mask({"w": torch.tensor([True, False])})
    assert distributed.broadcast_mask(mask) is mask
    distributed.check_equal(mask)
    assert distributed.due(True, 1) and not distributed.due(False, 0)
    with collective.main_writes() as main_rank:
        assert main_rank
    with distributed.exclusive(tmp_path / "x"):
        assert (tmp_path / "x" / ".lock").exists()
