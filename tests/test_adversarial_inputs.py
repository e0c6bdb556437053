"""Adversarial inputs (issue 24): values that size processes, image files built to hurt, a report's results.json
written by someone else. Each case ends in one stderr line (exit 2 where it is refused) or a bounded run, never in
a traceback or a machine taken down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lottery.cli.main import main
from lottery.data import stream as streaming
from lottery.data.jpegs import write_folder
from lottery.experiments.context import default_workers
from lottery.training import Runtime

SIZE = 16
CPUS = len(os.sched_getaffinity(0))


def folder_args(out: Path, root: Path, *extra: str, workers: int = 1) -> list[str]:
    """`lottery train` of a 4-iteration conv2 on the image folder `root`."""
    args = ["train", "--out", str(out), "--progress", "log", "--device", "cpu", "--data-workers", str(workers)]
    settings = [f"dataset.root={root}", "dataset.name=imagefolder", f"dataset.image_size={SIZE}",
                "dataset.validation_size=0", "dataset.augment=true", "model.name=conv2", "training.batch_size=6",
                "training.training_steps=4it", "training.eval_every=2it", *extra]  # fmt: skip
    for setting in settings:
        args += ["--set", setting]
    return args


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("jpegs"), classes=2, train_per_class=6, val_per_class=2)


# 1. --data-workers sizes a process pool: capped at the CPUs this process may use ------------------------------
def test_data_workers_are_capped_at_the_usable_cpus(capsys: pytest.CaptureFixture[str]) -> None:
    assert default_workers(Runtime(data_workers=100000)) == CPUS
    assert capsys.readouterr().err == f"lottery: --data-workers 100000 cut to {CPUS}, the CPUs this process may use\n"
    assert default_workers(Runtime(data_workers=CPUS)) == CPUS
    assert default_workers(Runtime(data_workers=0)) == 0
    assert capsys.readouterr().err == ""  # a value that fits is taken as it is, silently


def test_huge_data_workers_run_with_a_bounded_pool(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lottery train --data-workers 100000` trains with at most CPUS decoding processes (the pool is checked
    before it forks anything: on the unbounded code this test fails instead of forking 100000 processes)."""
    sizes = []
    real = streaming.ProcessPoolExecutor

    def bounded(workers: int, **kwargs: object) -> streaming.ProcessPoolExecutor:
        sizes.append(workers)
        assert workers <= CPUS, f"a pool of {workers} processes on {CPUS} CPUs"
        return real(workers, **kwargs)

    monkeypatch.setattr(streaming, "ProcessPoolExecutor", bounded)
    monkeypatch.setattr(streaming, "_pools", {})  # this process's pools: a fresh one is made here
    try:
        assert main(folder_args(tmp_path / "out", images, workers=100000)) == 0
    finally:
        for pool in streaming._pools.values():
            pool.shutdown(wait=True)
    err = capsys.readouterr().err
    assert err.count(f"lottery: --data-workers 100000 cut to {CPUS}") == 1
    assert sizes == [CPUS]
