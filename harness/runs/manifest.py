"""An attempt's folder, logs/attempts/<attempt id>/: its manifest (attempt.json, rewritten atomically when a
run starts and when it ends), its id, what node r > 0 of a multi-node attempt writes, and the baseline
record's snapshot (script + kernels, checked against its record.json)."""
from __future__ import annotations

import datetime as _dt
import json
import re
import uuid
from pathlib import Path

from harness.core.errors import InputError
from harness.core.files import atomic_write, finite, sha256_bytes, sha256_file
from harness.core.track import repo_root

SCHEMA = 1
MANIFEST = "attempt.json"
OUTCOMES = ("ok", "failed", "diverged", "timeout", "interrupted")


class Manifest:
    """attempt.json: written whole to a temp file, fsynced, renamed over the old one. A write that fails
    (a full disk) leaves the previous version in place and is retried at the next save."""

    def __init__(self, folder: Path, data: dict, name: str = MANIFEST):
        self.folder, self.data = folder, data
        self.path = folder / name
        self.error: str | None = None

    def save(self) -> bool:
        try:
            atomic_write(self.path, json.dumps(finite(self.data), indent=2, allow_nan=False) + "\n")
        except OSError as e:
            self.error = f"{self.path}: not written ({e.strerror or e}); the previous version stands"
            return False
        self.error = None
        return True


def load_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no attempt manifest here; `speedrun attempt` writes one per attempt "
                         f"under logs/attempts/") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("runs"), list):
        raise InputError(f"{path}: not an attempt manifest (schema {SCHEMA}, with runs)")
    return data


def node_paths(nnodes: int, node_rank: int | None) -> dict[str, str]:
    """What one node writes in the attempt folder, relative to it. Nodes of one attempt share the folder (a
    cluster's shared filesystem: one checkout): node 0 keeps the plain names (attempt.json is the attempt's
    manifest, beside the log its rank 0 writes), node r > 0 writes attempt.node<r>.json and its own
    console/, ranks/ and baseline/ subfolders, so no two nodes ever write one file."""
    tag = f"node{node_rank}" if nnodes > 1 and node_rank else ""
    return {"manifest": f"attempt.{tag}.json" if tag else MANIFEST, "console": f"console/{tag}" if tag else "console",
            "ranks": f"ranks/{tag}" if tag else "ranks", "baseline": f"baseline.{tag}" if tag else "baseline"}


def new_attempt_id(track: str, shared: str | None = None) -> str:
    """A fresh id; or, for a multi-node attempt, one every node derives alike from the rendezvous id it
    was given (so every node writes the same attempt folder name and passes the same run ids)."""
    if shared:
        return f"{track}-{re.sub(r'[^A-Za-z0-9._-]+', '_', shared)[:60]}"
    now = _dt.datetime.now(_dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{track}-{uuid.uuid4().hex[:6]}"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _snapshot(rec) -> tuple[Path, list[str], str]:
    """A record's stored code: (its folder, the files but logs/evidence/README/record.json, its script)."""
    from harness import ledger

    src = repo_root() / "records" / rec.id
    files = [p for p in rec.files if not p.startswith(("logs/", "evidence/")) and p not in ledger.RESERVED]
    scripts = ["train_gpt.py"] if "train_gpt.py" in files else [p for p in files if "/" not in p and p.endswith(".py")]
    if len(scripts) != 1:
        raise InputError(f"record {rec.id} stores {len(scripts) or 'no'} top-level scripts ({', '.join(scripts)}): "
                         f"nothing to run as its baseline")
    return src, files, scripts[0]


def snapshot_baseline(rec, dest: Path) -> Path:
    """Copy the record's script and kernels (every stored file but logs/, README.md and record.json), each
    checked against record.json's sha256, to dest; the script to run is its train_gpt.py (or its one .py)."""
    src, files, script = _snapshot(rec)
    for rel in files:
        data = (src / rel).read_bytes() if (src / rel).is_file() else None
        if data is None or sha256_bytes(data) != rec.files[rel]:
            raise InputError(f"{src / rel}: missing or edited since it was recorded; run `speedrun ledger check`")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    return dest / script


def same_code(rec, script: Path) -> bool:
    """Is `script` the record's code, byte for byte? Its bytes are the record's script's, and every other
    file the record stored (the kernels its logs embedded) is the same beside it. Then an attempt is a
    reproduction (a node calibration), never a record: there is nothing new to time against."""
    try:
        src, files, main = _snapshot(rec)
    except InputError:
        return False
    for rel in files:
        mine = script if rel == main else script.parent / rel
        if not mine.is_file() or sha256_file(mine) != rec.files[rel]:
            return False
    return True
