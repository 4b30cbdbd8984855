"""Text for people: markdown table cells and numbers with units, the same in every README and table."""
from __future__ import annotations

import re


def md(text) -> str:
    """One markdown table cell: no newlines or control characters, pipes escaped."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(text)).replace("|", "\\|")


def fmt(x, spec: str, scale: float = 1.0, unit: str = "") -> str:
    """x × scale in `spec` with `unit` appended, or "-" for a missing value."""
    return "-" if x is None else format(x * scale, spec) + unit
