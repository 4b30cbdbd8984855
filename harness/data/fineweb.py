"""FineWeb shards for record attempts: fetch them from the track's Hugging Face dataset, check, hash, pin.

`fetch_fineweb` downloads the val shard and N train shards (`fineweb_val_000000.bin`,
`fineweb_train_000001.bin` …) into a folder, skipping any already there with a sound header, checks
every header with `harness.data.read_header`, and writes `manifest.json` in the synthetic corpus's
format (`shards`: name → tokens, sha256). `check_dir` re-verifies a folder against its manifest and the
track's `[data.pin]`; `pin_val` writes that pin into records/<track>/track.toml.

Failures: a bad flag, track or folder is an InputError (exit 2); an unreachable hub, a corrupt download
or a hash that differs from the manifest or the pin is a DataError (exit 1). The hub is probed with a
short timeout before anything is fetched, so an offline machine gets its answer in seconds, not after
huggingface_hub's minute of retries. huggingface_hub is imported only to download.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from harness.data.shards import ShardError, read_header, val_problems
from harness.core.errors import InputError
from harness.core.files import atomic_write, sha256_file, sha256_set
from harness.core.track import data_dir, data_pin, load_track, records_dir

GENERATOR = "harness.fineweb v1"
VAL_NAME = "fineweb_val_000000.bin"
TRAIN_NAME = "fineweb_train_{:06d}.bin"   # the dataset numbers train shards from 1
DEFAULT_TRAIN_SHARDS = 9                   # 900M tokens
PROBE_TIMEOUT_S = 5.0

Fetch = Callable[[str, str, Path], Path]   # (repo, file name, folder) -> path of the downloaded file


class DataError(Exception):
    """The data cannot be fetched or is not what it should be (exit 1); the message names the file."""


class Unreachable(DataError):
    """The Hugging Face endpoint cannot be reached."""


def shard_names(train_shards: int) -> list[str]:
    if train_shards < 0:
        raise InputError(f"--train-shards {train_shards}: must be 0 or more")
    return [VAL_NAME] + [TRAIN_NAME.format(i) for i in range(1, train_shards + 1)]


def data_sha256(shards: dict) -> str:
    """train_gpt.py's `data_sha256` over these shards: sha256 of sorted 'name sha256' lines."""
    return sha256_set({n: s["sha256"] for n, s in shards.items()})


# ---- the hub ---------------------------------------------------------------------------------------

def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def probe(repo: str, out_dir: Path, timeout: float = PROBE_TIMEOUT_S, missing: list[str] | None = None) -> None:
    """Any HTTP answer from the endpoint within `timeout` is reachable; no answer is Unreachable (its message
    lists the `missing` files by name, to copy in by hand)."""
    ep = endpoint()
    files = f" ({', '.join(missing)}, from the dataset {repo})" if missing else ""
    todo = (f"check the network or HF_ENDPOINT, or copy the shards{files} into {out_dir} (shards already there "
            f"are checked and hashed, not fetched) and run this command again, then `speedrun data check {out_dir}`")
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise Unreachable(f"HF_HUB_OFFLINE is set, so {ep} is not asked: unset it, or {todo}")
    try:
        _within(timeout, lambda: urllib.request.urlopen(
            urllib.request.Request(f"{ep}/api/datasets/{repo}", method="HEAD"), timeout=timeout).close())
    except urllib.error.HTTPError:
        return  # the server answered (401/404/… are for the download to explain)
    except ValueError as e:
        raise InputError(f"HF_ENDPOINT={ep!r} is not a URL ({e})") from None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", e)
        raise Unreachable(f"cannot reach {ep} ({why}): {todo}") from None


def _within(timeout: float, fn) -> None:
    """fn() with a hard deadline: urlopen's timeout covers the socket, not the DNS lookup before it,
    which can hang for minutes offline. The thread is a daemon, so a stuck lookup cannot hold the exit."""
    box = {}

    def call():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
            box["error"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]


def hf_fetch(repo: str, filename: str, out_dir: Path) -> Path:
    """Download one file of the dataset `repo` into `out_dir` (resuming a partial download)."""
    import huggingface_hub
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # our progress bar is over shards; tqdm's would garble it
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset",
                                                    local_dir=out_dir, endpoint=endpoint()))
    except Exception as e:  # noqa: BLE001  (hub errors: 404, auth, network mid-download)
        raise DataError(f"{out_dir / filename}: download from {endpoint()} dataset {repo} failed: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; check the network "
                        f"and --train-shards, then run this command again (it resumes)") from None


# ---- manifest --------------------------------------------------------------------------------------

def read_manifest(out_dir: Path, required: bool = False) -> dict | None:
    path = out_dir / "manifest.json"
    try:
        m = json.loads(path.read_text())
        if not isinstance(m, dict) or not isinstance(m.get("shards"), dict):
            raise ValueError("no 'shards' object")
        return m
    except FileNotFoundError:
        if required:
            raise InputError(f"{path}: no such file: make it with `speedrun data fetch --dir {out_dir}` "
                             f"(or `speedrun data make --out {out_dir}`)") from None
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a data manifest ({e}); delete it and run "
                         f"`speedrun data fetch --dir {out_dir}` to rebuild it") from None


# ---- fetch -----------------------------------------------------------------------------------------

def fetch_fineweb(track_name: str = "gpt2-small", out=None, train_shards: int = DEFAULT_TRAIN_SHARDS, *,
                  pin: bool = False, fetch: Fetch | None = None, progress: bool = False) -> dict:
    """Fetch what is missing, check and hash every shard, write manifest.json, and pin if asked.

    `fetch` replaces the hub (tests); without it the endpoint is probed first. Returns the manifest
    plus `fetched`, `present` (skipped) and `pin` ("added", "kept", "matches", or None: no pin)."""
    track = load_track(track_name)
    d = track["data"]
    if d.get("source") != "huggingface" or "repo" not in d:
        raise InputError(f"{track['_path']}: data.source is {d.get('source')!r}, not a Hugging Face dataset; "
                         "use `speedrun data make` for this track")
    repo, names = d["repo"], shard_names(train_shards)
    out_dir = data_dir(track, out)
    old = read_manifest(out_dir) or {"shards": {}}
    if old.get("kind", "fineweb") != "fineweb":
        raise InputError(f"{out_dir}/manifest.json describes a {old['kind']} corpus: choose another --dir")
    missing = [n for n in names if not _sound(out_dir / n)]
    if missing and fetch is None:
        probe(repo, out_dir, missing=missing)
    fetch = fetch or hf_fetch

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    shards, fetched, pinned = {}, [], data_pin(track).get(VAL_NAME)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("FineWeb shards", total=len(names))
        for name in names:
            path = out_dir / name
            if name in missing:
                bar.update(task, description=f"fetching {name}")
                path.unlink(missing_ok=True)  # unsound: fetch it anew, never resume from it
                path = Path(fetch(repo, name, out_dir))
                fetched.append(name)
                try:
                    tokens = read_header(path)
                except ShardError as e:
                    path.unlink(missing_ok=True)
                    raise DataError(f"{e} (just downloaded from {repo}; the bad file was deleted)") from None
            else:
                tokens = read_header(path)
            bar.update(task, description=f"hashing {name}")
            digest = sha256_file(path)
            was = old["shards"].get(name, {}).get("sha256")
            if was is not None and was != digest:
                raise DataError(f"{path}: sha256 {digest} differs from manifest.json's {was} (the shard changed "
                                f"since manifest.json was written); delete it and run this command again "
                                f"to fetch it anew")
            shards[name] = {"tokens": tokens, "sha256": digest}
            if name == VAL_NAME and (bad := val_problems([path], track)):  # too short, or not GPT-2 tokens
                raise ShardError("; ".join(bad))
            if name == VAL_NAME and pinned is not None and pinned != digest:  # val first: before gigabytes of train
                raise DataError(f"{path}: sha256 {digest} differs from the pin {pinned} in {track['_path']}: "
                                f"the val data is not the track's; delete the shard and run this command "
                                f"again to fetch it anew")
            bar.advance(task)

    # Shards fetched earlier and still there stay listed, so the manifest covers the whole folder.
    kept = {n: s for n, s in old["shards"].items() if n not in shards and (out_dir / n).is_file()}
    shards = dict(sorted({**kept, **shards}.items()))
    manifest = {"kind": "fineweb", "track": track["name"], "repo": repo, "dir": str(out_dir),
                "shards": shards, "data_sha256": data_sha256(shards), "generator": GENERATOR}
    atomic_write(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    state = "matches" if pinned is not None else None
    if pin:
        state = pin_val(track["name"], VAL_NAME, shards[VAL_NAME]["sha256"])
    return {**manifest, "fetched": fetched, "present": [n for n in names if n not in fetched], "pin": state}


def _sound(path: Path) -> bool:
    try:
        read_header(path)
        return True
    except ShardError:
        return False


# ---- check -----------------------------------------------------------------------------------------

def check_dir(out_dir, track_name: str | None = None, *, progress: bool = False) -> dict:
    """Re-verify every shard in `out_dir`: header and size, sha256 against manifest.json, no shard
    outside the manifest, and the track's pinned val shards (track from the flag or the manifest)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: no such folder")
    manifest = read_manifest(out_dir, required=True)
    track_name = track_name or manifest.get("track")
    pins = data_pin(load_track(track_name)) if track_name else {}
    rows: dict[str, dict] = {}
    listed = manifest["shards"]
    on_disk = sorted(p.name for p in out_dir.glob("*.bin"))

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("checking", total=len(listed))
        for name, want in listed.items():
            bar.update(task, description=f"hashing {name}")
            rows[name] = _check_one(out_dir / name, want, pins.get(name))
            bar.advance(task)
    for name in on_disk:
        if name not in listed:
            rows[name] = {"ok": False, "problem": f"{out_dir / name}: not in manifest.json (an extra shard: remove "
                                                  f"it, or refetch with `speedrun data fetch --dir {out_dir}`)"}
    for name in pins:
        if name not in listed:
            rows[name] = {"ok": False, "problem": f"{out_dir / name}: pinned by track {track_name} but not in "
                                                  f"manifest.json; fetch it: `speedrun data fetch --dir {out_dir}`"}
    if track_name:  # the val shards' contents: enough tokens for the track, all inside its vocabulary
        track = load_track(track_name)
        pattern = track["data"].get("val_pattern", "*_val_*.bin")
        vals = sorted(n for n in listed if fnmatch.fnmatch(n, pattern))
        if not vals:
            rows[pattern] = {"ok": False, "problem": f"{out_dir}: no {pattern} in manifest.json; track {track_name} "
                                                     f"validates on it: `speedrun data fetch --dir {out_dir}`"}
        elif all("tokens" in rows[n] for n in vals):  # headers sound (else that is the problem to report)
            for msg in val_problems([out_dir / n for n in vals], track):
                row = rows[next((n for n in vals if msg.startswith(f"{out_dir / n}:")), vals[0])]
                row["problem"] = "; ".join(filter(None, [row.get("problem"), msg]))
                row["ok"] = False
    problems = [r["problem"] for r in rows.values() if not r["ok"]]
    return {"ok": not problems, "dir": str(out_dir), "track": track_name, "pins": pins,
            "shards": rows, "problems": problems}


def _check_one(path: Path, want: dict, pin: str | None) -> dict:
    try:
        tokens = read_header(path)
    except ShardError as e:
        return {"ok": False, "problem": str(e)}
    row = {"ok": True, "tokens": tokens, "sha256": sha256_file(path)}
    refetch = f"delete it and refetch with `speedrun data fetch --dir {path.parent}`"
    if tokens != want.get("tokens"):
        row["problem"] = f"{path}: {tokens:,} tokens, manifest.json says {want.get('tokens')}; {refetch}"
    elif row["sha256"] != want.get("sha256"):
        row["problem"] = f"{path}: sha256 {row['sha256']} ≠ manifest.json's {want.get('sha256')}; {refetch}"
    elif pin is not None and row["sha256"] != pin:
        row["problem"] = f"{path}: sha256 {row['sha256']} ≠ the track's pin {pin}; {refetch}"
    row["ok"] = "problem" not in row
    return row


# ---- pin -------------------------------------------------------------------------------------------

PIN_COMMENT = """\
# sha256 of the val shards as `speedrun data fetch --pin` found them; `speedrun verify` (the `data`
# check) and `speedrun data check` hold runs and folders to them. Adding a pin where there was none does
# not bump `version`: it records what the data already was. Changing a pin does.
"""
_HEADER = re.compile(r"\s*\[(\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def pin_val(track_name: str, filename: str, sha256: str) -> str:
    """Pin `filename`'s sha256 in the track's [data.pin]: "added", or "kept" if already pinned so.
    A different pin is a DataError and nothing changes. The text is edited minimally and atomically."""
    from harness.core.track import tomllib

    load_track(track_name)  # exists and valid
    path = records_dir() / track_name / "track.toml"
    text = path.read_text(encoding="utf-8")
    before = tomllib.loads(text)
    pins = before.get("data", {}).get("pin", {})
    if filename in pins:
        if pins[filename] == sha256:
            return "kept"
        raise DataError(f"{path}: [data.pin] {filename} = {pins[filename]}, but this shard's sha256 is {sha256}; "
                        f"nothing changed (a changed pin is a rule change: edit the file and bump `version`)")
    new = _with_pin(text, f"{json.dumps(filename)} = {json.dumps(sha256)}\n", has_table="pin" in before.get("data", {}))
    after = tomllib.loads(new)
    ok = after.get("data", {}).pop("pin", None) == {**pins, filename: sha256}
    before.get("data", {}).pop("pin", None)
    if not ok or after != before:  # a check that must survive `python -O`
        raise DataError(f"{path}: adding [data.pin] would change other keys; nothing changed: add "
                        f"{json.dumps(filename)} = {json.dumps(sha256)} under [data.pin] by hand")
    atomic_write(path, new)
    return "added"


def _with_pin(text: str, entry: str, has_table: bool) -> str:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    heads = [(i, m.group(2)) for i, line in enumerate(lines) if (m := _HEADER.match(line))]
    if has_table:
        start = next(i for i, name in heads if name == "data.pin")
        end = next((i for i, _ in heads if i > start), len(lines))
        block = [entry]
    else:
        start = next((i for i, name in heads if name == "data"), None)
        if start is None:
            return "".join(lines) + "\n" + PIN_COMMENT + "[data.pin]\n" + entry
        end = next((i for i, name in heads if i > start and name != "data" and not name.startswith("data.")),
                   len(lines))
        block = ["\n", *PIN_COMMENT.splitlines(keepends=True), "[data.pin]\n", entry]
    # Stop before the blank and comment lines that open the next table: they belong to it.
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return "".join(lines[:end] + block + lines[end:])


# ---- for people ------------------------------------------------------------------------------------

def render_fetch(info: dict, console) -> None:
    console.print(f"[bold]FineWeb[/] {info['repo']} → {info['dir']}: {len(info['fetched'])} fetched, "
                  f"{len(info['present'])} already there", highlight=False)
    for name, s in info["shards"].items():
        console.print(f"  {name}  {s['tokens']:>12,} tokens  sha256 {s['sha256'][:16]}…", highlight=False)
    pin = {"added": f"pinned {VAL_NAME} in records/{info['track']}/track.toml",
           "kept": f"{VAL_NAME} was already pinned with this sha256",
           "matches": f"{VAL_NAME} matches the track's pin",
           None: "the track pins no val shard: `--pin` records this one's sha256"}[info["pin"]]
    console.print(f"manifest.json written (data_sha256 {info['data_sha256'][:16]}…); {pin}", highlight=False)


def render_check(rep: dict, console) -> None:
    for name, r in rep["shards"].items():
        console.print(f"  {name}  " + ("[green]ok[/]" if r["ok"] else f"[red]FAIL[/] {r['problem']}"), highlight=False)
    pins = f"track {rep['track']}: {len(rep['pins'])} pinned shard(s)" if rep["track"] else "no track: pins not checked"
    console.print((f"[bold green]OK[/]: {len(rep['shards'])} shard(s) match manifest.json" if rep["ok"] else
                   f"[bold red]MISMATCH[/]: {len(rep['problems'])} problem(s)") + f"; {pins}", highlight=False)
