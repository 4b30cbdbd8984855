"""record.json: the schema of one record folder (validated on every read), and names from outside.

A record folder, records/<track>/<NNNN>_<slug>/, holds `record.json`, the script snapshot (`train_gpt.py`
and the kernels its logs embed), `logs/`, `evidence/` and `README.md`. Standard library only.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from harness.core.errors import InputError
from harness.core.files import safe_relpath  # noqa: F401  (record folders name files by it)

SCHEMA_VERSION = 2
READS = (1, 2)  # v1 records (no evidence, speedup or launch) stay readable
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


def slugify(text: str, width: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower().encode("ascii", "ignore").decode()).strip("-")
    return s[:width].rstrip("-") or "record"
