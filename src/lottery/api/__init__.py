"""The Python API's functions beyond the pruning package (exported from `lottery`; see docs/api.md)."""
