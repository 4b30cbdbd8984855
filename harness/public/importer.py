"""The importer: a public records tree (`records/track_1_short/<date>_<name>/…`) into our ledger.

One record per dated folder (`YYYY-MM-DD_`, `YYYY-MM-DD-` or `YYYYMMDD_`), in date order. A folder is
not one submission: `harness/layout.py` groups its logs and decides which group is the submission and
what the others are (baseline, re-time, ablation, other hardware). The record's runs are the
submission's; every other group is stored beside them under `evidence/`, each with its own verdict,
and a baseline group gives the record's speedup with its interval. Runs are judged under the rules
in force on the folder's date, against the previous official record (rule 3, and its val curves for
the systems-only exception). Imported records keep `launch = {"convention": "modded"}`: their scripts
run the public way (`speedrun attempt --baseline` knows it).

With `--readme` (the public README), each record keeps its row: public number, title, contributors, PR
link and the table's official (re-timed) time beside the time its logs show (`source.public`); only
folders the table links can become official records (the others are kept, unofficial: not records).

Idempotent: record.json keeps `source = {"import": folder name, "logs_sha256": [...]}`, and a folder
whose logs are already in the ledger is skipped. Names from outside are untrusted: they become a slug,
a sanitized title and sanitized file names; nothing is written outside records/ (ledger.add).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.public import layout
from harness import ledger
from harness.judge import logs, submission, verify
from harness.core.errors import InputError
from harness.core.files import sha256_file
from harness.public.layout import shown
from harness.core.track import load_track, repo_root


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
    submission: dict | None = None  # {dir, runs, how}
    groups: list[dict] = field(default_factory=list)  # every group: {dir, role, why, runs, steps, gpus, …}
    public: dict | None = None      # with --readme: the table's row {number, title, contributors, pr, time_s, …}


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


def dated_folders(base: Path) -> tuple[list[tuple[str, Path]], list[Item]]:
    """(date, folder) for every dated folder under `base`, in date order, and the entries skipped."""
    dated, skipped = layout.dated_folders(base)
    return dated, [Item(s["folder"], "skip", s["reason"]) for s in skipped]


def convention(parsed: list[logs.ParsedLog]) -> dict | None:
    """How the logs' script is launched: this trainer's flags, or the public scripts' way (no flags,
    data under data/fineweb10B/, logs/<uuid>.txt). None when the logs embed no script."""
    if not any(p.sources for p in parsed):
        return None
    if all(p.era == logs.ERA_OURS for p in parsed):
        return {"convention": "speedrun"}
    return {"convention": "modded", "script": logs.MAIN_FILE, "data_dir": "data/fineweb10B", "logs": "logs"}


def public_rows(readme: str, base: Path) -> dict[str, dict]:
    """Folder name → its row of the README's record table (the table whose links point into `base`)."""
    from harness.public import table

    out: dict[str, dict] = {}
    for r in table.read_table(readme, base):
        for link in r.logs:
            p = table.resolve(link, base)
            if p is None or p.resolve() == base.resolve():
                continue
            name = p.resolve().relative_to(base.resolve()).parts[0]
            if name not in out or r.number < out[name]["number"]:
                who = [c.strip() for c in r.contributors.replace(" and ", ",").split(",") if c.strip()]
                out[name] = {"number": r.number, "title": " ".join(r.description.split()), "contributors": who,
                             "pr": r.pr, "time_s": r.time_s, "date": r.date, "line": r.line}
    return out


def import_tree(src: str, track: str, *, dry_run: bool = False, root: Path | None = None,
                readme: str | None = None) -> Plan:
    """Import every dated folder of `src` as one record of `track`; returns what was (or would be) done.
    `readme`: the public README, whose record table gives each record its number, title, contributors,
    PR and official time; folders it does not link are imported unofficial (not records)."""
    root = root or repo_root()
    base = Path(src)
    if not base.is_dir():
        raise InputError(f"{src}: not a folder (pass e.g. modded-nanogpt/records/track_1_short)")
    t = load_track(track)  # an unknown track is bad input before anything is read
    recs = ledger.records(root)
    known = {tuple(r.source["logs_sha256"]): r.id for r in recs
             if r.source and isinstance(r.source.get("logs_sha256"), list)}
    dated, items = dated_folders(base)
    rows = public_rows(readme, base) if readme else None
    parent = ledger.default_parent(recs, track)
    parent_ref = ledger.reference(parent, root) if parent else None
    imported_any = False
    for date, folder in dated:
        item = Item(folder.name, "import", date=date, title=layout.folder_date(folder.name)[1])
        items.append(item)
        code = (parent_ref.sources or {}).get(logs.MAIN_FILE) if parent_ref else None
        f = layout.read_folder(folder, t, parent_code=code)
        item.title, item.skipped_files = f.title, f.skipped
        item.groups = [g.to_json(folder) for g in f.groups]
        if not f.groups:
            item.action, item.reason = "skip", "no run logs (.txt/.log files with step lines)"
            continue
        every = [p for g in f.groups for p in g.paths]
        shas = sorted(sha256_file(p) for p in every)
        item.logs = [shown(str(p.relative_to(folder))) for p in every]
        if tuple(shas) in known:
            item.action, item.reason = "skip", f"already imported as {known[tuple(shas)]}"
            continue
        if f.submission is None:
            item.action, item.reason = "skip", f"no submission: {f.how}"
            continue
        sub = f.submission
        item.submission = {"dir": sub.dir, "runs": len(sub.paths), "how": f.how}
        evidence = [{"role": g.role, "why": g.why, "dir": g.dir or "", "paths": g.paths}
                    for g in f.groups if g is not sub]
        prepared = submission.prepare([str(p) for p in sub.paths], track, date=date, parent_ref=parent_ref,
                                      evidence=evidence,
                                      parsed={str(p): x for g in f.groups for p, x in zip(g.paths, g.parsed)})
        prepared.notes.append(f"submission: {sub.name}, chosen because {f.how}")
        prepared.parent = parent.id if parent else None
        row = rows.get(folder.name) if rows is not None else None
        not_listed = None
        if rows is not None and row is None:
            not_listed = "not in the README's record table: not a record"
        if row is not None:
            times = [r.train_time_ms for r in prepared.verdict.runs if r.train_time_ms]
            item.public = {**row, "log_time_s": sum(times) / len(times) / 1000 if times else None}
            item.title = row["title"] or item.title
        decision = submission.decide(prepared)  # the one judge
        item.official = decision.record and not_listed is None
        known[tuple(shas)] = "(this import)"
        if dry_run:
            continue
        source = {"import": shown(folder.name, 300), "logs_sha256": shas}
        if item.public:
            source["public"] = item.public
        try:
            added = ledger.add(prepared, decision, item.title, date=date, unofficial=True, root=root,
                               contributors=item.public["contributors"] if item.public else (),
                               unofficial_reason=not_listed, source=source,
                               launch=convention(sub.parsed),
                               readme=f"Imported by `speedrun import` from the public records folder "
                                      f"`{shown(folder.name)}`; verdict below.")
        except submission.Refused as e:  # its logs or runs are in the ledger already: a run is recorded once
            item.action, item.reason = "skip", str(e)
            continue
        item.action, item.id = "imported", added.record.id
        known[tuple(shas)] = added.record.id
        imported_any = True
        if added.record.official or row is not None:  # the next parent (a table row was a public record)
            parent = added.record
            parent_ref = verify.Reference(f"record {parent.id}", sub.sources or None,
                                          [t for p in sub.parsed for t in p.trials])
    if imported_any:
        from harness.ledger import leaderboard

        leaderboard.write(root)
    skips_first = sorted(items, key=lambda i: (i.action != "skip" or i.date is not None, i.date or "", i.folder))
    return Plan(str(base), track, dry_run, skips_first)


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
            num = f"#{i.public['number']} " if i.public else ""
            what = escape(f"{num}{i.id or '(new)'} ({kind}); submission {i.submission['dir'] or '.'} "
                          f"({i.submission['runs']} runs): {i.submission['how']}")
        if i.skipped_files:
            what += escape(f"; ignored {len(i.skipped_files)} file(s): {'; '.join(i.skipped_files[:3])}")
        t.add_row(escape(shown(i.folder, 60)), action, i.date or "-", str(len(i.logs)), what)
    console.print(t)
    j = plan.to_json()
    console.print(f"{j['imported']} {'to import' if plan.dry_run else 'imported'}, {j['skipped']} skipped")
