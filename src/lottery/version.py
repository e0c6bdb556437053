"""The version of lottery (one place; the package and the provenance of every file written read it)."""

__version__ = "0.1.0"
