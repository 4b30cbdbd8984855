"""FineWeb data (`speedrun data fetch` / `data check`), the track's val pin, and the `data` verify check.

No network: the hub is replaced by a `fetch` that copies tiny shards from a local "remote" folder; the one
test of the real path points HF_ENDPOINT at a closed local port.
"""
import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import logmaker
from harness import cli, data
from harness.data import fineweb
from harness.judge import logs, verify
from harness.core.track import load_track, tomllib

ROOT = Path(__file__).resolve().parents[1]
VAL = fineweb.VAL_NAME
NAMES = [VAL, "fineweb_train_000001.bin", "fineweb_train_000002.bin"]


def make_remote(path, seed=0):
    """Three tiny shards named like the dataset's; returns {name: sha256}."""
    rng = np.random.default_rng(seed)
    return {n: data.write_shard(path / n, rng.integers(0, 50257, size=100 + 10 * i))
            for i, n in enumerate(NAMES)}


class Remote:
    """A stand-in for the hub: copies from a folder and records what it was asked for."""

    def __init__(self, folder, corrupt=()):
        self.folder, self.corrupt, self.calls = Path(folder), set(corrupt), []

    def __call__(self, repo, filename, out_dir):
        self.calls.append((repo, filename))
        dst = Path(out_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        raw = (self.folder / filename).read_bytes()
        dst.write_bytes(b"\0" * 4 + raw[4:] if filename in self.corrupt else raw)
        return dst


def never(repo, filename, out_dir):
    raise AssertionError(f"fetched {filename}, which was already there")


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A private SPEEDRUN_ROOT whose records/ holds copies of the real tracks (pins write there)."""
    r = tmp_path / "root"
    shutil.copytree(ROOT / "records", r / "records", ignore=shutil.ignore_patterns("*.jsonl", "0*"))
    track = r / "records/gpt2-small/track.toml"  # the tiny remote's val shard (100 tokens) validates 99
    track.write_text(track.read_text().replace("val_tokens = 10485760", "val_tokens = 99"))
    monkeypatch.setenv("SPEEDRUN_ROOT", str(r))
    return r


@pytest.fixture
def remote(tmp_path):
    folder = tmp_path / "remote"
    return folder, make_remote(folder)


def fetch(out, remote_fetch, **kw):
    return fineweb.fetch_fineweb("gpt2-small", out=out, train_shards=2, fetch=remote_fetch, **kw)


# ---- fetch -----------------------------------------------------------------------------------------

def test_fetch_checks_hashes_and_writes_the_manifest(root, remote, tmp_path):
    """Every shard is fetched by name from the track's repo; manifest.json lists each with its tokens and
    true sha256 (the synthetic manifest's format) and data_sha256 is train_gpt.py's formula over them."""
    folder, shas = remote
    out, r = tmp_path / "d", Remote(folder)
    info = fetch(out, r)
    assert r.calls == [("kjj0/fineweb10B-gpt2", n) for n in NAMES]
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "fineweb" and m["track"] == "gpt2-small" and m["repo"] == "kjj0/fineweb10B-gpt2"
    assert {n: s["sha256"] for n, s in m["shards"].items()} == shas
    assert all(s["tokens"] == data.read_header(out / n) for n, s in m["shards"].items())
    lines = "".join(f"{n} {hashlib.sha256((out / n).read_bytes()).hexdigest()}\n" for n in sorted(NAMES))
    assert m["data_sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert info["fetched"] == NAMES and info["present"] == [] and info["pin"] is None
    assert {k: info[k] for k in m} == m


def test_present_shards_are_skipped_and_unsound_ones_refetched(root, remote, tmp_path):
    """A second run fetches nothing (sound shards are skipped, not re-downloaded); a shard with a broken
    header is fetched anew; shards from an earlier, larger fetch stay in the manifest."""
    folder, shas = remote
    out = tmp_path / "d"
    fetch(out, Remote(folder))
    again = fetch(out, never)
    assert again["fetched"] == [] and again["present"] == NAMES
    broken = out / NAMES[2]
    broken.write_bytes(broken.read_bytes()[:-3])  # truncated: the header no longer matches the size
    r = Remote(folder)
    assert fetch(out, r)["fetched"] == [NAMES[2]] and r.calls == [("kjj0/fineweb10B-gpt2", NAMES[2])]
    fewer = fineweb.fetch_fineweb("gpt2-small", out=out, train_shards=0, fetch=never)
    assert set(fewer["shards"]) == set(NAMES) and fewer["fetched"] == []


def test_corrupt_download_is_an_error_naming_the_file_and_not_kept(root, remote, tmp_path, monkeypatch, capsys):
    """A download with a bad header is a DataError (exit 1) that names the file; the file is deleted and
    no manifest claims it, so the next run fetches it again."""
    folder, _ = remote
    out = tmp_path / "d"
    with pytest.raises(fineweb.DataError, match="fineweb_train_000002.bin: bad magic") as e:
        fetch(out, Remote(folder, corrupt={NAMES[2]}))
    assert "deleted" in str(e.value)
    assert not (out / NAMES[2]).exists() and not (out / "manifest.json").exists()
    monkeypatch.setattr(fineweb, "probe", lambda repo, out_dir, **kw: None)  # the CLI's own path, hub replaced
    monkeypatch.setattr(fineweb, "hf_fetch", Remote(folder, corrupt={VAL}))
    out = tmp_path / "d2"
    assert cli.main(["data", "fineweb", "--dir", str(out), "--train-shards", "2"]) == 1
    err = capsys.readouterr().err
    assert f"{out / VAL}: bad magic" in err and "speedrun data fetch --dir" in err
    assert not (out / VAL).exists()


def test_unreachable_hub_fails_fast_with_advice(root, tmp_path, monkeypatch, capsys):
    """With HF_ENDPOINT at a closed local port, `data fetch` exits 1 with a message that says what to
    do (network, HF_ENDPOINT, or copy the shards and `data check`), and writes nothing."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "d"
    assert cli.main(["data", "fineweb", "--dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:9" in err and "HF_ENDPOINT" in err
    assert f"{VAL}, fineweb_train_000001.bin" in err and "fineweb_train_000009.bin, from the dataset kjj0" in err
    assert "copy the shards (" in err and f"speedrun data check {out.resolve()}" in err
    assert not (out / "manifest.json").exists()


def test_a_hanging_lookup_is_cut_at_the_probe_timeout(monkeypatch, tmp_path):
    """urlopen's own timeout does not cover DNS; a lookup that hangs still ends at the deadline."""
    import time
    import urllib.request

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: time.sleep(30))
    t0 = time.monotonic()
    with pytest.raises(fineweb.Unreachable, match=r"no answer within 0\.3 s"):
        fineweb.probe("kjj0/fineweb10B-gpt2", tmp_path, timeout=0.3)
    assert time.monotonic() - t0 < 5


def test_shards_already_there_need_no_network(root, remote, tmp_path, monkeypatch):
    """Shards copied in by hand are checked, hashed and listed without asking the (unreachable) hub."""
    folder, shas = remote
    out = tmp_path / "d"
    shutil.copytree(folder, out)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert cli.main(["data", "fineweb", "--dir", str(out), "--train-shards", "2", "--json"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert {n: s["sha256"] for n, s in m["shards"].items()} == shas


# ---- pin -------------------------------------------------------------------------------------------

def test_pin_is_added_once_keeping_the_file_and_a_different_pin_changes_nothing(root, remote, tmp_path):
    """--pin adds [data.pin] with the val shard's sha256 under [data], every original line kept in order and
    `version` unchanged; pinning again is a no-op; a different val shard or sha256 is a DataError and the
    track file is left byte for byte."""
    folder, shas = remote
    path = root / "records/gpt2-small/track.toml"
    before = path.read_text()
    assert fetch(tmp_path / "d", Remote(folder), pin=True)["pin"] == "added"
    after = path.read_text()
    t = tomllib.loads(after)
    assert t["data"]["pin"] == {VAL: shas[VAL]} and t["version"] == tomllib.loads(before)["version"]
    kept = iter(after.splitlines())
    assert all(line in kept for line in before.splitlines())  # a subsequence: nothing removed or reordered
    assert after.index("[data.pin]") < after.index("[significance]") and "does\n# not bump `version`" in after
    assert fetch(tmp_path / "d", never, pin=True)["pin"] == "kept" and path.read_text() == after
    assert fetch(tmp_path / "d", never)["pin"] == "matches"

    with pytest.raises(fineweb.DataError, match="nothing changed"):
        fineweb.pin_val("gpt2-small", VAL, "0" * 64)
    other = tmp_path / "other"
    make_remote(other, seed=1)
    wrong = Remote(other)
    with pytest.raises(fineweb.DataError, match=f"{VAL}: sha256 .* differs from the pin"):
        fetch(tmp_path / "d2", wrong, pin=True)
    assert path.read_text() == after
    assert [n for _, n in wrong.calls] == [VAL]  # stopped before downloading any train shard


# ---- check -----------------------------------------------------------------------------------------

def test_data_check_exit_codes_and_named_mismatches(root, remote, tmp_path, capsys):
    """`data check DIR`: 0 when every shard matches; 1 naming the file for a changed byte (header still
    sound), a shard outside the manifest, or a val shard that differs from the track's pin; 2 for no such
    folder or no manifest."""
    folder, shas = remote
    out = tmp_path / "d"
    fetch(out, Remote(folder))
    assert cli.main(["data", "check", str(out)]) == 0
    assert "OK: 3 shard(s)" in capsys.readouterr().out
    assert cli.main(["data", "check", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["track"] == "gpt2-small" and set(rep["shards"]) == set(NAMES)

    shard = out / NAMES[1]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 1
    shard.write_bytes(bytes(raw))
    assert cli.main(["data", "check", str(out), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert not rep["ok"] and rep["problems"] == [rep["shards"][NAMES[1]]["problem"]]
    assert f"{shard}: sha256" in rep["problems"][0] and "manifest.json" in rep["problems"][0]
    shard.write_bytes((folder / NAMES[1]).read_bytes())

    shutil.copy(folder / NAMES[2], out / "fineweb_train_000003.bin")
    assert cli.main(["data", "check", str(out)]) == 1
    assert "fineweb_train_000003.bin: not in manifest.json" in capsys.readouterr().out
    (out / "fineweb_train_000003.bin").unlink()

    fineweb.pin_val("gpt2-small", VAL, "0" * 64)  # a pin this folder's val shard does not have
    assert cli.main(["data", "check", str(out), "--json"]) == 1  # the manifest names the track
    rep = json.loads(capsys.readouterr().out)
    assert [n for n, r in rep["shards"].items() if not r["ok"]] == [VAL] and "the track's pin" in rep["problems"][0]

    assert cli.main(["data", "check", str(tmp_path / "nope")]) == 2
    (out / "manifest.json").unlink()
    assert cli.main(["data", "check", str(out)]) == 2
    assert "manifest.json: no such file" in capsys.readouterr().err


def test_val_shards_too_short_or_outside_the_vocabulary_are_refused(root, remote, tmp_path, capsys):
    """`data fetch` refuses (exit 2, naming the file, nothing pinned or written) a val shard with fewer than
    val_tokens + 1 tokens (the real track: a 65,537-token synthetic shard renamed fineweb_val_000000.bin) or
    a token id ≥ the vocabulary; `data check` fails (exit 1) on the same shards behind an honest manifest."""
    folder, _ = remote
    track = root / "records/gpt2-small/track.toml"
    before = track.read_text()
    out = tmp_path / "short"
    out.mkdir()
    data.write_shard(out / VAL, np.random.default_rng(0).integers(0, 128, 65_537))
    track.write_text(before.replace("val_tokens = 99", "val_tokens = 10485760"))
    assert cli.main(["data", "fineweb", "--dir", str(out), "--train-shards", "0", "--pin"]) == 2
    err = capsys.readouterr().err
    assert f"{out / VAL}: 65,537 val tokens, track gpt2-small validates on 10,485,760" in err
    assert "pin" not in tomllib.loads(track.read_text())["data"] and not (out / "manifest.json").exists()
    track.write_text(before)

    bad = tmp_path / "vocab"
    toks = np.random.default_rng(1).integers(0, 50257, 200)
    toks[123] = 50300
    data.write_shard(bad / VAL, toks)
    assert cli.main(["data", "fineweb", "--dir", str(bad), "--train-shards", "0"]) == 2
    assert f"{bad / VAL}: token 50300 at position 123 is outside track gpt2-small's vocabulary" in capsys.readouterr().err

    ok = tmp_path / "d"
    fetch(ok, Remote(folder))
    track.write_text(before.replace("val_tokens = 99", "val_tokens = 100"))  # one more than the shard can give
    assert cli.main(["data", "check", str(ok), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert [n for n, r in rep["shards"].items() if not r["ok"]] == [VAL]
    assert "100 val tokens, track gpt2-small validates on 100 (needs 101" in rep["problems"][0]


def test_data_check_reads_a_synthetic_corpus_without_huggingface_hub(tmp_path):
    """One manifest format: `data check` verifies the synthetic corpus too, in a process where
    huggingface_hub cannot be imported (nothing but a download needs it)."""
    t = copy.deepcopy(load_track("tiny-cpu"))
    t["data"]["synthetic"].update(vocab_size=32, topics=2, train_tokens=5000, shard_tokens=2000)
    t["data"]["val_tokens"] = 1000
    corpus = tmp_path / "syn"
    data.generate_from_track(t, out=str(corpus))
    code = ("import sys; sys.modules['huggingface_hub'] = None; import harness.cli; "
            f"sys.exit(harness.cli.main(['data', 'check', {str(corpus)!r}, '--json']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["ok"] is True


# ---- the log line and the verify check -------------------------------------------------------------

def with_val_shas(text: str, shas: dict) -> str:
    """Add train_gpt.py's `val_shard_sha256 NAME: HEX` lines after the data_sha256 line."""
    lines = text.split("\n")
    k = next(i for i, line in enumerate(lines) if line.startswith("data_sha256: "))
    return "\n".join(lines[:k + 1] + [f"val_shard_sha256 {n}: {h}" for n, h in shas.items()] + lines[k + 1:])


def test_logs_parse_val_shard_sha256_lines():
    """Each `val_shard_sha256 NAME: HEX` line of the env block lands in env.val_shard_sha256[NAME]."""
    shas = {"synthetic_val_000000.bin": "a" * 64, "synthetic_val_000001.bin": "b" * 64}
    p = logs.parse_text(with_val_shas(logmaker.ours(), shas))
    assert p.env.val_shard_sha256 == shas and p.env.data_sha256 == "d" * 64
    assert logs.parse_text(logmaker.ours()).env.val_shard_sha256 == {}


def test_verify_data_check_against_the_pin():
    """Without a pin the `data` check passes saying "no pin"; with one it passes only when the logged val
    shard hashes are exactly the pinned ones (a differing, missing or extra shard fails it)."""
    name = "synthetic_val_000000.bin"
    track = copy.deepcopy(load_track("tiny-cpu"))

    def data_check(shas, pin):
        track["data"]["pin"] = pin
        parsed = [logs.parse_text(with_val_shas(logmaker.ours(seed=s), shas), file=f"run{s}") for s in range(3)]
        v = verify.verify(parsed, track)
        assert [c.name for c in v.runs[0].checks] == list(verify.CHECKS)
        return v.runs[0].checks[-1], v

    c, v = data_check({name: "a" * 64}, {})
    assert c.ok and "no pin" in c.detail and v.ok
    c, v = data_check({name: "a" * 64}, {name: "a" * 64})
    assert c.ok and name in c.detail and v.ok
    for shas, says in [({name: "b" * 64}, "≠ the track's pin"), ({}, "no val_shard_sha256 line"),
                       ({name: "a" * 64, "x.bin": "c" * 64}, "x.bin is not pinned")]:
        c, v = data_check(shas, {name: "a" * 64})
        assert not c.ok and says in c.detail and not v.ok
        assert all(k.ok for k in v.runs[0].checks[:-1])  # only `data` fails
