"""`harness.judge.verify` / `speedrun verify`: each check passes on clean runs and fails on a log built to break it.

Clean runs are synthetic *complete* logs in our format (tests/logmaker.py); the real trainer's log (a
`--max-steps` smoke run, incomplete by design) is used for provenance.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import logmaker
from harness import cli
from harness.judge import verify
from harness.core.track import load_track
import fixtures

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = fixtures.LOGS
H100 = (8, "H100 80GB HBM3")


def write_runs(tmp_path, n=3, **kw):
    paths = []
    for seed in range(n):
        p = tmp_path / f"run{seed}.txt"
        p.write_text(logmaker.ours(seed=seed, **kw), encoding="utf-8")
        paths.append(p)
    return paths


def gpu_runs(tmp_path, n=4, **kw):
    kw = dict(track="gpt2-small", preset="gpt2-small", gpus=H100, world_size=8, final=3.27, **kw)
    return write_runs(tmp_path, n, **kw)


def judge(paths, track="tiny-cpu", **kw):
    return verify.verify_files([str(p) for p in paths], track, **kw)


def check(verdict, run: int, name: str) -> verify.Check:
    return next(c for c in verdict.runs[run].checks if c.name == name)


def edit(path, old, new, count=1):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


def test_clean_cpu_runs_pass_every_check(tmp_path, capsys):
    """Three complete tiny-cpu runs pass all six checks; `verify` exits 0 and names every check."""
    paths = write_runs(tmp_path)
    v = judge(paths)
    assert v.ok, v.to_json()
    assert [c.name for c in v.runs[0].checks] == list(verify.CHECKS)
    assert cli.main(["verify", *map(str, paths), "--track", "tiny-cpu"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in verify.CHECKS) and "PASS" in out


def test_clean_gpu_runs_pass_and_json_shape(tmp_path, capsys):
    """Four 8×H100 gpt2-small runs pass; --json has ok, runs[file, ok, checks[name, ok, detail]], the summary
    and the rule epoch they were judged under."""
    paths = gpu_runs(tmp_path)
    assert cli.main(["verify", *map(str, paths), "--track", "gpt2-small", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and set(out) == {"ok", "runs", "summary", "rules"}
    assert out["rules"]["name"] == "side by side"  # today's epoch of gpt2-small
    assert [r["file"] for r in out["runs"]] == list(map(str, paths))
    assert all(set(c) == {"name", "ok", "detail", "unknown"} for r in out["runs"] for c in r["checks"])
    s = out["summary"]
    assert s["n"] == 4 and s["mean_val_loss"] < 3.28 and s["p_value"] < 0.01 and s["mean_train_time_ms"] > 0


def test_edited_time_fails_timing(tmp_path):
    """Lowering the final val line's train_time breaks step_avg and the RESULT claim: timing fails for that run only."""
    paths = write_runs(tmp_path)
    v = judge(paths)
    line = next(x for x in paths[1].read_text().splitlines() if x.startswith("step:20/20 val_loss"))
    t = line.split("train_time:")[1].split("ms")[0]
    edit(paths[1], line, line.replace(f"train_time:{t}ms", f"train_time:{int(t) - 50}ms"))
    v = judge(paths)
    c = check(v, 1, "timing")
    assert not c.ok and "step_avg" in c.detail and "RESULT train_time_ms" in c.detail
    assert check(v, 0, "timing").ok and not v.ok


def test_time_going_backwards_fails_timing(tmp_path):
    """A train_time that decreases mid-run (outside the old step-10 reset) fails timing, naming the line."""
    paths = write_runs(tmp_path, 2)
    text = paths[0].read_text()
    line = next(x for x in text.splitlines() if x.startswith("step:12/20 train_time"))
    edit(paths[0], line, "step:12/20 train_time:1ms step_avg:0.08ms")
    c = check(judge(paths), 0, "timing")
    assert not c.ok and "train_time 1 ms <" in c.detail


def test_dropped_final_val_line_fails_complete(tmp_path):
    """Without the validation at the last step, the run is not complete."""
    paths = write_runs(tmp_path)
    line = next(x for x in paths[2].read_text().splitlines() if x.startswith("step:20/20 val_loss"))
    edit(paths[2], line + "\n", "")
    c = check(judge(paths), 2, "complete")
    assert not c.ok and "last val line at step 15" in c.detail


def test_truncated_file_fails_complete(tmp_path):
    """A log cut mid-run fails complete (and says it is cut)."""
    paths = write_runs(tmp_path)
    text = paths[0].read_text()
    paths[0].write_text(text[: text.index("step:13/20") + 9])
    c = check(judge(paths), 0, "complete")
    assert not c.ok and "truncated" in c.detail


@pytest.mark.parametrize("code,ok", [
    ('train_files = "data/synthetic/synthetic_val_000000.bin"\n', False),
    ('# train_files = "data/synthetic/synthetic_val_000000.bin"  (a comment is not code)\n', True),
    ('x = 1  # train = synthetic_val_000000.bin\n', True),
])
def test_banned_pattern_in_live_code_fails_code(tmp_path, code, ok):
    """A banned pattern from track.toml in live code fails `code`, naming file and line; in a comment it does not."""
    paths = write_runs(tmp_path, source=logmaker.SOURCE + code)
    c = check(judge(paths), 0, "code")
    assert c.ok is ok
    if not ok:
        assert "train_gpt.py:10" in c.detail and "validation shards" in c.detail


def test_wrong_hardware_fails(tmp_path):
    """4×H100, 8×H200 and CPU logs are not 8×H100 runs: hardware fails with the reason."""
    for kw, words in [(dict(gpus=(4, "H100 80GB HBM3"), world_size=4), "4 GPU(s)"),
                      (dict(gpus=(8, "H200"), world_size=8), "not H100")]:
        d = tmp_path / words.replace(" ", "_")
        d.mkdir()
        paths = write_runs(d, 2, track="gpt2-small", preset="gpt2-small", final=3.27, **kw)
        c = check(judge(paths, "gpt2-small"), 0, "hardware")
        assert not c.ok and words in c.detail
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    c = check(judge(write_runs(cpu, 2, track="gpt2-small"), "gpt2-small"), 0, "hardware")
    assert not c.ok and "no GPU listing" in c.detail


def test_duplicated_run_counted_once(tmp_path):
    """A copy of a run fails `runs` naming the run it copies, and the t-test counts it once."""
    paths = write_runs(tmp_path)
    dup = tmp_path / "copy.txt"
    dup.write_text(paths[0].read_text())
    v = judge([*paths, dup])
    assert v.summary["n"] == 3 and not v.ok
    c = check(v, 3, "runs")
    assert not c.ok and "near-duplicate of" in c.detail and str(paths[0]) in c.detail
    assert check(v, 0, "runs").ok and check(v, 0, "target").ok


def test_copy_with_one_val_digit_edited_is_one_run(tmp_path):
    """A copy whose val losses were edited but whose step times are the same to the ms is the same run:
    flagged naming both files, counted once, and it cannot lower the p-value."""
    paths = write_runs(tmp_path)
    dup = tmp_path / "edited.txt"
    text = paths[1].read_text()
    final = logmaker.curve(20, 20, 1, 1.15)
    dup.write_text(text.replace(f"val_loss:{final:.4f}", f"val_loss:{final - 0.001:.4f}"))
    assert dup.read_text() != text
    honest = judge(paths)
    v = judge([*paths, dup])
    c = check(v, 3, "runs")
    assert not c.ok and str(paths[1]) in c.detail and "step times" in c.detail
    assert v.summary["n"] == 3 and v.summary["p_value"] == honest.summary["p_value"]


def test_distinct_runs_are_not_near_duplicates(tmp_path):
    """Runs of different seeds (different times and curves) all count."""
    v = judge(write_runs(tmp_path, 4))
    assert v.summary["n"] == 4 and all(check(v, k, "runs").ok for k in range(4))


def test_truncated_and_other_track_runs_leave_the_statistics(tmp_path):
    """A truncated log and another track's log fail their own checks and leave the mean and p-value."""
    paths = write_runs(tmp_path, 3)
    honest = judge(paths)
    cut = tmp_path / "cut.txt"
    cut.write_text(logmaker.ours(seed=7).split("step:15/20")[0])
    other = tmp_path / "other.txt"
    other.write_text(logmaker.ours(seed=8, final=1.10).replace("track:tiny-cpu", "track:gpt2-small"))
    v = judge([*paths, cut, other])
    assert v.summary["n"] == 3 and v.summary["mean_val_loss"] == honest.summary["mean_val_loss"]
    assert not check(v, 3, "complete").ok and not check(v, 4, "provenance").ok
    assert "not counted" in check(v, 4, "target").detail


def test_one_run_cannot_show_significance_is_unknown(tmp_path):
    """One run under the target: the p-value needs several, so `target` is not checked (unknown), not ok."""
    v = judge(write_runs(tmp_path, 1))
    c = check(v, 0, "target")
    assert not c.ok and c.unknown and "needs at least 2" in c.detail


def test_code_differing_between_runs_fails_code(tmp_path):
    """Runs must carry the same source: one changed line fails `code` and names the file and line."""
    paths = write_runs(tmp_path, 2)
    paths.append(tmp_path / "other.txt")
    paths[2].write_text(logmaker.ours(seed=5, source=logmaker.SOURCE.replace("import os", "import sys")))
    v = judge(paths)
    c = check(v, 2, "code")
    assert not c.ok and "train_gpt.py differs" in c.detail and "line 2" in c.detail
    assert check(v, 2, "provenance").ok  # its own hashes are consistent; it is just other code


def test_script_must_match(tmp_path):
    """--script: the embedded train_gpt.py must equal the given file byte for byte."""
    paths = write_runs(tmp_path, 2)
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(logmaker.SOURCE)
    bad.write_text(logmaker.SOURCE + "\n")
    assert judge(paths, script=str(good)).ok
    c = check(judge(paths, script=str(bad)), 0, "code")
    assert not c.ok and "--script" in c.detail


def test_provenance_fails_on_edited_source(tmp_path):
    """Embedded source edited after the run (hashes not updated) fails provenance."""
    paths = write_runs(tmp_path)
    for p in paths:
        edit(p, 'print("step")', 'print("steps")')
    c = check(judge(paths), 0, "provenance")
    assert not c.ok and "train_gpt.py: env code_sha256" in c.detail and "RESULT code_sha256" in c.detail


@pytest.mark.slow
def test_real_trainer_log(corpus, tmp_path_factory, tmp_path):
    """The trainer's own log: provenance holds; a --max-steps run is not complete; an edited byte breaks provenance."""
    text = logmaker.real_log(corpus, tmp_path_factory.mktemp("real"))
    p = tmp_path / "x.txt"
    p.write_text(text)
    v = judge([p])
    assert check(v, 0, "provenance").ok and check(v, 0, "hardware").ok and check(v, 0, "timing").ok
    assert not check(v, 0, "complete").ok
    p.write_text(text.replace("import ", "import  ", 1))
    assert not check(judge([p]), 0, "provenance").ok


def test_modded_eras_timing(tmp_path):
    """The old rule allows the clock reset after step 10 only, and only in its own epoch (before the
    timing change after record 21); trials in one file are runs named file#k."""
    old = tmp_path / "old.txt"
    old.write_text(logmaker.modded(reset10=True, leading_sep=True, train_loss=True))
    assert check(judge([old], "gpt2-small", date="2024-12-01"), 0, "timing").ok
    today = check(judge([old], "gpt2-small"), 0, "timing")
    assert not today.ok and "steps 1–10 are untimed" in today.detail
    cur = tmp_path / "cur.txt"
    text = logmaker.modded()
    line = next(x for x in text.splitlines() if x.startswith("step:15/"))
    cur.write_text(text.replace(line, "step:15/30 train_time:10ms step_avg:0.67ms"))
    c = check(judge([cur], "gpt2-small"), 0, "timing")
    assert not c.ok and "train_time 10 ms <" in c.detail
    multi = tmp_path / "multi.txt"
    multi.write_text(logmaker.modded(trials=3, seconds=True, train_lines=False, decimals=5))
    v = judge([multi], "gpt2-small")
    assert [r.file for r in v.runs] == [f"{multi}#{k}" for k in (1, 2, 3)]
    assert all(check(v, k, n).ok for k in range(3) for n in ("complete", "timing", "hardware", "code"))
    assert [c.name for c in v.runs[0].checks] == list(verify.CHECKS[:7])  # provenance and data: our logs only


def test_fixtures_verify(tmp_path):
    """Real public logs: complete, timing (both eras), hardware and code pass against gpt2-small / gpt2-medium,
    each under the rules of the date it ran (a single run was a record before p < 0.01 was required)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} absent")
    for name, track in [("2024-10-10_Muon", "gpt2-small"), ("2025-01-04_SoftCap", "gpt2-small"),
                        ("2026-07-17_FP8", "gpt2-small"), ("2025-12-31_Bulk", "gpt2-medium")]:
        f = next(FIXTURES.glob(name + "*"))
        v = judge([f], track)
        for n in ("complete", "timing", "hardware", "code"):
            assert check(v, 0, n).ok, (name, check(v, 0, n))
        assert check(v, 0, "target").ok == (v.rules["significance"] == "single-run")  # one run: no p < 0.01
    assert judge([next(FIXTURES.glob("2024-10-10_Muon*"))], "gpt2-small").rules["name"] == "single runs"
    llmc = next(FIXTURES.glob("*llmc*"))
    assert {c.name for c in judge([llmc], "gpt2-small").runs[0].checks if not c.ok} == {
        "complete", "target", "timing", "hardware", "code", "flags"}


def test_exit_codes(tmp_path, capsys):
    """Exit 1 when a check fails; 2 for a missing file, an unknown track, or a file with no run in it."""
    paths = write_runs(tmp_path, 1)
    assert cli.main(["verify", str(paths[0]), "--track", "tiny-cpu"]) == 1  # one run: no t-test
    assert cli.main(["verify", str(tmp_path / "nope.txt"), "--track", "tiny-cpu"]) == 2
    assert cli.main(["verify", str(paths[0]), "--track", "nope"]) == 2
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    assert cli.main(["verify", str(junk), "--track", "tiny-cpu"]) == 2
    assert "not a run log" in capsys.readouterr().err


def test_never_executes_log_code(tmp_path):
    """Verification reads code, it never runs it: embedded code that would write a file leaves none."""
    marker = tmp_path / "EXECUTED"
    src = logmaker.SOURCE + f"open({str(marker)!r}, 'w').write('x')\n"
    judge(write_runs(tmp_path, 2, source=src))
    assert not marker.exists()


def test_verify_without_torch_or_numpy(tmp_path):
    """`speedrun verify` and `parse` run with torch, numpy and scipy unimportable."""
    paths = write_runs(tmp_path, 2)
    code = ("import sys; sys.modules['torch'] = sys.modules['numpy'] = sys.modules['scipy'] = None; "
            "import harness.cli, harness.judge.logs, harness.core.stats, harness.judge.verify; "
            f"sys.exit(harness.cli.main(['verify', {str(paths[0])!r}, {str(paths[1])!r}, '--track', 'tiny-cpu']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr


def test_track_files_load():
    """The gpt2-medium track (modded-nanogpt track 2) loads with its target and hardware."""
    t = load_track("gpt2-medium")
    assert t["target"] == 2.92 and t["hardware"] == {"accelerator": "gpu", "model": "H100", "count": 8}


def test_parent_that_is_no_log_is_bad_input_and_unreadable_code_is_not_checked(tmp_path, capsys):
    """`verify --parent` an empty or binary file exits 2; a parent log without embedded code leaves rule 3
    "not checked" (unknown), which fails where rule 3 is in force, never "ok"."""
    paths = write_runs(tmp_path)
    for bad in (b"", bytes(range(256)) * 4):
        f = tmp_path / "parent.bin"
        f.write_bytes(bad)
        assert cli.main(["verify", *map(str, paths), "--track", "tiny-cpu", "--parent", str(f)]) == 2
        assert "parent.bin" in capsys.readouterr().err
    codeless = tmp_path / "codeless.txt"
    codeless.write_text("\n".join(ln for ln in logmaker.ours(seed=9).splitlines() if ln.startswith(("step:", "RESULT")))
                        + "\n")
    assert cli.main(["verify", *map(str, paths), "--track", "tiny-cpu", "--parent", str(codeless), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    flags = next(c for c in out["runs"][0]["checks"] if c["name"] == "flags")
    assert flags["unknown"] and not flags["ok"] and flags["detail"].startswith("not checked")
