"""lottery: find and study lottery tickets (IMP with rewinding, stability, linear mode connectivity)."""

__version__ = "0.1.0"
