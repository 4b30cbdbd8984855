"""The importer: a public records tree (`records/track_1_short/<date>_<name>/…`) into our ledger.

One record per dated folder, dated from its name (`YYYY-MM-DD_` or `YYYYMMDD_`); its logs are the
.txt/.log files under it (symlinks ignored) that the parser reads with at least one trial. Each is
verified and kept with its verdict: official iff verification passes, else recorded unofficial.
Idempotent: record.json keeps `source = {"import": folder name, "logs_sha256": [...]}`, and a folder
whose logs are already in the ledger is skipped. Names from outside are untrusted: they become a
slug, a sanitized title and sanitized file names; nothing is written outside records/ (ledger.add).
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import ledger, logs
from harness.errors import InputError
from harness.files import sha256_file
from harness.track import load_track, repo_root

DATED = re.compile(r"^(\d{4}-\d{2}-\d{2}|\d{8})_(.*)$", re.DOTALL)
LOG_EXT = (".txt", ".log")


@dataclass
class Item:
    folder: str                     # the folder name as found (shown through `shown()`)
    action: str                     # "import" (dry run), "imported", "skip"
    reason: str = ""
    date: str | None = None
    title: str | None = None
    id: str | None = None
    official: bool | None = None
    logs: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)


@dataclass
class Plan:
    source: str
    track: str
    dry_run: bool
    items: list[Item]

    def to_json(self) -> dict:
        return {"source": self.source, "track": self.track, "dry_run": self.dry_run,
                "imported": sum(i.action in ("import", "imported") for i in self.items),
                "skipped": sum(i.action == "skip" for i in self.items),
                "items": [vars(i) for i in self.items]}


def shown(name: str, width: int = 80) -> str:
    """A name from outside, safe to print: control characters escaped, length capped."""
    s = name.encode("unicode_escape").decode("ascii")
    return s if len(s) <= width else s[:width - 1] + "…"


def title_of(rest: str) -> str:
    t = re.sub(r"[\x00-\x1f\x7f]+", " ", rest.replace("_", " "))
    return " ".join(t.split())[:100] or "untitled"


def _logs_in(folder: Path) -> tuple[list[Path], list[str]]:
    """Readable run logs under `folder` (sorted, symlinks never followed) and why other files were skipped."""
    found, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = shown(str(p.relative_to(folder)))
            if not name.endswith(LOG_EXT):
                continue
            if p.is_symlink() or not p.is_file():
                skipped.append(f"{rel}: a symlink or not a plain file")
                continue
            try:
                parsed = logs.parse_file(p)
            except InputError as e:
                skipped.append(f"{rel}: {e}")
                continue
            if not parsed.trials:
                skipped.append(f"{rel}: no step lines (not a run log)")
                continue
            found.append(p)
    return found, skipped


def import_tree(src: str, track: str, *, dry_run: bool = False, root: Path | None = None) -> Plan:
    """Import every dated folder of `src` as one record of `track`; returns what was (or would be) done."""
    root = root or repo_root()
    base = Path(src)
    if not base.is_dir():
        raise InputError(f"{src}: not a folder (pass e.g. modded-nanogpt/records/track_1_short)")
    load_track(track)  # an unknown track is bad input before anything is read
    known = {tuple(r.source["logs_sha256"]): r.id for r in ledger.records(root)
             if r.source and isinstance(r.source.get("logs_sha256"), list)}
    entries = []
    for p in sorted(base.iterdir(), key=lambda p: p.name):
        m = DATED.match(p.name)
        if p.is_symlink():
            entries.append((None, Item(p.name, "skip", "a symlink (not followed)")))
        elif not p.is_dir():
            continue
        elif not m:
            entries.append((None, Item(p.name, "skip", "name does not start with a date (YYYY-MM-DD_ or YYYYMMDD_)")))
        else:
            d = m[1] if "-" in m[1] else f"{m[1][:4]}-{m[1][4:6]}-{m[1][6:]}"
            try:
                dt.date.fromisoformat(d)
            except ValueError:
                entries.append((None, Item(p.name, "skip", f"{m[1]} is not a real date")))
                continue
            entries.append(((d, p.name), Item(p.name, "import", date=d, title=title_of(m[2]))))
    entries.sort(key=lambda e: (e[0] is not None, e[0] or ("", e[1].folder)))  # skips first, then by date

    imported_any = False
    for key, item in entries:
        if key is None:
            continue
        folder = base / item.folder
        found, item.skipped_files = _logs_in(folder)
        if not found:
            item.action, item.reason = "skip", "no run logs (.txt/.log files with step lines)"
            continue
        shas = sorted(sha256_file(p) for p in found)
        item.logs = [shown(str(p.relative_to(folder))) for p in found]
        if tuple(shas) in known:
            item.action, item.reason = "skip", f"already imported as {known[tuple(shas)]}"
            continue
        prepared = ledger.prepare([str(p) for p in found], track)
        item.official = prepared[0].ok
        known[tuple(shas)] = "(this import)"
        if dry_run:
            continue
        added = ledger.add([], track, item.title, date=item.date, allow_failing=True, prepared=prepared,
                           source={"import": shown(item.folder, 300), "logs_sha256": shas}, root=root,
                           readme=f"Imported by `speedrun import` from the public records folder "
                                  f"`{shown(item.folder)}`; verdict below.")
        item.action, item.id = "imported", added.record.id
        known[tuple(shas)] = added.record.id
        imported_any = True
    if imported_any:
        from harness import leaderboard

        leaderboard.write(root)
    return Plan(str(base), track, dry_run, [i for _, i in entries])


def render(plan: Plan, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"speedrun import {escape(shown(plan.source))} --track {plan.track}"
                    + (" (dry run: nothing written)" if plan.dry_run else ""))
    for col in ("folder", "action", "date", "logs", "record / reason"):
        t.add_column(col, overflow="fold")
    for i in plan.items:
        if i.action == "skip":
            action, what = "[yellow]skip[/]", escape(i.reason)
        else:
            kind = "official" if i.official else "unofficial"
            action = ("[green]" if i.official else "[yellow]") + ("would import" if i.action == "import" else "imported") + "[/]"
            what = escape(f"{i.id or '(new)'} ({kind})")
        if i.skipped_files:
            what += escape(f"; ignored {len(i.skipped_files)} file(s): {'; '.join(i.skipped_files[:3])}")
        t.add_row(escape(shown(i.folder, 60)), action, i.date or "-", str(len(i.logs)), what)
    console.print(t)
    j = plan.to_json()
    console.print(f"{j['imported']} {'to import' if plan.dry_run else 'imported'}, {j['skipped']} skipped")
