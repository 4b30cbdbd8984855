"""`speedrun leaderboard`: leaderboard.md comes from the ledger alone, deterministically, and the committed
one is current. Records are built in a tmp project (SPEEDRUN_ROOT), never in records/."""
import json
import os
import subprocess
import sys
from pathlib import Path


import pytest

import logmaker
from harness import cli, ledger
from harness.public import submit
from harness.ledger import leaderboard
from test_ledger import make_logs, root  # noqa: F401  (the tmp-project fixture)

ROOT = Path(__file__).resolve().parents[1]


def build(root, tmp_path):
    """Baseline (official, the first), a failing idea (unofficial), and a faster change timed beside runs of
    the baseline's code (official: 1.25× side by side)."""
    good, slow = make_logs(tmp_path / "good"), make_logs(tmp_path / "slow", final=1.3, start=5)
    changed = logmaker.SOURCE.replace('"step"', '"a faster step"')
    fast = make_logs(tmp_path / "fast", step_ms=8.0, start=10, source=changed)
    beside = make_logs(tmp_path / "beside", start=20, prefix="b")
    submit.add(good, "tiny-cpu", "Baseline", contributors=["alice"], date="2026-01-01", root=root)
    submit.add(slow, "tiny-cpu", "Too | slow\tidea", date="2026-01-02", unofficial=True, root=root)
    submit.add(fast, "tiny-cpu", "Faster steps", contributors=["bob", "carol"], date="2026-01-03", root=root,
               evidence=[{"role": "baseline", "dir": "baseline", "paths": beside,
                          "why": "the parent's code, timed beside it"}])


def test_official_time_chains_side_by_side_speedups(root, tmp_path):
    """A record's official time is its parent's divided by the side-by-side speedup (never a subtraction of
    times from two nodes); its measured time stands beside it; Δ compares official times."""
    build(root, tmp_path)
    rs = leaderboard.rows(ledger.records(root), "tiny-cpu")
    first, fast = rs
    assert first["official_time_ms"] == first["train_time_ms"] and first["time_basis"] == "first record"
    sp = fast["speedup"]["speedup"]
    assert fast["official_time_ms"] == pytest.approx(first["official_time_ms"] / sp)
    assert fast["delta_ms"] == pytest.approx(fast["official_time_ms"] - first["official_time_ms"])
    assert fast["time_basis"] == "side by side" and fast["node"] == "Test CPU cores:2"


def test_progression_is_official_only_unless_all(root, tmp_path, capsys):
    """The table lists official records with time, Δ vs the previous shown record, loss ± std (n), p, date,
    title, contributors and folder link; `--all` adds unofficial ones, marked."""
    build(root, tmp_path)
    assert cli.main(["leaderboard", "--no-plot"]) == 0
    md = (root / "leaderboard.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "records/tiny-cpu/" in ln]
    assert len(rows) == 2 and "Baseline" in rows[0] and "Faster steps" in rows[1]
    assert "| 1 |" in rows[0] and "| 3 |" in rows[1] and " | - |" in rows[0]
    assert "(n=3)" in rows[0] and "bob, carol" in rows[1] and "[tiny-cpu/0003_faster-steps](records/tiny-cpu/0003_faster-steps/)" in rows[1]
    assert "-0.0" in rows[1].split("|")[4]  # faster: a negative delta of official times
    capsys.readouterr()
    assert cli.main(["leaderboard", "--no-plot", "--all", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in info["tracks"]["tiny-cpu"]] == [1, 2, 3]
    md = (root / "leaderboard.md").read_text()
    assert "Too \\| slow idea (unofficial)" in md  # a pipe in a title cannot break the table


def test_regeneration_is_byte_identical(root, tmp_path):
    """Regenerating with no new record gives byte-identical leaderboard.md and progress.png."""
    build(root, tmp_path)
    leaderboard.write(root)
    png = root / "records/tiny-cpu/progress.png"
    first = ((root / "leaderboard.md").read_bytes(), png.read_bytes())
    assert first[1].startswith(b"\x89PNG")
    leaderboard.write(root)
    assert ((root / "leaderboard.md").read_bytes(), png.read_bytes()) == first


def test_edited_record_is_not_shown(root, tmp_path, capsys):
    """The leaderboard refuses a ledger whose record.json no longer matches its line (exit 2, names the file)."""
    build(root, tmp_path)
    p = root / "records/tiny-cpu/0001_baseline/record.json"
    p.write_text(p.read_text().replace("Baseline", "Baseline!"))
    assert cli.main(["leaderboard", "--no-plot"]) == 2
    assert "0001_baseline/record.json" in capsys.readouterr().err


def test_committed_leaderboard_is_current(monkeypatch):
    """The committed leaderboard.md equals what `speedrun leaderboard` generates from the real ledger now
    (regenerate with `speedrun leaderboard`)."""
    monkeypatch.delenv("SPEEDRUN_ROOT", raising=False)
    text, _ = leaderboard.markdown(ROOT)
    assert (ROOT / "leaderboard.md").read_text(encoding="utf-8") == text, "run `speedrun leaderboard`"


def test_ledger_verbs_run_without_matplotlib_numpy_or_torch(root, tmp_path):
    """`ledger check` and `leaderboard --no-plot` work where matplotlib, numpy and torch cannot be imported."""
    build(root, tmp_path)
    code = ("import sys; [sys.modules.__setitem__(m, None) for m in ('torch', 'numpy', 'matplotlib')]; "
            "from harness import cli; sys.exit(cli.main(['ledger', 'check']) or cli.main(['leaderboard', '--no-plot']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, SPEEDRUN_ROOT=str(root)))
    assert p.returncode == 0, p.stderr
