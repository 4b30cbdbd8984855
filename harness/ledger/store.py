"""The ledger: records/<track>/<NNNN>_<slug>/ folders and records/ledger.jsonl, a hash chain over them.

A record folder holds `record.json` (schema below, validated on every read), the script snapshot
(`train_gpt.py` and the kernels its logs embed), `logs/` and `README.md`. Each ledger line is
`{"seq", "id", "record_sha256", "prev", "hash"}`, canonical JSON (sorted keys, no spaces), where
`hash` = sha256 of the line's canonical JSON without "hash" and `prev` is the previous line's hash.

Writes hold an exclusive flock on records/.ledger.lock. The record is built in a hidden staging folder,
the new ledger lands by fsync + os.replace, and only then is the folder renamed into place: a crash
leaves the ledger as it was (or fully appended) and never a visible record folder the ledger does not
list. The next writer removes or completes what a crashed one left (`_recover`).

Standard library only: `speedrun ledger` must start without numpy or torch.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import signal
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness import judge
from harness.judge import logs, verify
from harness.core.errors import InputError
from harness.core.files import atomic_write, finite as number_tree, fsync_dir, number, sha256_bytes
from harness.core.text import fmt, md
from harness.core.track import REF, load_track, repo_root

SCHEMA_VERSION = 2
READS = (1, 2)  # v1 records (no evidence, speedup or launch) stay readable
GENESIS = "0" * 64
LEDGER = "ledger.jsonl"
LOCK = ".ledger.lock"
STAGING = ".staging-"
RESERVED = ("record.json", "README.md")

ID = re.compile(r"^(?P<track>[a-z0-9][a-z0-9._-]*)/(?P<num>\d{4})_(?P<slug>[a-z0-9][a-z0-9-]*)$")
FOLDER = re.compile(r"^(\d{4})_[a-z0-9][a-z0-9-]*$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class RecordError(InputError):
    """A record.json that does not match the schema; the message names the file and the field."""


# ---- record.json: the schema --------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One record, as record.json stores it (field order here is documentation; the file sorts keys)."""
    schema_version: int
    id: str                      # "<track>/<NNNN>_<slug>"
    track: str
    track_version: int
    title: str
    date: str                    # YYYY-MM-DD
    contributors: list           # [str]
    parent: str | None           # id of the record this one improves on
    official: bool               # verification passed (False: recorded with --unofficial / imported failing)
    code_sha256: str | None      # sha256 of the embedded train_gpt.py (None: the logs embed no source)
    files: dict                  # relative path → sha256, every file in the folder but record.json
    runs: list                   # [{file, seed, val_loss, train_time_ms, steps, ok}], one per trial
    summary: dict                # {n, mean_val_loss, std_val_loss, p_value, mean_train_time_ms, train_time_ms_ci95}
    verdict: dict                # verify's Verdict.to_json(): {ok, runs: [{file, ok, checks}], summary}
    source: dict | None = None   # {"import": folder name, "logs_sha256": [...]} for imported records
    evidence: list | None = None  # v2: the folder's other groups of runs, each {role, why, dir, files, n, ok, …}
    speedup: dict | None = None   # v2: over the baseline runs found with it {baseline, speedup, ci95, …}
    launch: dict | None = None    # v2: how its script is started: {"convention": "speedrun" | "modded", …}

    @property
    def folder(self) -> str:
        return self.id  # relative to records/

    @property
    def number(self) -> int:
        return int(ID.match(self.id)["num"])

    def to_json(self) -> dict:
        d = asdict(self)
        if self.schema_version == 1:  # as it was written
            for k in ("evidence", "speedup", "launch"):
                d.pop(k)
        return d


NUM = (int, float, type(None))
RUN_KEYS = {"file": (str,), "seed": (int, str, type(None)), "val_loss": NUM, "train_time_ms": NUM,
            "steps": (int, type(None)), "ok": (bool,)}
SUMMARY_KEYS = {"n": (int,), "mean_val_loss": NUM, "std_val_loss": NUM, "p_value": NUM, "mean_train_time_ms": NUM,
                "train_time_ms_ci95": (list, type(None))}


def validate(d: dict, where: str = "record.json") -> Record:
    """The Record for a record.json dict, or RecordError naming the first bad field."""
    def bad(name, why):
        raise RecordError(f"{where}: field {name!r} {why} (schema v{SCHEMA_VERSION}: harness/ledger.py Record; "
                          f"run `speedrun ledger check`)")

    if not isinstance(d, dict):
        raise RecordError(f"{where}: not a JSON object")
    if d.get("schema_version") not in READS:
        bad("schema_version", f"is {d.get('schema_version')!r}, this harness reads {', '.join(map(str, READS))}")
    names = {f.name for f in fields(Record)}
    for k in sorted(set(d) - names):
        bad(k, "is not in the schema")
    types = {"schema_version": (int,), "id": (str,), "track": (str,), "track_version": (int,), "title": (str,),
             "date": (str,), "contributors": (list,), "parent": (str, type(None)), "official": (bool,),
             "code_sha256": (str, type(None)), "files": (dict,), "runs": (list,), "summary": (dict,),
             "verdict": (dict,), "source": (dict, type(None)), "evidence": (list, type(None)),
             "speedup": (dict, type(None)), "launch": (dict, type(None))}
    optional = {"source", "evidence", "speedup", "launch"}
    v2 = [k for k in ("evidence", "speedup", "launch") if d.get(k) is not None]
    if d["schema_version"] == 1 and v2:
        bad(v2[0], "is a v2 field in a v1 record")
    for name, ok in types.items():
        if name not in d and name not in optional:
            bad(name, "is missing")
        if name in d and (not isinstance(d[name], ok) or (isinstance(d[name], bool) and bool not in ok)):
            bad(name, f"has type {type(d[name]).__name__}")
    m = ID.match(d["id"])
    if not m or m["track"] != d["track"]:
        bad("id", f"{d['id']!r} is not '<track>/<NNNN>_<slug>' for track {d['track']!r}")
    if not DATE.match(d["date"]):
        bad("date", f"{d['date']!r} is not YYYY-MM-DD")
    if not all(isinstance(c, str) for c in d["contributors"]):
        bad("contributors", "holds a non-string")
    if d["parent"] is not None and not ID.match(d["parent"]):
        bad("parent", f"{d['parent']!r} is not a record id")
    if d["code_sha256"] is not None and not HEX64.match(d["code_sha256"]):
        bad("code_sha256", "is not a sha256")
    for path, h in d["files"].items():
        if safe_relpath(path) != path or path == "record.json":
            bad("files", f"lists an unsafe path {path!r}")
        if not isinstance(h, str) or not HEX64.match(h):
            bad("files", f"has no sha256 for {path!r}")
    for k, run in enumerate(d["runs"]):
        _keys(run, RUN_KEYS, f"runs[{k}]", bad)
    _keys(d["summary"], SUMMARY_KEYS, "summary", bad)
    v = d["verdict"]
    if not isinstance(v.get("ok"), bool) or not isinstance(v.get("runs"), list):
        bad("verdict", "needs 'ok' (bool) and 'runs' (list)")
    return Record(**d)


def _keys(obj, spec: dict, name: str, bad) -> None:
    if not isinstance(obj, dict):
        bad(name, "is not an object")
    for k, ok in spec.items():
        if k not in obj:
            bad(f"{name}.{k}", "is missing")
        v = obj[k]
        if not isinstance(v, ok) or (isinstance(v, bool) and bool not in ok):
            bad(f"{name}.{k}", f"has type {type(v).__name__}")


def find(recs: list[Record], rid: str, flag: str, root: Path | None = None) -> Record:
    """The record `rid`, given whole (tiny-cpu/0001_slug) or by number (tiny-cpu/0001)."""
    m = REF.match(rid)
    hits = [r for r in recs if m and (r.id == rid or (m["slug"] is None and r.id.startswith(f"{rid}_")))]
    if len(hits) != 1:
        raise InputError(f"{flag} {rid!r}: {'no' if not hits else 'more than one'} such record in "
                         f"{ledger_path(root)} (known: {', '.join(sorted(r.id for r in recs)) or 'none'})")
    return hits[0]


def record_bytes(rec: Record) -> bytes:
    """record.json as written: sorted keys, indent 2, trailing newline (so its sha256 is reproducible)."""
    return (json.dumps(rec.to_json(), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def read_record(folder: Path) -> Record:
    path = folder / "record.json"
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RecordError(f"{path}: missing (run `speedrun ledger check`)") from None
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: not readable JSON ({e})") from None
    return validate(d, str(path))


# ---- names from outside -----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_relpath(path: str) -> str | None:
    """A relative path made of safe components, or None when it is absolute or climbs out (`..`)."""
    if not isinstance(path, str) or path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return None
    out = []
    for part in re.split(r"[/\\]", path):
        if part in ("", "."):
            continue
        if part == "..":
            return None
        part = _UNSAFE.sub("_", part)[:100].lstrip(".")  # nothing hidden, nothing odd
        if not part:
            return None
        out.append(part)
    return "/".join(out) or None


def slugify(text: str, width: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower().encode("ascii", "ignore").decode()).strip("-")
    return s[:width].rstrip("-") or "record"


# ---- ledger lines ---------------------------------------------------------------------------------------

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


# ---- writing ------------------------------------------------------------------------------------------

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


def _recover(root: Path, lines: list[dict]) -> None:
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


@dataclass
class Added:
    record: Record
    line: dict
    verdict: verify.Verdict
    notes: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """What `add` stores, verified: the submission's verdict, the files, the evidence groups' verdicts."""
    verdict: verify.Verdict
    track: dict
    stored: list[tuple[str, bytes]]     # (path in the record folder, bytes)
    notes: list[str]
    parent: str | None = None           # the record the runs were judged against (rule 3, its curves)
    evidence: list[dict] = field(default_factory=list)
    speedup: dict | None = None
    speed: object = None                # judge.Speed: rule 4's evidence (the dict above is its stored form)
    rules: dict = field(default_factory=dict)
    same_code: bool = False             # these runs are the parent's code, byte for byte (a reproduction)
    parent_trials: list = field(default_factory=list)  # the parent's runs (its logged times, for `logged-time`)


def _read(paths: list, prefix: str, taken: set, known: dict | None = None) -> tuple[list[tuple[str, bytes]],
                                                                                   list[logs.ParsedLog]]:
    """Each log's bytes under a safe, unique stored name, and the log parsed as it will be stored
    (`known`: path → the ParsedLog a caller already has, relabelled rather than parsed again)."""
    stored, parsed = [], []
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError as e:
            raise InputError(f"{p}: cannot read ({e.strerror}); pass the run logs `speedrun record add` should "
                             f"store") from None
        name = safe_relpath(f"{prefix}{Path(p).name.replace('/', '_')}") or f"{prefix}log"
        base, k = name, 2
        while name in taken:
            stem, dot, ext = base.rpartition(".")
            name = f"{stem}-{k}.{ext}" if dot else f"{base}-{k}"
            k += 1
        taken.add(name)
        if known and str(p) in known:
            stored.append((name, data))
            parsed.append(dataclasses.replace(known[str(p)], file=name))
            continue
        try:
            text, warn = data.decode("utf-8"), []
        except UnicodeDecodeError as e:  # as logs.parse_file says it
            text = data.decode("utf-8", errors="replace")
            warn = [f"byte {e.start}: not UTF-8; undecodable bytes replaced (code hashes will not match)"]
        log = logs.parse_text(text, file=name, warnings=warn, size=len(data))
        if not log.trials:
            raise InputError(f"{p}: no step lines: not a run log (see `speedrun parse {p}`)")
        stored.append((name, data))
        parsed.append(log)
    return stored, parsed


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


def parent_reference(track_name: str, spec: str | None = None, root: Path | None = None) -> verify.Reference | None:
    """What runs on `track_name` are judged against for rule 3: `spec` (a record id, a record folder or a
    log file), else the track's latest official record; None when the track has no record yet."""
    if spec and Path(spec).exists():
        from harness.public import diff

        side = diff.resolve(spec)
        if not side.sources and not any(p.trials for p in side.logs):
            raise InputError(f"--parent {spec}: neither a run log nor a record (no embedded code, no step lines): "
                             "rule 3 needs the parent's code; give its log, its record folder or its id")
        if side.record and side.record.get("track") not in (None, track_name):
            raise InputError(f"--parent {spec} is a {side.record['track']} record; these runs are on {track_name}")
        return verify.Reference(f"{side.kind} {side.record_id or spec}", side.sources or None,
                                [t for p in side.logs for t in p.trials])
    recs = records(root)
    rec = find(recs, spec, "--parent", root) if spec else default_parent(recs, track_name)
    return reference(rec, root) if rec else None


def default_parent(recs: list[Record], track_name: str) -> Record | None:
    """The track's latest official record: what a new one is compared with unless told otherwise."""
    return next((r for r in reversed(recs) if r.track == track_name and r.official), None)


def prepare(log_paths: list[str], track_name: str, *, date: str | None = None, parent: str | None = None,
            no_parent: bool = False, evidence: list[dict] = (), root: Path | None = None,
            parent_ref: verify.Reference | None = None, parsed: dict | None = None) -> Prepared:
    """Read and verify the logs as they will be stored (`logs/<safe name>`), under the rules in force on
    `date`, against the parent record (`parent` by id, else the track's latest official, unless `no_parent`;
    or `parent_ref` given whole; `parsed`: path → ParsedLog already read). `evidence`: other groups found with the logs, each {role, why, dir,
    paths}: stored under `evidence/`, each verified on its own; a baseline group is the preferred
    reference for the systems-only exception and gives the speedup. A missing file, a file with no run
    or an unknown track → InputError."""
    from harness.core import rules as rulebook

    track = load_track(track_name)
    taken: set = set()
    known = parsed
    stored, parsed = _read(log_paths, "logs/", taken, known)
    notes: list[str] = []
    parent_id = None
    if parent_ref is None and not no_parent:
        with locked(root or repo_root()):  # finish what a crashed writer left before reading the records
            _recover(root or repo_root(), read_lines(root))
        recs = records(root)
        rec = find(recs, parent, "--parent", root) if parent else default_parent(recs, track_name)
        if rec is not None:
            check_parent(rec, track_name)
            parent_id, parent_ref = rec.id, reference(rec, root)
    rules = rulebook.at(track, date)
    groups = []
    for g in evidence:
        g_stored, g_parsed = _read(g["paths"], f"evidence/{g['dir'] + '/' if g['dir'] else ''}", taken, known)
        stored += g_stored
        groups.append((g, g_stored, g_parsed))
    base = next((verify.Reference(f"the {g['dir'] or 'flat'} baseline runs", None,
                                  [t for p in gp for t in p.trials]) for g, _, gp in groups if g["role"] == "baseline"), None)
    v = verify.verify(parsed, track, rules=rules, parent=parent_ref, baseline=base)
    out = []
    for g, g_stored, g_parsed in groups:
        gv = verify.verify(g_parsed, track, rules=rules, parent=parent_ref)
        failed = {c.name: c.detail for r in gv.runs for c in r.checks if not c.ok}
        s = gv.summary
        out.append({"role": g["role"], "why": g["why"], "dir": g["dir"], "files": [n for n, _ in g_stored],
                    "n": s["n"], "ok": gv.ok, "mean_val_loss": number(s["mean_val_loss"]),
                    "p_value": number(s["p_value"]), "mean_train_time_ms": number(s["mean_train_time_ms"]),
                    "failed": failed})
    speed = None
    base_times = next(([r.train_time_ms for r in verify.verify(gp, track, rules=rules).runs if r.train_time_ms]
                       for g, _, gp in groups if g["role"] == "baseline"), None)
    times = [r.train_time_ms for r in v.runs if r.train_time_ms]
    sp = None
    base_group = next(((g, gp) for g, _, gp in groups if g["role"] == "baseline"), None)
    if base_times and times:
        bdir = base_group[0]["dir"]
        sp = judge.Speed.unpaired(f"evidence/{bdir}" if bdir else "evidence", base_times, times)
        base_code = next((_stored_names(p.sources) for p in base_group[1] if p.sources), None)
        if parent_id is not None and (parent_ref is None or base_code != parent_ref.sources):
            notes.append(f"the baseline runs in {sp.against} do not run the parent's code ({parent_id}): their "
                         "speedup is kept as evidence, not as rule 4's")
            sp = None
        elif parent_id is not None:
            sp.against = parent_id
        speed = sp.to_json()
    first = next((p for p in parsed if p.sources), None)
    repro = bool(parent_ref is not None and parent_ref.sources and first is not None
                 and _stored_names(first.sources) == _stored_names(parent_ref.sources))
    return Prepared(v, track, stored, notes, parent_id, out, speed, sp, rules, repro,
                    list(parent_ref.trials) if parent_ref is not None else [])


def _stored_names(sources: dict) -> dict:
    """Embedded files under the names a record stores them by (what `reference` reads back)."""
    return {safe_relpath(k) or k: v for k, v in sources.items()}


def check_parent(rec: Record, track_name: str) -> None:
    """A parent is a record of the same track: another track's record, or an unofficial one (not a
    record), is bad input."""
    if rec.track != track_name:
        raise InputError(f"--parent {rec.id} is a {rec.track} record; these runs are on {track_name}: a record's "
                         "parent is the record it beat on its own track")
    if not rec.official:
        raise InputError(f"--parent {rec.id} is unofficial (not a record): a parent must be a record it beat")


def decide(prepared: Prepared, *, speed=None, problems=()) -> "judge.Decision":
    """Ask the one judge about prepared runs: verification, rule 4 against the parent (`speed`: a paired
    A/B from an attempt; else the unpaired baseline group found with the runs), a reproduction when the
    code is the parent's byte for byte."""
    speed = speed or prepared.speed
    test, _ = judge.speed_rule(prepared.rules)
    if speed is None and test == "logged-time" and prepared.parent and prepared.parent_trials:
        theirs = [t.final_val.time_ms for t in prepared.parent_trials if t.final_val and t.final_val.time_ms]
        mine = [r.train_time_ms for r in prepared.verdict.runs if r.train_time_ms]
        if theirs and mine:  # the early board: the parent's own logged times, another node
            speed = judge.Speed.unpaired(prepared.parent, theirs, mine, kind="logged")
    return judge.decide(prepared.verdict, prepared.rules, speed=speed, parent=prepared.parent,
                        reproduction_of=prepared.parent if prepared.same_code else None, problems=list(problems))


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


def add(log_paths: list[str], track_name: str, title: str, *, contributors: list[str] = (), parent: str | None = None,
        date: str | None = None, allow_failing: bool = False, unofficial_reason: str | None = None,
        readme: str | None = None, source: dict | None = None, root: Path | None = None,
        prepared: Prepared | None = None, launch: dict | None = None, decision=None) -> Added:
    """Store one record and append its ledger line, as the judge decided (`decision`, else
    `decide(prepared)`): official only when it is a record. Not a record raises Refused unless
    `allow_failing` (then it is stored unofficial, with the judge's reasons); logs or runs already in the
    ledger raise Refused whatever the flags; bad input raises InputError; either way nothing is written.
    `unofficial_reason`: stored unofficial even if it is a record, and the README says why (an attempt that
    lost runs). The caller regenerates the leaderboard (`leaderboard.write`)."""
    root = root or repo_root()
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    if not DATE.match(date):
        raise InputError(f"--date {date!r}: expected YYYY-MM-DD")
    prepared = prepared or prepare(log_paths, track_name, date=date, parent=parent, root=root)
    v, track, stored, notes = prepared.verdict, prepared.track, prepared.stored, prepared.notes
    decision = decision or decide(prepared)
    if not decision.record and not allow_failing:
        raise Refused(v, decision)
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
        _recover(root, lines)
        existing = [read_record(root / "records" / ln["id"]) for ln in lines]
        stored_before(existing, stored, v, root)
        latest = default_parent(existing, track_name)
        if decision.record and prepared.parent and latest is not None and latest.id != prepared.parent:
            decision = judge.with_reason(decision, judge.reason(
                "speed", f"timed against {prepared.parent}, but the track's latest record is {latest.id}: rule 4 "
                         "asks for the prior record", unknown=True, why="not-the-latest"))
            unofficial_reason = unofficial_reason or f"not a record: timed against {prepared.parent}, not the " \
                                                     f"latest record {latest.id}"
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


class Refused(Exception):
    """Not a record (and --unofficial was not given), or runs the ledger already holds: nothing was written."""

    def __init__(self, verdict: verify.Verdict, decision=None, message: str | None = None):
        self.verdict, self.decision = verdict, decision
        if message is None and decision is not None:
            if decision.reproduced:
                why = f"a reproduction of {decision.reproduction_of} (its code, byte for byte), not a record"
            else:
                why = f"{decision.label.lower()} ({decision.outcome}): " + "; ".join(
                    f"{r['rule']}: {r['detail']}" for r in decision.reasons)
            message = f"{why}; nothing recorded (`--unofficial` stores it as unofficial, with the reasons)"
        super().__init__(message or "verification failed: nothing recorded")


ACROSS_RECORDS = ("times", "time+curve")  # same val curves are expected across records (same seeds, same ML)
_PRINTS: dict[str, list] = {}  # a stored log's sha256 → its runs' fingerprints (stored logs never change)


def stored_before(existing: list[Record], stored: list[tuple[str, bytes]], v: verify.Verdict, root: Path) -> None:
    """Refuse (Refused, nothing written) logs the ledger already holds: the same bytes (sha256) anywhere in
    it, or the same run (verify.fingerprints: same step times, or same train time and val curve) in a
    record of this track. A run is counted once, in one record. Each stored log is parsed once a process
    (an import adds a hundred records)."""
    have = {h: f"{r.id}/{p}" for r in existing for p, h in r.files.items() if p.startswith(("logs/", "evidence/"))}
    for name, data in stored:
        h = sha256_bytes(data)
        if h in have:
            raise Refused(v, message=f"{name}: already in the ledger as records/{have[h]} (same sha256): a run is "
                                     "recorded once; nothing recorded")
    seen: dict[tuple, str] = {}
    for r in existing:
        if r.track != v.track:
            continue
        for p, h in r.files.items():
            if p.startswith(("logs/", "evidence/")):
                if h not in _PRINTS:
                    parsed = logs.parse_file(root / "records" / r.id / p)
                    _PRINTS[h] = [verify.fingerprints(t, ACROSS_RECORDS) for t in parsed.trials]
                for prints in _PRINTS[h]:
                    for key, _ in prints:
                        seen.setdefault(key, f"records/{r.id}/{p}")
    for run in v.runs:
        for key, why in verify.fingerprints(run.trial, ACROSS_RECORDS):
            if key in seen:
                raise Refused(v, message=f"{run.file}: the same run as {seen[key]} ({why}), already in the ledger; "
                                         "nothing recorded")


def render_readme(rid, track, title, date, contributors, parent, v, summary, text, notes,
                  unofficial_reason: str | None = None, evidence=(), speedup: dict | None = None,
                  decision=None) -> str:
    s = summary
    ci = s["train_time_ms_ci95"]
    out = [f"# {md(title)}", "",
           f"Record `{rid}` on track `{track['name']}` (version {track['version']}), {date}: "
           + (f"**unofficial** ({md(unofficial_reason)}; see the notes)." if unofficial_reason else
              ("**official**: every check passed, and it is faster than its parent side by side." if parent else
               "**official**: every check passed (the first record of its track).") if v.ok else
              "**unofficial** (verification failed)."), "",
           f"Contributors: {md(', '.join(contributors)) or '-'}  ", f"Parent: {f'`{parent}`' if parent else '-'}", "",
           "## What changed and why", "", (text.rstrip() if text and text.strip() else "_Not stated._"), "",
           "## Summary", "",
           "| runs (distinct) | mean val loss | std | p-value | mean train time | 95% CI |", "|---|---|---|---|---|---|",
           f"| {s['n']} | {fmt(s['mean_val_loss'], '.4f')} | {fmt(s['std_val_loss'], '.4f')} | "
           f"{fmt(s['p_value'], '.3g')} | {fmt(s['mean_train_time_ms'], '.3f', 1e-3, ' s')} | "
           + (f"{ci[0] / 1000:.3f}–{ci[1] / 1000:.3f} s" if ci and None not in ci else "-") + " |", ""]
    if speedup:
        lo, hi = speedup["ci95"]
        looks = speedup.get("looks") or 1
        out += [f"Speedup over {md(speedup['baseline'])}: **{speedup['speedup']:.3f}×**"
                + (f" (95% CI {lo:.3f}–{hi:.3f}×" if lo is not None else " (one run a side: no interval")
                + (f", {speedup['pairs']} interleaved A/B pairs on one node, paired by seed)" if speedup.get("paired")
                   else ", runs timed beside it, unpaired)")
                + f". Verdict reached after {looks} look{'s' if looks != 1 else ''} at the interval"
                + (" (the attempt was extended after an inconclusive look: each look is disclosed, since adding "
                   "runs until the interval clears 1 inflates false records)." if looks > 1 else "."), ""]
    elif parent:
        out += ["Speed against its parent: not measured side by side.", ""]
    if decision is not None and decision.reasons:
        out += ["## Why it is not a record", ""] + [f"- {md(r['rule'])}: {md(r['detail'])}" for r in decision.reasons]
        out.append("")
    rules = v.rules or {}
    out += [f"Judged under the rules of `{md(rules.get('name', 'current'))}`"
            + (f" (in force since {rules['since']})" if rules.get("since") else "") + ".", ""]
    if evidence:
        out += ["## Other runs kept as evidence", "", "| role | runs | mean val loss | p-value | mean train time | "
                "verdict | why |", "|---|---|---|---|---|---|---|"]
        for e in evidence:
            verdict = "PASS" if e["ok"] else "FAIL: " + ", ".join(sorted(e["failed"]))
            out.append(f"| {md(e['role'])} ({md(e['dir'] or '.')}) | {e['n']} | {fmt(e['mean_val_loss'], '.4f')} | "
                       f"{fmt(e['p_value'], '.3g')} | {fmt(e['mean_train_time_ms'], '.3f', 1e-3, ' s')} | "
                       f"{md(verdict)} | {md(e['why'])} |")
        out.append("")
    out += ["## Verification (`speedrun verify`)", "", "| run | check | ok | detail |", "|---|---|---|---|"]
    for r in v.runs:
        for c in r.checks:
            out.append(f"| {md(r.file)} | {c.name} | {'ok' if c.ok else 'FAIL'} | {md(c.detail)} |")
    if notes:
        out += ["", "Notes:", ""] + [f"- {md(n)}" for n in notes]
    return "\n".join(out) + "\n"


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


# ---- for people -------------------------------------------------------------------------------------------

def render_added(rec: dict, line: dict, notes: list[str], console, source: str = "") -> None:
    """One line for a new record (and its notes): id, official or not, ledger seq and hash."""
    kind = "[green]official[/]" if rec["official"] else "[yellow]unofficial[/]"
    console.print(f"recorded [bold]{rec['id']}[/] ({kind}){source} → records/{rec['id']}/; ledger seq {line['seq']}, "
                  f"hash {line['hash'][:16]}…; leaderboard.md regenerated", highlight=False)
    for n in notes:
        console.print(f"[yellow]note[/]: {n}", highlight=False)


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
