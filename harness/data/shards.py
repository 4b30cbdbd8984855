"""Token shards, the community's format bit for bit: 256 little-endian int32 (magic 20240520, version 1,
token count, zeros), then that many little-endian uint16 tokens. Every document begins with the
end-of-text token. A bad magic, version or length is an error naming the file and the command that
remakes it. numpy only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.core.errors import InputError
from harness.core.files import atomic_write

MAGIC, VERSION, HEADER_INTS = 20240520, 1, 256
HEADER_BYTES = HEADER_INTS * 4


class ShardError(InputError):
    """A shard that is missing or malformed; the message names it and the command that remakes it."""


def _remedy(path: Path) -> str:
    d = path.parent
    if path.name.startswith("synthetic_"):
        return f"regenerate it with `speedrun data make --out {d}`"
    if path.name.startswith("fineweb_"):
        return f"fetch it again with `speedrun data fetch --dir {d}`"
    return (f"remake it with `speedrun data make --out {d}` or "
            f"`speedrun data fetch --dir {d}`, whichever made it")


def _bad(path: Path, what: str) -> ShardError:
    return ShardError(f"{path}: {what}; {_remedy(path)}")


def write_shard(path, tokens) -> str:
    """Write `tokens` as a shard at `path`, atomically; returns the file's sha256."""
    path, tokens = Path(path), np.asarray(tokens)
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{path}: tokens must be integers, got dtype {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > 65535):
        raise ValueError(f"{path}: tokens must fit uint16 (0..65535), "
                         f"got range {tokens.min()}..{tokens.max()}")
    if tokens.size > np.iinfo(np.int32).max:
        raise ValueError(f"{path}: {tokens.size} tokens do not fit the int32 header count")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = MAGIC, VERSION, tokens.size
    return atomic_write(path, [header.tobytes(), tokens.astype("<u2").ravel().tobytes()])


def read_header(path) -> int:
    """The token count of the shard at `path`, after checking magic, version and file size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise _bad(path, "no such shard") from None
    except OSError as e:
        raise _bad(path, f"cannot read it ({e.strerror})") from None
    if len(raw) < HEADER_BYTES:
        raise _bad(path, f"header truncated: the file is {size} bytes, shorter than the "
                         f"{HEADER_BYTES}-byte header")
    magic, version, n = (int(x) for x in np.frombuffer(raw, dtype="<i4", count=3))
    if magic != MAGIC:
        raise _bad(path, f"bad magic: found {magic}, expected {MAGIC} (not a token shard)")
    if version != VERSION:
        raise _bad(path, f"unsupported version {version} (this reader knows version {VERSION})")
    body = size - HEADER_BYTES
    if body % 2:
        raise _bad(path, f"odd byte count: {body} bytes after the header, but tokens are 2-byte "
                         f"uint16 (header says {n:,} tokens = {2 * n:,} bytes)")
    if n != body // 2:
        how = ("the file is truncated" if body // 2 < n
               else f"the file has {body - 2 * n:,} trailing bytes")
        raise _bad(path, f"the header says {n:,} tokens but the file holds {body // 2:,} ({how})")
    return n


def read_shard(path, mmap: bool = False) -> np.ndarray:
    """The shard's tokens as uint16 (a read-only memory map if `mmap`)."""
    n = read_header(path)
    if n == 0:
        return np.empty(0, dtype=np.uint16)
    if mmap:
        return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
    return np.fromfile(path, dtype="<u2", count=n, offset=HEADER_BYTES).astype(np.uint16, copy=False)


def track_vocab(track: dict) -> int | None:
    """The track's vocabulary size: [data] vocab_size (FineWeb) or [data.synthetic] vocab_size."""
    d = track["data"]
    return d.get("vocab_size") or d.get("synthetic", {}).get("vocab_size")


def val_problems(paths, track: dict) -> list[str]:
    """What makes these val shards unfit for the track, one message per problem naming the file: fewer than
    val_tokens + 1 tokens in all (the trainer predicts val_tokens of them, each from the one before), or a
    token id outside the vocabulary (an embedding lookup past the table). Empty when they are fit."""
    paths = [Path(p) for p in paths]
    need, vocab = track["data"]["val_tokens"] + 1, track_vocab(track)
    out, total = [], 0
    for path in paths:
        tokens = read_shard(path, mmap=True)
        total += len(tokens)
        if vocab is not None and len(tokens) and int(tokens.max()) >= vocab:
            bad = int(np.argmax(tokens >= vocab))
            out.append(f"{path}: token {int(tokens[bad])} at position {bad:,} is outside track {track['name']}'s "
                       f"vocabulary of {vocab:,} (not this track's data); {_remedy(path)}")
    if total < need:
        names = ", ".join(str(p) for p in paths) or "no val shard"
        out.append(f"{names}: {total:,} val tokens, track {track['name']} validates on {need - 1:,} (needs "
                   f"{need:,} with the last target); {_remedy(paths[0]) if paths else 'fetch or generate it'}")
    return out
