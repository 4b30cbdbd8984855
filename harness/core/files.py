"""Files: atomic writes, sha256 of files, bytes and text, and JSON-safe numbers. Standard library only.

Every file the harness writes for keeps (manifests, records, the ledger, the leaderboard, bench results,
shards) goes through `atomic_write`: a reader sees the old file or the new one, never half of either,
and a crash or a full disk leaves the old one in place.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import stat
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str | list, before_replace=None) -> str:
    """Write `data` (bytes, text, or a list of byte chunks) to `path` all or nothing; returns its sha256.

    A temp file with a unique name beside `path` (two writers never share one), fsynced, renamed over
    `path`, then the folder fsynced so the rename itself survives a power cut. Any failure removes the
    temp file and re-raises, leaving `path` as it was. The new file's mode honours the umask (0o666 &
    ~umask), as `open(path, "w")` would: not mkstemp's 0o600. `before_replace()` runs once the temp file
    is durable, just before the rename (the ledger's crash-point tests stop there)."""
    path = Path(path)
    chunks = [data.encode("utf-8")] if isinstance(data, str) else [data] if isinstance(data, bytes) else data
    h = hashlib.sha256()
    if not regular_or_missing(path):  # --out /dev/null, a FIFO, a terminal: renaming over it would replace it
        with open(path, "wb") as f:
            for c in chunks:
                f.write(c)
                h.update(c)
        return h.hexdigest()
    if path.is_symlink():  # rename over the file the link names, keeping the link
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
                h.update(c)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return h.hexdigest()


def regular_or_missing(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry in `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_hasher():
    """An incremental sha256 (for what is hashed piece by piece); every sha256 of the project is taken here."""
    return hashlib.sha256()


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_text(text: str) -> str:
    """sha256 of text as UTF-8: what the trainer's code_sha256 lines state of an embedded file."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path, missing_ok: bool = False) -> str | None:
    """A file's sha256, read in chunks; None for an unreadable file when `missing_ok`."""
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        if missing_ok:
            return None
        raise


def sha256_set(digests: dict[str, str]) -> str:
    """One hash for a set of named files: sha256 over sorted 'name sha256' lines (the trainer's data_sha256)."""
    return sha256_text("".join(f"{n} {digests[n]}\n" for n in sorted(digests)))


def finite(obj):
    """JSON-safe: nan and ±inf become None, recursively through dicts, lists and tuples."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def number(x) -> float | int | None:
    """x if it is a finite number (not a bool), else None."""
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


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
