"""Tracks: the rules of one race, read from records/<track>/track.toml (rules are data), and the project
root whose records/ holds them.

Every key of a track.toml means something to the code: `load_track` refuses a key it does not know, a
value of the wrong type, or a significance test it cannot run, naming the file and the key.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from harness.core.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class TrackError(InputError):
    """A track that is missing or malformed; the message names the file."""


# ---- the project root ------------------------------------------------------------------------------

def find_root() -> tuple[Path, str]:
    """(root, how it was found). $SPEEDRUN_ROOT when set (an explicit choice wins); else the nearest
    folder at or above the working directory whose records/ holds a track; else the checkout this package
    was installed from. Verbs that write (record, import, leaderboard, attempt) write under this root."""
    env = os.environ.get("SPEEDRUN_ROOT")
    if env:
        return Path(env).resolve(), "$SPEEDRUN_ROOT"
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if any((d / "records").glob("*/track.toml")):
            return d, "the working directory"
    return Path(__file__).resolve().parent.parent, "the installed package (no records/ at or above the working directory)"


def repo_root() -> Path:
    return find_root()[0]


def records_dir() -> Path:
    return repo_root() / "records"


def track_names() -> list[str]:
    return sorted(p.parent.name for p in records_dir().glob("*/track.toml"))


# A record id is <track>/<NNNN>_<slug>; a reference to one may leave out the slug (tiny-cpu/0001).
REF = re.compile(r"^(?P<track>[a-z0-9][a-z0-9._-]*)/(?P<num>\d{4})(?:_(?P<slug>[a-z0-9][a-z0-9-]*))?$")


# ---- the schema ---------------------------------------------------------------------------------------

NUM = (int, float)
TESTS = ("t-test", "margin")  # one-sided one-sample t-test at alpha; track-3 style (target − mean)·√n ≥ c
SCHEMA = {
    "name": str, "version": int, "title": str, "preset": str, "metric": str, "target": NUM, "floor": NUM,
    "nproc": int, "mirrors": str,
    "hardware": {"accelerator": str, "model": str, "count": int},
    "data": {"source": str, "dir": str, "seed": int, "repo": str, "train_pattern": str, "val_pattern": str,
             "val_tokens": int, "vocab_size": int, "eot_token": int,
             "synthetic": {"vocab_size": int, "topics": int, "branching": int, "first_tokens": int,
                           "mean_doc_len": NUM, "max_doc_len": int, "concentration": NUM, "train_tokens": int,
                           "shard_tokens": int},
             "pin": dict},
    "significance": {"test": str, "alpha": NUM, "dedupe": bool, "c": NUM},
    "speed": {"test": str, "level": NUM},
    "rules": {"banned": [{"pattern": str, "why": str}], "timing": str, "flags": str, "allowed_flags": [str],
              "systems_only": {"max_val_gap": NUM, "z": NUM, "from_frac": NUM}, "epochs": [dict]},
}
REQUIRED = ("name", "version", "preset", "metric", "target", "hardware", "data", "significance")


def _check(value, spec, where: str, path) -> None:
    def bad(why):
        raise TrackError(f"{path}: {where} {why} (the keys a track.toml may hold are in harness/track.py SCHEMA)")

    if isinstance(spec, dict):
        if not isinstance(value, dict):
            bad("must be a table")
        for k, v in value.items():
            if k not in spec:
                bad(f"has an unknown key {k!r}")
            _check(v, spec[k], f"{where}.{k}" if where else k, path)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            bad("must be an array of tables")
        for i, v in enumerate(value):
            _check(v, spec[0], f"{where}[{i}]", path)
    else:
        ok = spec if isinstance(spec, tuple) else (spec,)
        if not isinstance(value, ok) or (isinstance(value, bool) and bool not in ok):
            bad(f"has type {type(value).__name__}, expected {' or '.join(t.__name__ for t in ok)}")


def load_track(name: str) -> dict:
    """The track's rules as a dict, validated against SCHEMA."""
    path = records_dir() / name / "track.toml"
    if not path.is_file():
        known = ", ".join(track_names()) or "none"
        raise TrackError(f"no track {name!r}: {path} does not exist (known tracks: {known})")
    try:
        track = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TrackError(f"{path}: not valid TOML: {e}") from None
    _check(track, SCHEMA, "", path)
    missing = [k for k in REQUIRED if k not in track]
    if missing:
        raise TrackError(f"{path}: missing key(s) {', '.join(missing)}")
    if track["name"] != name:
        raise TrackError(f"{path}: name = {track['name']!r} but the folder is {name!r}")
    test = track["significance"].get("test", "t-test")
    if test not in TESTS:
        raise TrackError(f"{path}: significance.test = {test!r}; known tests: {', '.join(TESTS)}")
    if test == "margin" and "c" not in track["significance"]:
        raise TrackError(f"{path}: significance.test = 'margin' needs the constant c")
    track["significance"].setdefault("test", test)
    from harness.core import rules

    problem = rules.validate(track, str(path))
    if problem:
        raise TrackError(f"{path}: {problem}")
    track["_path"] = str(path)
    return track


# ---- what the rules say -------------------------------------------------------------------------------

def nproc(track: dict) -> int:
    """Processes per run on one node: the track's `nproc`, else one per accelerator it names."""
    return int(track.get("nproc", track["hardware"].get("count", 1)))


def data_dir(track: dict, override: str | os.PathLike | None = None) -> Path:
    """The shards folder: `override` (a flag, relative to where the user stands), else the track's
    data.dir (relative to the project root)."""
    if override is not None:
        return Path(override).resolve()
    d = Path(track["data"]["dir"])
    return d if d.is_absolute() else repo_root() / d


def data_pin(track: dict) -> dict[str, str]:
    """The track's `[data.pin]`: val shard file name → sha256, as `speedrun data fetch --pin` wrote it
    ({} when the track pins nothing)."""
    pin = track.get("data", {}).get("pin", {})
    where = track.get("_path", track.get("name", "track"))
    if not isinstance(pin, dict) or not all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
                                            for v in pin.values()):
        raise TrackError(f"{where}: [data.pin] must map file names to 64-hex-digit sha256 strings")
    return pin
