"""Resources: a write that fails (disk full, permission denied, file too large) stops the command with one
clear error line and exit code 2. Every artifact written before is intact and still verifies, no temporary
file is left behind, and the same command, once writes succeed again, resumes and ends identical to a run
that never failed."""

from __future__ import annotations

import errno
import os
import resource
import tempfile
from pathlib import Path
from typing import BinaryIO

import pytest

from lottery.cli.main import main
from lottery.store import atomic
from reliability_helpers import (
    assert_same_outcomes,
    cli_args,
    experiment_dir,
    run_cli,
    run_subprocess,
    temp_files,
    trained,
    tree,
)

OVERRIDES = ("imp.levels=1", 'controls.kinds=["random_prune"]')
EXTRA = ("--checkpoint-every", "10")
DENSE = "replicate_0/level_0"
LEVEL = "replicate_0/rewind_0it/level_1"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    assert main(cli_args(out, *OVERRIDES, extra=EXTRA)) == 0
    return out


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class HalfWrite:
    """A file whose write stores half of the data, then fails: the disk filled up during the write."""

    def __init__(self, f: BinaryIO, error: OSError) -> None:
        self.f, self.error = f, error

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise self.error

    def __getattr__(self, name: str) -> object:
        return getattr(self.f, name)

    def __enter__(self) -> HalfWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


class FailingWrites:
    """Make the `nth` atomic write of `name` (in a directory whose path ends with `where`) fail with `code`,
    at one step of the write: creating the temporary file, writing it, fsync or the rename."""

    def __init__(self, step: str, code: int, where: str, name: str, nth: int = 1, store: Path | None = None) -> None:
        self.step, self.code, self.where, self.name, self.nth = step, code, where, name, nth
        self.store = store  # where the experiment's run directories link to (networks/)
        self.seen = 0

    def _target(self, path: str) -> bool:
        """Whether `path` (the final name, or its temporary `.<name>.<random>.tmp`) is the file to fail."""
        p = Path(path)
        base = p.name if p.suffix != ".tmp" else p.name[1:].rsplit(".", 2)[0]
        if base != self.name:
            return False
        if str(p.parent).endswith(self.where):
            return True  # an open file's path is the network's, not the experiment's link to it:
        return self.store is not None and any(p.parent == d.resolve() for d in self.store.glob(f"*/{self.where}"))

    def _fail_now(self) -> bool:
        self.seen += 1
        return self.seen == self.nth

    def error(self, path: str) -> OSError:
        return OSError(self.code, os.strerror(self.code), path)

    def install(self, patch: pytest.MonkeyPatch) -> None:
        if self.step == "create":
            real_mkstemp = tempfile.mkstemp

            def mkstemp(*args: object, dir: str = "", prefix: str = "", **kwargs: object):  # noqa: A002, ANN202
                if self._target(str(Path(dir) / (prefix + "x.tmp"))) and self._fail_now():
                    raise self.error(str(Path(dir) / prefix))
                return real_mkstemp(*args, dir=dir, prefix=prefix, **kwargs)

            patch.setattr(atomic.tempfile, "mkstemp", mkstemp)
        elif self.step == "write":
            real_fdopen = os.fdopen

            def fdopen(fd: int, *args: object, **kwargs: object):  # noqa: ANN202
                f = real_fdopen(fd, *args, **kwargs)
                if self._target(_fd_path(fd)) and self._fail_now():
                    return HalfWrite(f, self.error(_fd_path(fd)))
                return f

            patch.setattr(atomic.os, "fdopen", fdopen)
        elif self.step == "fsync":
            real_fsync = os.fsync

            def fsync(fd: int) -> None:
                if self._target(_fd_path(fd)) and self._fail_now():
                    raise self.error(_fd_path(fd))
                real_fsync(fd)

            patch.setattr(atomic.os, "fsync", fsync)
        elif self.step == "rename":
            real_replace = os.replace

            def replace(src: str, dst: str) -> None:
                if self._target(str(dst)) and self._fail_now():
                    raise self.error(str(dst))
                real_replace(src, dst)

            patch.setattr(atomic.os, "replace", replace)
        else:
            raise ValueError(self.step)


CASES = [
    # (step that fails, errno, directory, file, which write of it, words of the error, what the rerun does)
    ("write", errno.ENOSPC, LEVEL, "final.safetensors", 1, "No space left on device", "resuming from 50"),
    ("fsync", errno.ENOSPC, LEVEL, "checkpoint.pt", 3, "No space left on device", "resuming from 20"),
    ("fsync", errno.EIO, f"{DENSE}/snapshots", "iter_0.safetensors", 1, "Input/output error", "starting over"),
    ("rename", errno.EACCES, DENSE, "summary.json", 1, "Permission denied", "resuming from 50"),
    ("create", errno.EACCES, LEVEL, "mask.safetensors", 1, "Permission denied", "starting over"),
    ("create", errno.ENOSPC, "", "results.json", 1, "No space left on device", "nothing to train"),
]


@pytest.mark.parametrize(
    ("step", "code", "where", "name", "nth", "words", "then"),
    CASES,
    ids=[f"{step}-{errno.errorcode[code]}-{name}" for step, code, _, name, *_ in CASES],
)
def test_failed_write_is_clear_keeps_earlier_artifacts_and_resumes(
    reference: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    step: str,
    code: int,
    where: str,
    name: str,
    nth: int,
    words: str,
    then: str,
) -> None:
    store = tmp_path / "store"
    argv = cli_args(store, *OVERRIDES, extra=EXTRA)
    failing = FailingWrites(step, code, where, name, nth, store)
    with pytest.MonkeyPatch.context() as patch:
        failing.install(patch)
        code, out, err = run_cli(argv, capsys)
    assert failing.seen >= failing.nth, "the failing write never happened"
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("lottery: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert f"cannot write {store}" in errors[0] and name in errors[0]
    assert words in errors[0] and "earlier artifacts are intact" in errors[0]

    assert temp_files(store) == []  # the half-written temporary file is gone
    code, verified, _ = run_cli(["verify", str(store)], capsys)
    assert code == 0 and verified.strip().endswith(" 0 problem(s)"), verified  # all that was recorded is intact

    code, _, err = run_cli(argv, capsys)  # space is back
    assert code == 0, err
    if then.startswith("resuming from"):
        assert f"resuming from iteration {then.split()[-1]}" in err
    elif then == "starting over":
        assert trained(err) and "resuming" not in err
    else:
        assert not trained(err)
    assert_same_outcomes(store, reference)


def test_file_size_limit_in_a_real_process(tmp_path: Path) -> None:
    """No mocking: the kernel refuses writes beyond RLIMIT_FSIZE (EFBIG), as a full quota would."""
    store = tmp_path / "store"
    argv = cli_args(store, command="train")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    failed = run_subprocess(argv, preexec_fn=limit)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    (error,) = [line for line in failed.stderr.splitlines() if line.startswith("lottery: error:")]
    assert "cannot write" in error and "File too large" in error and "earlier artifacts are intact" in error
    assert temp_files(store) == []
    experiment = experiment_dir(store)
    before = {name: data for name, data in tree(experiment).items() if name.startswith("spec.")}
    assert set(before) == {"spec.json", "spec.toml"}  # written before the limit was hit

    resumed = run_subprocess(argv)
    assert resumed.returncode == 0, resumed.stderr
    assert {name: data for name, data in tree(experiment).items() if name.startswith("spec.")} == before
    verify = run_subprocess(["verify", str(store)])
    assert verify.returncode == 0 and verify.stdout.strip().endswith(" 0 problem(s)"), verify.stdout
    assert (experiment / DENSE / "final.safetensors").is_file()


def test_read_only_store_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store the user may not write to (skipped as root, who may write anywhere)."""
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o555)
    try:
        code, _, err = run_cli(cli_args(store), capsys)
    finally:
        store.chmod(0o755)
    assert code == 2 and "Permission denied" in err and "Traceback" not in err
    assert list(store.iterdir()) == []
