"""Issue 27, item 8: every public name in docs/api.md, --help pointing at docs that exist (shipped in the wheel),
and a README that says exactly how to install."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lottery
from lottery.cli.docs import docs_dir
from lottery.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_is_in_the_api_table_and_has_a_section() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    table = text[: text.index("\n## ")]
    headings = "\n".join(line for line in text.splitlines() if line.startswith("## "))
    missing_row = [name for name in lottery.__all__ if f"`{name}" not in table]
    missing_section = [name for name in lottery.__all__ if f"`{name}" not in headings]
    assert missing_row == [] and missing_section == []


def test_help_points_at_docs_that_exist(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    paths = re.findall(r"Docs: (\S+\.md) \(the store\), (\S+\.md) \(Python\)", text)
    assert paths, text[-400:]
    assert all(Path(p).is_file() for p in paths[0])
    assert docs_dir() is not None and (docs_dir() / "run-format.md").is_file()


def test_readme_says_how_to_install_from_a_clone_or_a_wheel() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "works as usual" not in readme and "pip install lottery" not in readme
    assert "pip install -e '.[" in readme and "pip wheel . --no-deps -w dist" in readme
    assert "dist/lottery-0.1.0-py3-none-any.whl" in readme


@pytest.mark.slow
def test_the_wheel_ships_the_docs(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("src", "docs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("lottery-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"lottery/docs/run-format.md", "lottery/docs/api.md", "lottery/docs/plugins.md"} <= set(names)


def test_help_never_breaks_a_path_at_a_hyphen() -> None:
    """The docs' paths in --help stay whole, wherever the checkout is (a clone in /tmp/ci-final2 had its path broken
    at the hyphen, and the path a user copies from the help did not exist)."""
    from lottery.cli.main import HelpFormatter

    path = "/tmp/a-checkout-with-hyphens-in-its-name/docs/run-format.md"
    formatter = HelpFormatter("lottery", width=40)
    assert path in formatter._fill_text(f"Docs: {path} (the store).", 40, "").splitlines()
    assert path in formatter._split_lines(f"see {path} for the store", 30)
