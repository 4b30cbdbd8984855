"""records/ledger.jsonl, a hash chain over the record folders, and the lock every writer holds.

Each ledger line is `{"seq", "id", "record_sha256", "prev", "hash"}`, canonical JSON (sorted keys, no
spaces), where `hash` = sha256 of the line's canonical JSON without "hash" and `prev` is the previous
line's hash. `speedrun ledger check` re-derives every hash and every file's sha256 and names the first
break. Writes hold an exclusive flock on records/.ledger.lock; the next writer removes or completes what a
crashed one left (`recover`). Standard library only: `speedrun ledger` starts without numpy or torch.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import InputError
from harness.core.files import sha256_bytes
from harness.core.track import REF, repo_root
from harness.ledger.record import FOLDER, ID, Record, RecordError, read_record

GENESIS = "0" * 64
LEDGER = "ledger.jsonl"
LOCK = ".ledger.lock"
STAGING = ".staging-"


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def line_hash(line: dict) -> str:
    return sha256_bytes(canonical({k: v for k, v in line.items() if k != "hash"}).encode())


def make_line(seq: int, rid: str, record_sha256: str, prev: str) -> dict:
    line = {"seq": seq, "id": rid, "record_sha256": record_sha256, "prev": prev}
    line["hash"] = line_hash(line)
    return line


def ledger_path(root: Path | None = None) -> Path:
    return (root or repo_root()) / "records" / LEDGER


def read_lines(root: Path | None = None) -> list[dict]:
    """The ledger's lines, with the chain checked (not the files): a broken chain is a RecordError."""
    path = ledger_path(root)
    lines, prev = [], GENESIS
    if not path.exists():
        return lines
    for k, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        problem = _line_problem(raw, k, prev)
        if problem:
            raise RecordError(f"{path}:{k}: {problem}; run `speedrun ledger check`")
        line = json.loads(raw)
        lines.append(line)
        prev = line["hash"]
    return lines


def _line_problem(raw: str, k: int, prev: str) -> str | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return "not JSON (a torn or hand-edited line)"
    if not isinstance(line, dict) or set(line) != {"seq", "id", "record_sha256", "prev", "hash"}:
        return "not a ledger line (needs seq, id, record_sha256, prev, hash)"
    if line["seq"] != k:
        return f"seq {line['seq']} on line {k} (a reordered or deleted line)"
    if line["prev"] != prev:
        return "prev does not match the previous line's hash (a reordered, inserted or deleted line)"
    if line["hash"] != line_hash(line):
        return "hash does not match the line (an edited line)"
    if not isinstance(line["id"], str) or not ID.match(line["id"]):
        return f"id {line['id']!r} is not a record id"
    return None


def records(root: Path | None = None) -> list[Record]:
    """Every record in ledger order, each record.json checked against its ledger sha256 and the schema."""
    root = root or repo_root()
    out = []
    for line in read_lines(root):
        folder = root / "records" / line["id"]
        data = (folder / "record.json").read_bytes() if (folder / "record.json").is_file() else b""
        if sha256_bytes(data) != line["record_sha256"]:
            raise RecordError(f"{folder}/record.json: missing or edited (ledger seq {line['seq']}); "
                              f"run `speedrun ledger check`")
        out.append(read_record(folder))
    return out


def find(recs: list[Record], rid: str, flag: str, root: Path | None = None) -> Record:
    """The record `rid`, given whole (tiny-cpu/0001_slug) or by number (tiny-cpu/0001)."""
    m = REF.match(rid)
    hits = [r for r in recs if m and (r.id == rid or (m["slug"] is None and r.id.startswith(f"{rid}_")))]
    if len(hits) != 1:
        raise InputError(f"{flag} {rid!r}: {'no' if not hits else 'more than one'} such record in "
                         f"{ledger_path(root)} (known: {', '.join(sorted(r.id for r in recs)) or 'none'})")
    return hits[0]


def default_parent(recs: list[Record], track_name: str) -> Record | None:
    """The track's latest official record: what a new one is compared with unless told otherwise."""
    return next((r for r in reversed(recs) if r.track == track_name and r.official), None)


# ---- the lock, and what a crashed writer left -------------------------------------------------------

def _crash_point(name: str) -> None:
    """Test hook (tests/test_ledger.py): SPEEDRUN_TEST_CRASH_AT=<name> SIGKILLs this process right here.
    Points: after_folder (staging folder written), before_replace (new ledger fsynced, not yet in place),
    after_replace (ledger in place, folder not yet renamed)."""
    if os.environ.get("SPEEDRUN_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def locked(root: Path):
    """Exclusive flock on records/.ledger.lock: one writer at a time, released even if the process dies."""
    (root / "records").mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "records" / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def recover(root: Path, lines: list[dict]) -> None:
    """Under the lock: finish or remove what a crashed writer left (staging folders only it could make)."""
    listed = {ln["id"] for ln in lines}
    for staged in sorted((root / "records").glob(f"*/{STAGING}*")):
        rid = f"{staged.parent.name}/{staged.name[len(STAGING):]}"
        final = staged.parent / staged.name[len(STAGING):]
        if rid in listed and not final.exists():
            os.rename(staged, final)  # the ledger line landed; the rename did not
        else:
            shutil.rmtree(staged)
    for tmp in (root / "records").glob(f".{LEDGER}.*.tmp"):  # a ledger write that never reached its rename
        tmp.unlink(missing_ok=True)


# ---- checking -------------------------------------------------------------------------------------------

@dataclass
class Report:
    """What `speedrun ledger check` found: the first break (None when intact) and what was hashed."""
    records: list[Record]
    files: int
    head: str
    broken: dict | None  # {seq, id, file, problem}

    @property
    def ok(self) -> bool:
        return self.broken is None

    def to_json(self) -> dict:
        return {"ok": self.ok, "records": len(self.records), "files": self.files, "head": self.head,
                "break": self.broken,
                "tracks": {t: sum(r.track == t for r in self.records) for t in sorted({r.track for r in self.records})}}


def check(root: Path | None = None) -> Report:
    """Re-derive every line hash and every file's sha256; stop at the first break."""
    root = root or repo_root()
    rdir = root / "records"
    lp = ledger_path(root)
    recs, nfiles, prev = [], 0, GENESIS

    def broken(seq, rid, file, problem):
        return Report(recs, nfiles, prev, {"seq": seq, "id": rid, "file": file, "problem": problem})

    raw_lines = lp.read_text(encoding="utf-8").splitlines() if lp.exists() else []
    listed = set()
    for k, raw in enumerate(raw_lines, 1):
        problem = _line_problem(raw, k, prev)
        if problem:
            return broken(k, None, f"records/{LEDGER}", f"line {k}: {problem}")
        line = json.loads(raw)
        rid, folder = line["id"], rdir / line["id"]
        rel = f"records/{rid}"
        listed.add(rid)
        rj = folder / "record.json"
        if not rj.is_file():
            staged = folder.parent / f"{STAGING}{folder.name}"
            hint = " (a crashed `record add`: the next `speedrun record add` completes it)" if staged.exists() else ""
            return broken(k, rid, f"{rel}/record.json", "missing" + hint)
        if sha256_bytes(rj.read_bytes()) != line["record_sha256"]:
            return broken(k, rid, f"{rel}/record.json", "sha256 differs from the ledger's (edited)")
        try:
            rec = read_record(folder)
        except RecordError as e:
            return broken(k, rid, f"{rel}/record.json", str(e))
        if rec.id != rid:
            return broken(k, rid, f"{rel}/record.json", f"says id {rec.id!r}")
        for path, h in sorted(rec.files.items()):
            f = folder / path
            if not f.is_file() or f.is_symlink():
                return broken(k, rid, f"{rel}/{path}", "missing")
            if sha256_bytes(f.read_bytes()) != h:
                return broken(k, rid, f"{rel}/{path}", "sha256 differs from record.json's (edited)")
            nfiles += 1
        extra = sorted(r for p in folder.rglob("*") if (p.is_symlink() or not p.is_dir())
                       and (r := p.relative_to(folder).as_posix()) not in rec.files and r != "record.json")
        if extra:
            return broken(k, rid, f"{rel}/{extra[0]}", "not listed in record.json (added after recording)")
        recs.append(rec)
        prev = line["hash"]
    for folder in sorted(p for p in rdir.glob("*/*") if p.is_dir() and FOLDER.match(p.name)):
        rid = f"{folder.parent.name}/{folder.name}"
        if rid not in listed:
            return broken(len(raw_lines) + 1, rid, f"records/{rid}", "record folder not in the ledger "
                          "(a deleted ledger line?)")
    return Report(recs, nfiles, prev, None)


def render_check(rep: Report, console) -> None:
    """`speedrun ledger check` for people: the first break, or a table per track and INTACT."""
    if not rep.ok:
        b = rep.broken
        console.print(f"[bold red]BROKEN[/] at ledger seq {b['seq']}" + (f" ({b['id']})" if b["id"] else "")
                      + f": {b['file']}: {b['problem']}", highlight=False)
        console.print(f"{len(rep.records)} record(s) before it are intact.")
        return
    if rep.records:
        from rich.table import Table

        t = Table(title="speedrun ledger check")
        for col in ("track", "records", "official", "latest"):
            t.add_column(col)
        for name in sorted({r.track for r in rep.records}):
            rs = [r for r in rep.records if r.track == name]
            t.add_row(name, str(len(rs)), str(sum(r.official for r in rs)), rs[-1].id)
        console.print(t)
    console.print(f"[bold green]INTACT[/]: {len(rep.records)} record(s), {rep.files} file(s) re-hashed; "
                  f"head {rep.head[:16]}…", highlight=False)
