"""Everything is configured in pyproject.toml; this file only ships docs/*.md inside the package (lottery/docs/), so
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
        for doc in sorted((Path(__file__).parent / "docs").glob("*.md")):
            (target / doc.name).write_bytes(doc.read_bytes())


setup(cmdclass={"build_py": BuildWithDocs})
