"""Verified artifacts: a truncated, bit-flipped or edited file is detected when loaded, said so on stderr,
never used, and the step that produces it is recomputed, ending identical to an undamaged run. `lottery
verify` reports every damaged artifact (exit 1) and exits 0 on a clean store."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from lottery.cli.main import main
from lottery.store import RunDir, layout
from reliability_helpers import assert_same_outcomes, cli_args, experiment_dir, flip_bit, run_cli, truncate

OVERRIDES = ("imp.levels=1", 'imp.rewind=["20it"]', 'controls.kinds=["random_prune"]')
EXTRA = ("--checkpoint-every", "10")
DENSE = "replicate_0/level_0"
LEVEL = "replicate_0/rewind_20it/level_1"
CONTROL = "replicate_0/rewind_20it/controls/level_1/random_prune_seed0"


class Crash(BaseException):
    """A process dying at this point (not an Exception, so nothing on the way up handles it)."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished experiment: dense run, IMP level 1 rewound to iteration 20, a random-pruning control."""
    out = tmp_path_factory.mktemp("reference")
    assert main(cli_args(out, *OVERRIDES, extra=EXTRA)) == 0
    return out


@pytest.fixture
def store(reference: Path, tmp_path: Path) -> Path:
    """A private copy of the finished reference store."""
    shutil.copytree(reference, tmp_path / "store", symlinks=True)  # the experiment links into networks/
    return tmp_path / "store"


def retrained(err: str) -> set[str]:
    """Which training runs printed progress: 'dense', 'prefix' (the dense run's first iterations, for a lost W_k of
    a finished dense run), 'imp' or 'control'."""
    units = set()
    for label in re.findall(r"^lottery: (.*) iteration \d+/\d+:", err, flags=re.MULTILINE):
        kind = "prefix" if "dense prefix" in label else "dense" if "(dense)" in label else None
        units.add(kind or ("control" if "random_prune" in label else "imp"))
    return units


def edit_json(key: str, value: object) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        data = json.loads(path.read_text())
        data[key] = value
        path.write_text(json.dumps(data, indent=2) + "\n")

    return edit


def delete(path: Path) -> None:
    path.unlink()


DAMAGE = [
    # (file relative to the experiment, damage, what `verify` says, training runs recomputed)
    (f"{DENSE}/final.safetensors", truncate, "checksum mismatch", {"dense"}),
    (f"{DENSE}/final.safetensors", flip_bit, "checksum mismatch", {"dense"}),
    (f"{DENSE}/snapshots/iter_20.safetensors", flip_bit, "checksum mismatch", {"prefix"}),  # iterations 0..20
    (f"{DENSE}/metrics.jsonl", truncate, "checksum mismatch", {"dense"}),
    (f"{LEVEL}/mask.safetensors", flip_bit, "checksum mismatch", {"imp"}),
    (f"{LEVEL}/final.safetensors", truncate, "checksum mismatch", {"imp"}),
    (f"{LEVEL}/summary.json", edit_json("final_test_accuracy", 0.5), "checksum mismatch", {"imp"}),
    (f"{LEVEL}/manifest.json", truncate, "malformed manifest", {"imp"}),
    (f"{CONTROL}/final.safetensors", flip_bit, "checksum mismatch", {"control"}),
    (f"{CONTROL}/sparsity.json", edit_json("density", 1.0), "checksum mismatch", {"control"}),
    (f"{LEVEL}/start.safetensors", flip_bit, "checksum mismatch", {"imp"}),
    ("spec.json", flip_bit, "checksum mismatch", set()),
    ("spec.toml", truncate, "checksum mismatch", set()),
    ("results.json", edit_json("runs", []), "checksum mismatch", set()),
]


@pytest.mark.parametrize(
    ("name", "damage", "problem", "recomputed"),
    DAMAGE,
    ids=[f"{damage.__name__}:{name}" for name, damage, *_ in DAMAGE],
)
def test_damaged_artifact_is_detected_and_recomputed(
    reference: Path,
    store: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    damage: Callable[[Path], None],
    problem: str,
    recomputed: set[str],
) -> None:
    experiment = experiment_dir(store)
    damage(experiment / name)

    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 1
    assert f"{experiment / name}: {problem}" in out
    assert out.strip().endswith("1 problem(s)")

    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0, err
    if name.endswith("manifest.json"):  # every artifact it listed is now unrecorded, hence untrusted
        assert f"{(experiment / name).parent / 'summary.json'} failed verification (not in the manifest)" in err
    elif name != "results.json":  # (results are rewritten by every run, never read back)
        assert f"{experiment / name} failed verification (checksum mismatch" in err
        assert "recomputing it" in err
    assert retrained(err) == recomputed
    assert_same_outcomes(store, reference, extra="prefix" if "prefix" in recomputed else None)

    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 0 and out.strip().endswith(" 0 problem(s)"), out


def test_missing_artifact_is_reported_and_recomputed(
    reference: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = experiment_dir(store) / LEVEL / "final.safetensors"
    delete(target)
    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert (code, f"{target}: missing" in out) == (1, True)
    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0 and retrained(err) == {"imp"}
    assert_same_outcomes(store, reference)


def crash_dense_at(iteration: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the dense run at the top of `iteration` (its last checkpoint is the one before)."""
    from lottery.training import loop

    real = loop.lr_at

    def lr_at(t: int, *args: object, **kwargs: object) -> float:
        if t == iteration:
            raise Crash
        return real(t, *args, **kwargs)

    monkeypatch.setattr(loop, "lr_at", lr_at)


@pytest.mark.parametrize("damage", [None, truncate, flip_bit], ids=["intact", "truncated", "bit-flipped"])
def test_checkpoint_resumed_only_when_intact(
    reference: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], None] | None,
) -> None:
    store = tmp_path / "store"
    with monkeypatch.context() as patch:
        crash_dense_at(45, patch)
        with pytest.raises(Crash):
            main(cli_args(store, *OVERRIDES, extra=EXTRA))
    checkpoint = experiment_dir(store) / DENSE / "checkpoint.pt"
    assert RunDir(checkpoint.parent).exists("checkpoint.pt")
    if damage is not None:
        damage(checkpoint)

    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0, err
    if damage is None:
        assert "resuming from iteration 40" in err
    else:
        assert f"{checkpoint} failed verification" in err and "recomputing" in err
        assert "resuming" not in err  # the damaged checkpoint is not used: the run starts over
    assert_same_outcomes(store, reference)


def test_crash_between_manifest_entry_and_artifact(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the manifest recorded final.safetensors but before the file was renamed into place (its bytes
    are in a temporary file), with the half-written temporary file of another write left behind: neither
    temporary file is trusted, `verify` reports the recorded file missing, and the run resumes and ends
    identical."""
    from lottery.store import atomic

    store = tmp_path / "store"
    real = atomic.commit

    def commit(tmp: Path, path: Path) -> None:
        if path.name == "final.safetensors" and path.parent.name == "level_0":
            raise Crash
        real(tmp, path)

    with monkeypatch.context() as patch:
        patch.setattr(atomic, "commit", commit)
        with pytest.raises(Crash):
            main(cli_args(store, *OVERRIDES, extra=EXTRA))
    dense = experiment_dir(store) / DENSE
    assert not (dense / "final.safetensors").exists() and "final.safetensors" in RunDir(dense).manifest()
    assert list(dense.glob(".final.safetensors.*.tmp"))
    partial = dense / ".summary.json.x1y2z3.tmp"
    partial.write_bytes(b'{"diverged": fal')
    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 1 and f"{dense / 'final.safetensors'}: missing" in out

    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0, err
    assert "resuming from iteration 50" in err
    assert_same_outcomes(store, reference)
    assert run_cli(["verify", str(store)], capsys)[0] == 0


def test_unrecorded_file_is_not_trusted(reference: Path, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file whose manifest entry is gone (written by hand, or by a process that died before recording it) is
    reported when read and recomputed."""
    dense = RunDir(experiment_dir(store) / DENSE)
    manifest = dense.manifest()
    del manifest["final.safetensors"]
    (dense.path / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0, err
    assert f"{dense.path / 'final.safetensors'} failed verification (not in the manifest)" in err
    assert_same_outcomes(store, reference)


def test_verify_clean_store_and_bad_path(reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["verify", str(reference)], capsys)
    assert code == 0
    count = int(re.search(r"(\d+) artifacts checked, 0 problem\(s\)", out).group(1))
    assert count >= 20  # every artifact of the experiment was checked
    code, _, err = run_cli(["verify", str(reference / "nowhere")], capsys)
    assert code == 2 and "is not a directory" in err


class NotAllowed:
    """A pickled object that `torch.load(weights_only=True)` refuses to build."""


@pytest.mark.parametrize(
    "contents",
    [{"model": {}, "iteration": 40}, NotAllowed(), [1, 2, 3]],
    ids=["wrong structure", "pickle of a class", "a list"],
)
def test_unloadable_checkpoint_with_a_valid_checksum_is_discarded(
    reference: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    contents: object,
) -> None:
    """A checkpoint whose checksum matches but whose contents cannot be loaded: reported in one line, removed,
    the run starts over and ends identical (no traceback, on this run or any later one)."""
    store = tmp_path / "store"
    with monkeypatch.context() as patch:
        crash_dense_at(45, patch)
        with pytest.raises(Crash):
            main(cli_args(store, *OVERRIDES, extra=EXTRA))
    run = RunDir(experiment_dir(store) / DENSE)
    run.write_torch("checkpoint.pt", contents)  # recorded in the manifest: it verifies
    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert f"{run.path / 'checkpoint.pt'} cannot be loaded (" in err and "starting the run over" in err
    assert "resuming" not in err
    assert_same_outcomes(store, reference)


@pytest.mark.parametrize("name", ["metrics.jsonl", "checkpoint.pt"])
def test_failed_manifest_write_after_an_artifact_leaves_no_false_alarm(
    reference: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """The disk fills (or the manifest is immutable) just after a new version of an artifact replaced the old
    one, before the manifest could record it: every artifact the manifest still lists verifies, the replaced
    one is untrusted (not reported damaged), and the same command then ends identical."""
    from lottery.errors import UserError
    from lottery.store.atomic import INTACT

    store, real, writes = tmp_path / "store", RunDir._record, []

    def record(self: RunDir, entry: str, digest: str | None) -> None:
        if entry == name and digest is not None and self.path.name == "level_0":
            writes.append(entry)
            if len(writes) == 2:  # the second version: it replaces the first one
                raise UserError(f"cannot write {self.path / 'manifest.json'}: No space left on device{INTACT}")
        real(self, entry, digest)

    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "_record", record)
        code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 2 and "No space left on device (earlier artifacts are intact" in err
    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 0, out
    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0, err
    assert_same_outcomes(store, reference)


def test_deleted_manifest_is_reported_and_its_directory_recomputed(
    reference: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    level = experiment_dir(store) / LEVEL
    (level / "manifest.json").unlink()
    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 1
    assert f"{level / 'manifest.json'}: missing (the 6 artifact(s) here are untrusted and will be recomputed)" in out
    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0 and retrained(err) == {"imp"}  # exactly that directory
    assert_same_outcomes(store, reference)
    assert run_cli(["verify", str(store)], capsys)[0] == 0


def test_damaged_manifest_entry_name_does_not_stay_forever(
    reference: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry name edited in a manifest: the file it named is unrecorded (recomputed), the entry names no file;
    after one run the manifest lists exactly the files present, each verified."""
    level = experiment_dir(store) / LEVEL
    manifest = json.loads((level / "manifest.json").read_text())
    manifest["fxnal.safetensors"] = manifest.pop("final.safetensors")
    (level / "manifest.json").write_text(json.dumps(manifest))
    assert run_cli(["verify", str(store)], capsys)[0] == 1
    code, _, err = run_cli(cli_args(store, *OVERRIDES, extra=EXTRA), capsys)
    assert code == 0, err
    assert_same_outcomes(store, reference)
    listed = json.loads((level / "manifest.json").read_text())
    present = {p.name for p in level.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert set(listed) == present - {"manifest.json", layout.KEY_FILE}  # key.json: the key, not an artifact
    code, out, _ = run_cli(["verify", str(store)], capsys)
    assert code == 0, out
