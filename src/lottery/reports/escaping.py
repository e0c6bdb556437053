"""The one function that puts text into a report's HTML (`lottery.reports.html` and every section use it)."""

from __future__ import annotations

import html


def escaped(value: object) -> str:
    """`value` (any type: a file may hold a string where a number belongs) as HTML text, quotes escaped too, so it
    is safe between tags and inside an attribute's quotes."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)
