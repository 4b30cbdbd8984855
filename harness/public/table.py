"""The public README's record table: each row's number, title, time, date, contributors and the links
into a records tree (`read_table`, `resolve`). Read by `speedrun audit --readme` and `record import --readme`.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from harness.core.errors import InputError

ROW = re.compile(r"^\|?\s*(\d+)\s*\|(.*)$")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
README_TIME = re.compile(r"([\d.]+)\s*(minutes?|mins?|seconds?|secs?|s|hours?|h)\b", re.IGNORECASE)
README_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})$")

@dataclass
class Row:
    number: int
    time_s: float | None
    description: str
    date: str | None
    logs: list[str]        # link targets of the Log column named "log"
    line: int
    note: str = ""         # "not a new record" rows (re-timings) say so
    table: int = 0         # which table of the README (a track's history is one table)
    contributors: str = ""
    pr: str | None = None  # the row's PR link


def _seconds(text: str) -> float | None:
    m = README_TIME.search(text)
    if not m:
        return None
    x, unit = float(m[1]), m[2].lower()
    return x * 60 if unit.startswith("m") else x * 3600 if unit.startswith("h") else x


def _date(text: str) -> str | None:
    m = README_DATE.match(text.strip())
    if not m:
        return None
    year = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
    try:
        return dt.date(year, int(m[1]), int(m[2])).isoformat()
    except ValueError:
        return None


def read_table(path: str | Path, tree: Path | None = None) -> list[Row]:
    """Rows of the README's record table: `# | time | description | date | log | contributors`. With
    `tree`, only the table(s) whose log links point into it (by its folder name, or resolving there):
    another track's table is not this track's history."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"--readme {path}: cannot read ({e.strerror})") from None
    rows, table, last = [], 0, -2
    for k, line in enumerate(text.splitlines(), 1):
        if not line.strip().startswith("|") and not ROW.match(line.strip()):
            if line.strip():
                last = -2  # prose between tables: the next row starts another table
            continue
        if k != last + 1:
            table += 1
        last = k
        m = ROW.match(line.strip())
        if not m:
            continue
        cells = [c.strip() for c in m[2].split("|")]
        if len(cells) < 4:
            continue
        time_cell, desc, date_cell, log_cell = cells[:4]
        links = [url for name, url in LINK.findall(log_cell) if name.strip().lower() == "log"]
        pr = next((url for name, url in LINK.findall(log_cell) if name.strip().lower() == "pr"), None)
        rows.append(Row(int(m[1]), _seconds(time_cell), LINK.sub(r"\1", desc), _date(date_cell), links, k,
                        " ".join(cells[4:5])[:120] if "not a new record" in line.lower() else "", table,
                        cells[4] if len(cells) > 4 else "", pr))
    if tree is not None and rows:
        mine = {r.table for r in rows for link in r.logs
                if tree.name in unquote(urlparse(link).path).split("/") or resolve(link, tree) is not None}
        rows = [r for r in rows if r.table in mine] if mine else rows
    if not rows:
        raise InputError(f"--readme {path}: no record-table rows (lines like `12 | 5.03 minutes | … | 11/19/24 | "
                         f"[log](records/…) | …`)")
    return rows


def resolve(link: str, tree: Path) -> Path | None:
    """A README link (`records/track_1_short/<folder>/<file>`, or a GitHub URL to it) as a path in `tree`:
    the longest tail of its path that exists there."""
    parts = [p for p in unquote(urlparse(link).path).split("/") if p and p not in (".", "..")]
    for i in range(len(parts)):
        p = tree.joinpath(*parts[i:])
        if p.exists() and p.resolve().is_relative_to(tree.resolve()):
            return p
    return None


# ---- judging folders ----------------------------------------------------------------------------------------
