"""Storing a record: the folder built in a hidden staging folder, the new ledger landed by fsync +
os.replace, and only then the folder renamed into place, so a crash leaves the ledger as it was (or fully
appended) and never a visible record folder the ledger does not list. It stores what the judge decided;
under the lock it asks the judge once more what only the ledger as it is now can show (a run stored
since, a newer record). Standard library only.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import InputError
from harness.core.files import atomic_write, finite as number_tree, fsync_dir, number, safe_relpath, sha256_bytes
from harness.core.track import repo_root
from harness.judge import logs, submission, verify
from harness.ledger.chain import (GENESIS, STAGING, _crash_point, canonical, default_parent, find, ledger_path,
                                  locked, make_line, read_lines, records, recover)
from harness.ledger.readme import render_readme
from harness.ledger.record import (DATE, FOLDER, RESERVED, SCHEMA_VERSION, Record, read_record, record_bytes,
                                   slugify, validate)


@dataclass
class Added:
    record: Record
    line: dict
    verdict: verify.Verdict
    notes: list[str] = field(default_factory=list)


def reference(rec: Record, root: Path | None = None) -> verify.Reference:
    """A record as what a candidate is judged against: its stored scripts and its runs' val curves."""
    folder = (root or repo_root()) / "records" / rec.id
    sources, trials = {}, []
    for rel in sorted(rec.files):
        if rel.startswith("logs/"):
            trials += logs.parse_file(folder / rel).trials
        elif not rel.startswith("evidence/") and rel not in RESERVED:
            sources[rel] = (folder / rel).read_text(encoding="utf-8", errors="replace")
    return verify.Reference(f"record {rec.id}", sources or None, trials)


def record_reference(track_name: str, rid: str | None = None, root: Path | None = None) -> verify.Reference | None:
    """The record `rid` (else the track's latest official one) as the judge reads a parent; None when the
    track has no record yet."""
    recs = records(root)
    rec = find(recs, rid, "--parent", root) if rid else default_parent(recs, track_name)
    return reference(rec, root) if rec else None


def parent_for(track_name: str, parent: str | None = None, root: Path | None = None) -> tuple[Record | None,
                                                                                           verify.Reference | None]:
    """The record runs on `track_name` improve on (`parent` by id, else the track's latest official) and
    how the judge reads it; (None, None) when the track has no record yet. A parent on another track, or an
    unofficial one, is bad input. Finishes what a crashed writer left before reading."""
    root = root or repo_root()
    with locked(root):
        recover(root, read_lines(root))
    recs = records(root)
    rec = find(recs, parent, "--parent", root) if parent else default_parent(recs, track_name)
    if rec is None:
        return None, None
    check_parent(rec, track_name)
    return rec, reference(rec, root)


_PRINTS: dict[str, list] = {}  # a stored log's sha256 → its runs' fingerprints (stored logs never change)


def held(existing: list[Record], track_name: str, root: Path) -> tuple[dict[str, str], dict[tuple, str]]:
    """What the ledger holds, for the judge's `duplicates`: every stored log's sha256 → where, and every run
    fingerprint of this track's records → where. Each stored log is parsed once a process (an import adds a
    hundred records)."""
    have = {h: f"records/{r.id}/{p}" for r in existing for p, h in r.files.items()
            if p.startswith(("logs/", "evidence/"))}
    seen: dict[tuple, str] = {}
    for r in existing:
        if r.track != track_name:
            continue
        for p, h in r.files.items():
            if p.startswith(("logs/", "evidence/")):
                if h not in _PRINTS:
                    parsed = logs.parse_file(root / "records" / r.id / p)
                    _PRINTS[h] = [verify.fingerprints(t, submission.ACROSS_RECORDS) for t in parsed.trials]
                for prints in _PRINTS[h]:
                    for key, _ in prints:
                        seen.setdefault(key, f"records/{r.id}/{p}")
    return have, seen


def check_parent(rec: Record, track_name: str) -> None:
    """A parent is a record of the same track: another track's record, or an unofficial one (not a
    record), is bad input."""
    if rec.track != track_name:
        raise InputError(f"--parent {rec.id} is a {rec.track} record; these runs are on {track_name}: a record's "
                         "parent is the record it beat on its own track")
    if not rec.official:
        raise InputError(f"--parent {rec.id} is unofficial (not a record): a parent must be a record it beat")


def summarize(v: verify.Verdict, track: dict) -> tuple[list[dict], dict]:
    """Per-trial runs and verify's summary statistics (n counts copies once)."""
    runs = []
    for r in v.runs:
        seed = r.log.env.speedrun.get("seed", (r.trial.result or {}).get("seed"))
        if isinstance(seed, str) and seed.lstrip("-").isdigit():
            seed = int(seed)
        runs.append({"file": r.file, "seed": seed if isinstance(seed, (int, str)) else None,
                     "val_loss": number(r.val_loss), "train_time_ms": number(r.train_time_ms),
                     "steps": r.trial.final_step, "ok": r.ok})
    s = v.summary
    summary = {"n": s["n"], "mean_val_loss": number(s["mean_val_loss"]),
               "std_val_loss": number(s["std_val_loss"]), "p_value": number(s["p_value"]),
               "mean_train_time_ms": number(s["mean_train_time_ms"]),
               "train_time_ms_ci95": [number(x) for x in s["train_time_ms_ci95"]] if s.get("train_time_ms_ci95")
               else None}
    return runs, summary


def _verdict_json(v: verify.Verdict) -> dict:
    return number_tree(v.to_json())


def add(prepared: submission.Prepared, decision, title: str, *, contributors: list[str] = (),
        date: str | None = None, unofficial: bool = False, unofficial_reason: str | None = None,
        readme: str | None = None, source: dict | None = None, root: Path | None = None,
        launch: dict | None = None) -> Added:
    """Store one record and append its ledger line, as the judge decided (`decision` on `prepared`): official
    only when it is a record. Not a record raises Refused unless `unofficial` (then it is stored
    unofficial, with the judge's reasons); logs or runs already in the ledger raise Refused whatever the
    flags; bad input raises InputError; either way nothing is written. `unofficial_reason`: stored
    unofficial even if it is a record, and the README says why (an attempt that lost runs). The caller
    regenerates the leaderboard (`leaderboard.write`)."""
    root = root or repo_root()
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    if not DATE.match(date):
        raise InputError(f"--date {date!r}: expected YYYY-MM-DD")
    v, track, stored, notes = prepared.verdict, prepared.track, prepared.stored, prepared.notes
    track_name = track["name"]
    if not decision.record and not unofficial:
        raise submission.Refused(v, decision)
    if not decision.record and unofficial_reason is None:
        unofficial_reason = ("not a record: " + "; ".join(f"{r['rule']}: {r['detail']}" for r in decision.reasons)
                             if decision.reasons else f"a reproduction of {decision.reproduction_of}, not a record")
    title = " ".join(title.split()) or "untitled"
    runs, summary = summarize(v, track)
    first = next((r.log for r in v.runs if r.log.sources), None)
    snapshot = {}
    for path, text in (first.sources if first else {}).items():
        rel = safe_relpath(path)
        if rel is None or rel in RESERVED or rel.startswith(("logs/", "evidence/")) or rel in snapshot:
            notes.append(f"embedded file {path!r} not stored: unsafe or clashing name")
            continue
        snapshot[rel] = text.encode("utf-8")

    with locked(root):
        lines = read_lines(root)
        recover(root, lines)
        existing = [read_record(root / "records" / ln["id"]) for ln in lines]
        # what only the ledger as it is now can show, asked of the judge under the lock
        submission.duplicates(stored, v, *held(existing, track_name, root))
        latest = default_parent(existing, track_name)
        decision, behind = submission.behind_latest(decision, prepared.parent, latest.id if latest else None)
        unofficial_reason = unofficial_reason or behind
        parent = prepared.parent
        if parent is not None:
            parent = find(existing, parent, "--parent", root).id  # still there, under the lock
        tdir = root / "records" / track_name
        nums = [r.number for r in existing if r.track == track_name]
        nums += [int(m[1]) for p in tdir.iterdir() if (m := FOLDER.match(p.name))]
        name = f"{max(nums, default=0) + 1:04d}_{slugify(title)}"
        rid = f"{track_name}/{name}"
        files = dict(snapshot)
        files.update(stored)
        readme_text = render_readme(rid, track, title, date, contributors, parent, v, summary, readme, notes,
                                    unofficial_reason=unofficial_reason, evidence=prepared.evidence,
                                    speedup=prepared.speedup, decision=decision)
        files["README.md"] = readme_text.encode("utf-8")
        rec = Record(schema_version=SCHEMA_VERSION, id=rid, track=track_name, track_version=track["version"],
                     title=title, date=date, contributors=list(contributors), parent=parent,
                     official=decision.record and unofficial_reason is None,
                     code_sha256=first.code_sha256 if first else None,
                     files={k: sha256_bytes(b) for k, b in sorted(files.items())}, runs=runs, summary=summary,
                     verdict=_verdict_json(v), source=source, evidence=number_tree(prepared.evidence) or None,
                     speedup=number_tree(prepared.speedup), launch=launch)
        validate(rec.to_json())  # what we write must read back
        files["record.json"] = record_bytes(rec)

        staging = tdir / f"{STAGING}{name}"
        for rel, data in files.items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _crash_point("after_folder")

        line = make_line(len(lines) + 1, rid, sha256_bytes(files["record.json"]), lines[-1]["hash"] if lines else GENESIS)
        lp = ledger_path(root)
        old = lp.read_bytes() if lp.exists() else b""
        atomic_write(lp, [old, (canonical(line) + "\n").encode()], before_replace=lambda: _crash_point("before_replace"))
        _crash_point("after_replace")
        os.rename(staging, tdir / name)
        fsync_dir(tdir)
    return Added(rec, line, v, notes)


def render_added(rec: dict, line: dict, notes: list[str], console, source: str = "") -> None:
    """One line for a new record (and its notes): id, official or not, ledger seq and hash."""
    kind = "[green]official[/]" if rec["official"] else "[yellow]unofficial[/]"
    console.print(f"recorded [bold]{rec['id']}[/] ({kind}){source} → records/{rec['id']}/; ledger seq {line['seq']}, "
                  f"hash {line['hash'][:16]}…; leaderboard.md regenerated", highlight=False)
    for n in notes:
        console.print(f"[yellow]note[/]: {n}", highlight=False)
