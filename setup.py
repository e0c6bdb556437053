"""Everything is configured in pyproject.toml; this file only ships docs/**/*.md inside the package (lottery/docs/), so
that the CLI's --help and error messages can point at documentation an installed wheel has
(`lottery.cli.docs.docs_dir`)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithDocs(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "lottery" / "docs"
        target.mkdir(parents=True, exist_ok=True)
        docs = Path(__file__).parent / "docs"
        for doc in sorted(docs.rglob("*.md")):  # docs/extending/*.md too
            (target / doc.relative_to(docs)).parent.mkdir(parents=True, exist_ok=True)
            (target / doc.relative_to(docs)).write_bytes(doc.read_bytes())


setup(cmdclass={"build_py": BuildWithDocs})
