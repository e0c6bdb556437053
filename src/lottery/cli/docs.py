"""Where the documentation is: `docs/*.md` shipped inside the installed package (`lottery/docs/`, copied there by
setup.py when a wheel is built), or the `docs/` directory of a source checkout."""

from __future__ import annotations

from pathlib import Path

REPOSITORY_DOCS = Path(__file__).resolve().parents[3] / "docs"  # src/lottery/cli/docs.py -> <checkout>/docs
PACKAGE_DOCS = Path(__file__).resolve().parents[1] / "docs"  # <site-packages>/lottery/docs


def docs_dir() -> Path | None:
    """The directory holding run-format.md, api.md, ... (the package's copy first); None when neither exists."""
    for directory in (PACKAGE_DOCS, REPOSITORY_DOCS):
        if (directory / "run-format.md").is_file():
            return directory
    return None


def doc(name: str) -> str:
    """The path to show for doc `name` (e.g. 'run-format.md'): an existing file, else its name under docs/."""
    directory = docs_dir()
    return str(directory / name) if directory is not None else f"docs/{name} in the lottery source distribution"
