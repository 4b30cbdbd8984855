"""`harness.ledger` / `speedrun record add` / `speedrun ledger check`: records land whole or not at all,
and every edit after the fact is found. Every test works in a tmp project (SPEEDRUN_ROOT), never records/."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import logmaker
from harness.core.files import sha256_bytes
from harness.public import submit
from harness import cli, ledger
from harness.core.track import load_track

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A tmp project holding only the tiny-cpu track, with SPEEDRUN_ROOT pointing at it."""
    r = tmp_path / "proj"
    (r / "records/tiny-cpu").mkdir(parents=True)
    shutil.copy(ROOT / "records/tiny-cpu/track.toml", r / "records/tiny-cpu/track.toml")
    monkeypatch.setenv("SPEEDRUN_ROOT", str(r))
    return r


def make_logs(dirpath: Path, n=3, prefix="run", start=0, **kw) -> list[str]:
    """n distinct runs (seeds start…start+n-1: their step times differ, so none is a copy of another)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in range(start, start + n):
        p = dirpath / f"{prefix}{seed}.txt"
        p.write_text(logmaker.ours(seed=seed, **kw), encoding="utf-8")
        out.append(str(p))
    return out


def snapshot(path: Path) -> dict:
    """Every file's bytes, but the lock file (taking the lock creates it; it holds nothing)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ledger.LOCK}


def add_three(root, tmp_path):
    """Three records of distinct runs; the later two have no side-by-side timing, so they are unofficial."""
    return [submit.add(make_logs(tmp_path / f"in{k}", start=10 * k), "tiny-cpu", f"Record {k}", root=root,
                       unofficial=k > 0) for k in range(3)]


def test_record_add_stores_everything_and_chains(root, tmp_path, capsys):
    """`record add` writes <NNNN>_<slug>/ with record.json (valid, byte-reproducible), the script and
    kernels, logs/ and README.md, one chained ledger line, and leaderboard.md; `ledger check` passes."""
    logs = make_logs(tmp_path / "in")
    (tmp_path / "why.md").write_text("Muon replaces AdamW for the hidden matrices.\n")
    assert cli.main(["record", "add", *logs, "--track", "tiny-cpu", "--title", "Baseline: Muon!",
                     "--contributors", "alice,bob", "--date", "2026-01-02", "--readme", str(tmp_path / "why.md"),
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    folder = root / "records/tiny-cpu/0001_baseline-muon"
    assert out["record"]["id"] == "tiny-cpu/0001_baseline-muon"
    assert sorted(snapshot(folder)) == ["README.md", "kernels/add.py", "logs/run0.txt", "logs/run1.txt",
                                       "logs/run2.txt", "record.json", "train_gpt.py"]
    rec = ledger.read_record(folder)
    assert (rec.official, rec.contributors, rec.date, rec.parent, rec.track_version) == \
        (True, ["alice", "bob"], "2026-01-02", None, load_track("tiny-cpu")["version"])
    assert ledger.record_bytes(rec) == (folder / "record.json").read_bytes()
    assert rec.summary["n"] == 3 and rec.summary["std_val_loss"] > 0 and rec.summary["p_value"] < 0.01
    assert [r["seed"] for r in rec.runs] == [0, 1, 2] and all(r["steps"] == 20 for r in rec.runs)
    assert rec.code_sha256 == rec.files["train_gpt.py"]
    [line] = ledger.read_lines(root)
    assert line["prev"] == ledger.GENESIS and line["hash"] == ledger.line_hash(line)
    assert line["record_sha256"] == sha256_bytes((folder / "record.json").read_bytes())
    assert "Baseline: Muon!" in (root / "leaderboard.md").read_text()
    readme = (folder / "README.md").read_text()
    assert "Muon replaces AdamW" in readme and "| logs/run2.txt | provenance | ok |" in readme
    assert cli.main(["ledger", "check", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["records"] == 1 and rep["files"] == 6


def test_second_record_numbers_and_parents(root, tmp_path):
    """Numbers count up within the track; the parent defaults to the latest official record, and an
    unofficial record is never a default parent."""
    logs = make_logs(tmp_path / "in")
    a = submit.add(logs, "tiny-cpu", "one", root=root).record
    bad = make_logs(tmp_path / "bad", final=1.3, start=5)
    b = submit.add(bad, "tiny-cpu", "two", unofficial=True, root=root).record
    c = submit.add(make_logs(tmp_path / "c", start=10), "tiny-cpu", "three", root=root, unofficial=True).record
    assert [a.id, b.id, c.id] == ["tiny-cpu/0001_one", "tiny-cpu/0002_two", "tiny-cpu/0003_three"]
    assert (b.official, b.parent, c.parent) == (False, a.id, a.id)
    assert ledger.check(root).ok


def test_a_second_record_needs_rule_4(root, tmp_path, capsys):
    """Verification alone is not a record: logs with no side-by-side timing against the parent are refused
    (exit 1, nothing written, rule 4 named); `--unofficial` stores them unofficial with the reason."""
    submit.add(make_logs(tmp_path / "a"), "tiny-cpu", "first", root=root)
    logs = make_logs(tmp_path / "b", start=10, source=logmaker.SOURCE.replace('"step"', '"a step"'))
    before = snapshot(root)
    assert cli.main(["record", "add", *logs, "--track", "tiny-cpu", "--title", "faster?"]) == 1
    assert "rule 4" in capsys.readouterr().err and snapshot(root) == before
    assert cli.main(["record", "add", *logs, "--track", "tiny-cpu", "--title", "faster?", "--unofficial"]) == 0
    rec = ledger.records(root)[-1]
    assert not rec.official and rec.verdict["ok"]
    assert "rule 4" in (root / "records" / rec.id / "README.md").read_text()


def test_logs_or_runs_already_in_the_ledger_are_refused(root, tmp_path, capsys):
    """The same log files, or a copy of a stored run with one val digit edited (same step times), are
    refused even with --unofficial: exit 1, nothing written, the stored file named."""
    logs = make_logs(tmp_path / "a")
    submit.add(logs, "tiny-cpu", "first", root=root)
    before = snapshot(root)
    assert cli.main(["record", "add", *logs, "--track", "tiny-cpu", "--title", "again", "--unofficial"]) == 1
    assert "already in the ledger" in capsys.readouterr().err and snapshot(root) == before
    edited = tmp_path / "edited"
    edited.mkdir()
    for k, p in enumerate(logs):
        text = Path(p).read_text()
        last = [ln for ln in text.splitlines() if "val_loss:" in ln][-1]
        loss = last.split("val_loss:")[1].split()[0]
        (edited / f"e{k}.txt").write_text(text.replace(f"val_loss:{loss}", f"val_loss:{float(loss) - 0.01:.4f}"))
    assert cli.main(["record", "add", *map(str, edited.iterdir()), "--track", "tiny-cpu", "--title", "edited",
                     "--unofficial"]) == 1
    err = capsys.readouterr().err
    assert "the same run as records/tiny-cpu/0001_first/logs/" in err and snapshot(root) == before


def test_a_parent_on_another_track_or_not_a_record_is_bad_input(root, tmp_path, capsys):
    """`--parent` naming another track's record, or an unofficial one, exits 2 and writes nothing."""
    shutil.copytree(ROOT / "records/gpt2-small", root / "records/gpt2-small", ignore=shutil.ignore_patterns("0*"))
    import harness.judge.verify  # noqa: F401  (the gpt2 logs below are made by logmaker)
    gpu = make_logs(tmp_path / "g", track="gpt2-small", preset="gpt2-small", gpus=(8, "H100 80GB HBM3"),
                    world_size=8, final=3.27)
    other = submit.add(gpu, "gpt2-small", "gpu", root=root).record
    bad = submit.add(make_logs(tmp_path / "bad", final=1.3), "tiny-cpu", "bad", root=root, unofficial=True).record
    before = snapshot(root)
    for parent in (other.id, bad.id):
        assert cli.main(["record", "add", *make_logs(tmp_path / "c", start=20), "--track", "tiny-cpu", "--title", "x",
                         "--parent", parent, "--unofficial"]) == 2
        assert parent in capsys.readouterr().err and snapshot(root) == before


def test_code_identical_to_the_parent_is_a_reproduction(root, tmp_path, capsys):
    """New runs of the parent's own code are a reproduction, never a record: refused, and stored only
    unofficial with that reason."""
    submit.add(make_logs(tmp_path / "a"), "tiny-cpu", "first", root=root)
    again = make_logs(tmp_path / "b", start=10)
    assert cli.main(["record", "add", *again, "--track", "tiny-cpu", "--title", "again"]) == 1
    assert "a reproduction of tiny-cpu/0001_first" in capsys.readouterr().err
    rec = submit.add(again, "tiny-cpu", "again", root=root, unofficial=True).record
    assert not rec.official
    assert "reproduction of tiny-cpu/0001_first" in (root / "records" / rec.id / "README.md").read_text()


def test_failing_verification_refuses_and_writes_nothing(root, tmp_path, capsys):
    """A failing verdict exits 1 and writes nothing; `--unofficial` records it, marked unofficial, with its verdict."""
    logs = make_logs(tmp_path / "in", final=1.3)
    before = snapshot(root)
    assert cli.main(["record", "add", *logs, "--track", "tiny-cpu", "--title", "slow"]) == 1
    assert "--unofficial" in capsys.readouterr().err
    assert snapshot(root) == before
    assert cli.main(["record", "add", *logs, "--track", "tiny-cpu", "--title", "slow", "--unofficial"]) == 0
    rec = ledger.records(root)[0]
    assert not rec.official and not rec.verdict["ok"]
    assert any(c["name"] == "target" and not c["ok"] for c in rec.verdict["runs"][0]["checks"])


@pytest.mark.parametrize("argv,needle", [
    (["MISSING", "--track", "tiny-cpu"], "cannot read"),
    (["LOG", "--track", "nope"], "records/nope/track.toml"),
    (["LOG", "--track", "tiny-cpu", "--parent", "tiny-cpu/0009_x"], "--parent"),
    (["LOG", "--track", "tiny-cpu", "--date", "yesterday"], "--date"),
])
def test_bad_input_exits_2_and_writes_nothing(root, tmp_path, capsys, argv, needle):
    """A missing log, unknown track, unknown parent or bad date is bad input (exit 2) that names the problem."""
    logs = make_logs(tmp_path / "in")
    argv = [x for a in argv for x in {"LOG": logs, "MISSING": [str(tmp_path / "nope.txt")]}.get(a, [a])]
    before = snapshot(root)
    assert cli.main(["record", "add", *argv, "--title", "t"]) == 2
    assert needle in capsys.readouterr().err
    assert snapshot(root) == before


def test_embedded_paths_cannot_escape_the_record(root, tmp_path):
    """Embedded file names from a log (`..`, absolute, clashing with README.md) never write outside the
    record folder; they are skipped and noted."""
    kernels = {"../evil.py": "x = 1\n", "/tmp/abs.py": "y = 2\n", "README.md": "z\n", "kernels/ok.py": "w = 3\n"}
    logs = make_logs(tmp_path / "in", kernels=kernels)
    outside = snapshot(tmp_path)
    added = submit.add(logs, "tiny-cpu", "paths", root=root)
    folder = root / "records" / added.record.id
    assert sorted(added.record.files) == ["README.md", "kernels/ok.py", "logs/run0.txt", "logs/run1.txt",
                                          "logs/run2.txt", "train_gpt.py"]
    assert len(added.notes) == 3
    new = {k for k in snapshot(tmp_path) if k not in outside}
    assert all(k.startswith("proj/records/") for k in new), new
    assert (folder / "README.md").read_text().startswith("# paths")


@pytest.mark.parametrize("bad,field", [
    ({"schema_version": 3}, "schema_version"), ({"date": "21/11/2026"}, "date"), ({"id": "../x"}, "id"),
    ({"files": {"../x": "0" * 64}}, "files"), ({"official": "yes"}, "official"), ({"extra": 1}, "extra"),
])
def test_validate_names_the_bad_field(root, tmp_path, bad, field):
    """Reading a record.json that breaks the schema raises an InputError naming the field."""
    rec = submit.add(make_logs(tmp_path / "in"), "tiny-cpu", "v", root=root).record
    d = {**rec.to_json(), **bad}
    with pytest.raises(ledger.RecordError, match=repr(field)):
        ledger.validate(d)


def _edit(path: Path):
    path.write_bytes(path.read_bytes() + b" ")


def _lines(root):
    return (root / "records/ledger.jsonl").read_text().splitlines(keepends=True)


BREAKS = {
    "edited record.json": (lambda r: _edit(r / "records/tiny-cpu/0002_record-1/record.json"), 2, "record.json"),
    "edited log": (lambda r: _edit(r / "records/tiny-cpu/0002_record-1/logs/run11.txt"), 2, "logs/run11.txt"),
    "missing log": (lambda r: (r / "records/tiny-cpu/0001_record-0/logs/run0.txt").unlink(), 1, "logs/run0.txt"),
    "edited script": (lambda r: _edit(r / "records/tiny-cpu/0003_record-2/train_gpt.py"), 3, "train_gpt.py"),
    "added file": (lambda r: (r / "records/tiny-cpu/0001_record-0/logs/x.txt").write_text("x"), 1, "logs/x.txt"),
    "reordered lines": (lambda r: (r / "records/ledger.jsonl").write_text("".join(
        [(ls := _lines(r))[1], ls[0], ls[2]])), 1, "ledger.jsonl"),
    "deleted middle line": (lambda r: (r / "records/ledger.jsonl").write_text("".join(
        [(ls := _lines(r))[0], ls[2]])), 2, "ledger.jsonl"),
    "deleted last line": (lambda r: (r / "records/ledger.jsonl").write_text("".join(_lines(r)[:2])),
                          3, "records/tiny-cpu/0003_record-2"),
    "edited ledger line": (lambda r: (r / "records/ledger.jsonl").write_text("".join(
        [(ls := _lines(r))[0], ls[1].replace("record-1", "record-9"), ls[2]])), 2, "ledger.jsonl"),
}


@pytest.mark.parametrize("name", BREAKS)
def test_ledger_check_names_the_first_break(root, tmp_path, capsys, name):
    """Each kind of tampering makes `ledger check` exit 1 and name the break's seq and file."""
    add_three(root, tmp_path)
    assert cli.main(["ledger", "check"]) == 0
    capsys.readouterr()
    breaker, seq, file = BREAKS[name]
    breaker(root)
    assert cli.main(["ledger", "check", "--json"]) == 1
    b = json.loads(capsys.readouterr().out)["break"]
    assert b["seq"] == seq and b["file"].endswith(file), b
    assert cli.main(["ledger", "check"]) == 1
    assert "BROKEN" in capsys.readouterr().out


def _cli(root: Path, *argv, crash: str | None = None):
    env = dict(os.environ, SPEEDRUN_ROOT=str(root))
    env.pop("SPEEDRUN_TEST_CRASH_AT", None)
    if crash:
        env["SPEEDRUN_TEST_CRASH_AT"] = crash
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_adds_both_land(root, tmp_path):
    """Two `record add` processes at once both land, numbered 1 and 2 in some order, with an intact chain."""
    a, b = make_logs(tmp_path / "a", n=2), make_logs(tmp_path / "b", n=2, prefix="b", start=10)
    procs = [_cli(root, "record", "add", *logs, "--track", "tiny-cpu", "--title", t, "--unofficial")
             for logs, t in ((a, "alpha"), (b, "beta"))]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    rep = ledger.check(root)
    assert rep.ok, rep.broken
    assert sorted(r.id for r in rep.records) in (["tiny-cpu/0001_alpha", "tiny-cpu/0002_beta"],
                                                 ["tiny-cpu/0001_beta", "tiny-cpu/0002_alpha"])
    assert [ln["seq"] for ln in ledger.read_lines(root)] == [1, 2]
    assert not list((root / "records").glob("*/.staging-*")) and not list((root / "records").glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_folder", "before_replace", "after_replace"])
def test_crash_mid_write_leaves_ledger_whole(root, tmp_path, point):
    """A `record add` SIGKILLed mid-write leaves the ledger byte-identical (or, past the replace, fully
    appended) and no record folder the ledger does not list; the next `record add` cleans up or completes."""
    submit.add(make_logs(tmp_path / "first", n=2), "tiny-cpu", "first", root=root)
    logs = make_logs(tmp_path / "in", n=2, start=10)
    before = (root / "records/ledger.jsonl").read_bytes()
    p = _cli(root, "record", "add", *logs, "--track", "tiny-cpu", "--title", "crash", "--unofficial", crash=point)
    p.communicate(timeout=120)
    assert p.returncode == -9
    visible = sorted(x.name for x in (root / "records/tiny-cpu").iterdir() if ledger.FOLDER.match(x.name))
    assert visible == ["0001_first"]
    after = (root / "records/ledger.jsonl").read_bytes()
    if point == "after_replace":
        assert after.startswith(before) and len(after.splitlines()) == 2  # landed whole; folder still staged
        assert "crashed" in ledger.check(root).broken["problem"]
    else:
        assert after == before and ledger.check(root).ok
    if point != "after_replace":  # landed whole: these logs are in the ledger now
        submit.add(logs, "tiny-cpu", "next", root=root, unofficial=True)
    else:
        submit.add(make_logs(tmp_path / "next", n=2, start=20), "tiny-cpu", "next", root=root, unofficial=True)
    rep = ledger.check(root)
    assert rep.ok, rep.broken
    assert not list((root / "records").glob("*/.staging-*"))
    n = 3 if point == "after_replace" else 2
    assert len(rep.records) == n and rep.records[-1].id == f"tiny-cpu/{n:04d}_next"


def test_a_held_lock_makes_a_writer_wait(root, tmp_path):
    """While another holder has records/.ledger.lock, `record add` waits; it lands once the lock is released."""
    logs = make_logs(tmp_path / "in", n=2)
    with ledger.locked(root):
        p = _cli(root, "record", "add", *logs, "--track", "tiny-cpu", "--title", "waits")
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=1.5)
        assert not (root / "records/ledger.jsonl").exists()
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert ledger.check(root).ok and len(ledger.read_lines(root)) == 1


def test_find_takes_a_record_by_whole_id_or_by_number():
    """`--parent tiny-cpu/0001` and `--baseline tiny-cpu/0001` name tiny-cpu/0001_slug; a number that is not
    there, or a prefix that is not a whole number, is an InputError listing the known ids."""
    from types import SimpleNamespace

    from harness.core.errors import InputError

    recs = [SimpleNamespace(id="tiny-cpu/0001_nanogpt-baseline"), SimpleNamespace(id="tiny-cpu/0002_muon")]
    assert ledger.find(recs, "tiny-cpu/0001", "--parent").id == "tiny-cpu/0001_nanogpt-baseline"
    assert ledger.find(recs, "tiny-cpu/0002_muon", "--parent").id == "tiny-cpu/0002_muon"
    for bad in ("tiny-cpu/0003", "tiny-cpu/000", "gpt2-small/0001"):
        with pytest.raises(InputError, match=r"--parent .*no such record.*known: tiny-cpu/0001_nanogpt-baseline"):
            ledger.find(recs, bad, "--parent")
