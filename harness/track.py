"""Tracks: the rules of one race, read from records/<track>/track.toml (rules are data)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from harness.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REQUIRED = ("name", "version", "preset", "metric", "target", "hardware", "data", "significance")


class TrackError(InputError):
    """A track that is missing or malformed; the message names the file."""


def repo_root() -> Path:
    """The project root: $SPEEDRUN_ROOT, else the checkout this package lives in."""
    env = os.environ.get("SPEEDRUN_ROOT")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


def records_dir() -> Path:
    return repo_root() / "records"


def track_names() -> list[str]:
    return sorted(p.parent.name for p in records_dir().glob("*/track.toml"))


def load_track(name: str) -> dict:
    """The track's rules as a dict, validated for the keys every consumer relies on."""
    path = records_dir() / name / "track.toml"
    if not path.is_file():
        known = ", ".join(track_names()) or "none"
        raise TrackError(f"no track {name!r}: {path} does not exist (known tracks: {known})")
    try:
        track = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TrackError(f"{path}: not valid TOML: {e}") from None
    missing = [k for k in REQUIRED if k not in track]
    if missing:
        raise TrackError(f"{path}: missing key(s) {', '.join(missing)}")
    if track["name"] != name:
        raise TrackError(f"{path}: name = {track['name']!r} but the folder is {name!r}")
    track["_path"] = str(path)
    return track


def data_pin(track: dict) -> dict[str, str]:
    """The track's `[data.pin]`: val shard file name → sha256, as `speedrun data fineweb --pin` wrote it
    ({} when the track pins nothing)."""
    pin = track.get("data", {}).get("pin", {})
    where = track.get("_path", track.get("name", "track"))
    if not isinstance(pin, dict) or not all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
                                            for v in pin.values()):
        raise TrackError(f"{where}: [data.pin] must map file names to 64-hex-digit sha256 strings")
    return pin
