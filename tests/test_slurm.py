"""The slurm executor on a real single-node Slurm (tests/slurm_cluster.py: slurmctld, slurmd and munged started
in a temporary directory, on loopback only). The demo spec, shortened, with 2 replicates: every task a Slurm job
with dependencies, results identical to `lottery sweep` in one process, `--status` reports every task done, and
`verify` is clean. A preempted job (submitit's USR2) is requeued and its run resumes from its checkpoint, with
weights identical to an uninterrupted run. Options are checked before anything is submitted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lottery.errors import UserError
from lottery.experiments.slurm import parse_extra, parse_time
from lottery.store.layout import walk
from slurm_cluster import SlurmCluster, Unavailable

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.toml"
SHORT = [
    "--set",
    "imp.levels=2",
    "--set",
    "training.training_steps=60it",
    "--set",
    "training.eval_every=30it",
    "--set",
    "imp.rewind=10it",
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=1)  # small: the machine is shared
    try:
        cluster.start()
    except (Unavailable, OSError, subprocess.SubprocessError) as error:
        cluster.stop()
        pytest.skip(f"Slurm cannot start here: {str(error).splitlines()[0] if str(error) else error!r}")
    try:
        yield cluster
    finally:
        cluster.stop()


def lottery(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "LOTTERY_NO_BROWSER": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lottery", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def weights(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in walk(root, "*.safetensors")}


def results(root: Path) -> list[str]:
    """results.csv without the timing column (wall-clock seconds differ between any two runs)."""
    out = []
    for path in sorted(root.glob("*/results.csv")):
        lines = path.read_text().splitlines()
        column = lines[0].split(",").index("train_seconds")
        out += [",".join(v for i, v in enumerate(line.split(",")) if i != column) for line in lines]
    return out


def test_time_and_option_parsing() -> None:
    assert [parse_time(t) for t in ("30", "90", "1:30:00", "2-00", "0-1:00", "10:30", "1:00:01")] == [
        30,
        90,
        90,
        2880,
        60,
        11,
        61,
    ]  # ('MM:SS' rounds up, as Slurm does)
    for bad in ("", "1h", "a-1", "0", "1:2:3:4"):
        with pytest.raises(UserError, match="--time"):
            parse_time(bad)
    assert parse_extra(["qos=high", "--exclude=n1,n2"]) == {"qos": "high", "exclude": "n1,n2"}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_extra(["qos"])


@given(
    days=st.integers(0, 30),
    hours=st.integers(0, 23),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
    form=st.sampled_from(["D-HH:MM:SS", "HH:MM:SS", "MM:SS", "MM", "D-HH", "D-HH:MM"]),
)
def test_parse_time_reads_every_slurm_form(days: int, hours: int, minutes: int, seconds: int, form: str) -> None:
    text = {
        "D-HH:MM:SS": f"{days}-{hours:02}:{minutes:02}:{seconds:02}",
        "HH:MM:SS": f"{hours}:{minutes:02}:{seconds:02}",
        "MM:SS": f"{minutes}:{seconds:02}",
        "MM": f"{minutes}",
        "D-HH": f"{days}-{hours}",
        "D-HH:MM": f"{days}-{hours}:{minutes:02}",
    }[form]
    total = {
        "D-HH:MM:SS": days * 86400 + hours * 3600 + minutes * 60 + seconds,
        "HH:MM:SS": hours * 3600 + minutes * 60 + seconds,
        "MM:SS": minutes * 60 + seconds,
        "MM": minutes * 60,
        "D-HH": days * 86400 + hours * 3600,
        "D-HH:MM": days * 86400 + hours * 3600 + minutes * 60,
    }[form]  # (in seconds)
    if total < 60 and -(-total // 60) < 1:
        with pytest.raises(UserError, match="--time"):
            parse_time(text)
    else:
        assert parse_time(text) == -(-total // 60)  # whole minutes, rounded up


def test_bad_slurm_options_are_one_line(tmp_path: Path) -> None:
    done = lottery("sweep", str(DEMO), "--executor", "slurm", "--time", "1h", "--out", str(tmp_path / "runs"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "--time '1h' is not a Slurm time" in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing written
    done = lottery("sweep", str(DEMO), "--status", "--out", str(tmp_path / "runs"))
    assert done.returncode == 2 and "no sweep of" in done.stderr


@pytest.mark.slow
def test_demo_sweep_on_slurm_matches_one_process(slurm: SlurmCluster, tmp_path: Path) -> None:
    local = lottery("sweep", str(DEMO), *SHORT, "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr[-2000:]
    started = time.monotonic()
    remote = lottery(
        "sweep",
        str(DEMO),
        *SHORT,
        "--executor",
        "slurm",
        "--partition",
        "debug",
        "--time",
        "10",
        "--cpus-per-task",
        "1",
        "--out",
        str(tmp_path / "slurm"),
        env=slurm.env,
    )
    assert remote.returncode == 0, remote.stderr[-3000:] + slurm.log_tail()
    assert "submitted" in remote.stderr and "Slurm jobs" in remote.stderr
    assert time.monotonic() - started < 540
    assert weights(tmp_path / "local") == weights(tmp_path / "slurm") != {}
    assert results(tmp_path / "local") == results(tmp_path / "slurm") != []
    # every task ran as its own Slurm job, recorded with its job id; --status reports them all done
    record = json.loads(next((tmp_path / "slurm" / ".sweeps").glob("*/sweep.json")).read_text())
    assert record["executor"] == "slurm" and len(set(record["slurm"].values())) == len(record["tasks"]) >= 5
    status = lottery("sweep", str(DEMO), *SHORT, "--status", "--out", str(tmp_path / "slurm"), env=slurm.env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0] == f"0 pending, 0 running, {len(record['tasks'])} done, 0 failed"
    verify = lottery("verify", str(tmp_path / "slurm"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


PREEMPT = """
preset = "lenet_300_100"
[dataset]
name = "synthetic"
validation_size = 200
[model]
name = "lenet_40_20"
[training]
batch_size = 50
training_steps = "3000it"
eval_every = "1000it"
[imp]
levels = 0
"""


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(slurm: SlurmCluster, tmp_path: Path) -> None:
    spec = tmp_path / "long.toml"
    spec.write_text(PREEMPT)
    local = lottery("sweep", str(spec), "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr[-2000:]
    env = {**slurm.env, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lottery",
            "sweep",
            str(spec),
            "--executor",
            "slurm",
            "--time",
            "10",
            "--checkpoint-every",
            "100",
            "--out",
            str(tmp_path / "slurm"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(walk(tmp_path / "slurm", "checkpoint.pt")) and time.monotonic() < deadline:
            assert driver.poll() is None, driver.communicate()[1][-2000:]
            time.sleep(0.05)
        assert list(walk(tmp_path / "slurm", "checkpoint.pt")), "the job never wrote a checkpoint"
        job = next(
            iter(json.loads(next((tmp_path / "slurm" / ".sweeps").glob("*/sweep.json")).read_text())["slurm"].values())
        )
        for signal_name in ("SIGTERM", "USR2"):  # preemption, as submitit's own test helper sends it
            subprocess.run(["scancel", job, "--signal", signal_name], env=slurm.env, check=True, timeout=60)
        out, err = driver.communicate(timeout=540)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    assert driver.returncode == 0, err[-3000:]
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "slurm" / ".sweeps").glob("*/slurm/*.err"))
    logs += "".join(p.read_text(errors="replace") for p in (tmp_path / "slurm" / ".sweeps").glob("*/slurm/*.out"))
    assert "preempted or timed out; requeued" in logs
    assert "resuming from iteration" in logs  # the requeued job went on from the checkpoint
    assert weights(tmp_path / "local") == weights(tmp_path / "slurm") != {}


@pytest.mark.slow
def test_a_driver_started_again_waits_for_the_queued_jobs_instead_of_submitting_twice(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    spec = tmp_path / "two.toml"
    spec.write_text(PREEMPT.replace("levels = 0", "levels = 1"))  # long enough to be queued still
    local = lottery("sweep", str(spec), "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr[-2000:]
    env = {**slurm.env, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "lottery",
        "sweep",
        str(spec),
        "--executor",
        "slurm",
        "--time",
        "10",
        "--out",
        str(tmp_path / "slurm"),
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        ids: dict[str, str] = {}
        while len(ids) < 2 and time.monotonic() < deadline:  # both jobs submitted
            time.sleep(0.1)
            record = next((tmp_path / "slurm" / ".sweeps").glob("*/sweep.json"), None)
            ids = json.loads(record.read_text()).get("slurm", {}) if record else {}
        assert len(ids) == 2
    finally:
        first.kill()  # the driver dies (a logout); its jobs stay queued
        first.communicate(timeout=30)
    again = lottery(*command[3:], env=slurm.env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "submitted 0 Slurm jobs, and waiting for 2 still queued from an earlier run" in again.stderr
    record = json.loads(next((tmp_path / "slurm" / ".sweeps").glob("*/sweep.json")).read_text())
    assert record["slurm"] == ids  # the same jobs, not submitted twice
    assert weights(tmp_path / "local") == weights(tmp_path / "slurm") != {}
