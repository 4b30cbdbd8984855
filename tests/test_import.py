"""`speedrun import DIR --track T`: a public records tree becomes one record per dated folder, every log
verified and kept with its verdict; idempotent; `--dry-run` writes nothing; hostile names write nothing
outside the tmp ledger. Trees are built in tmp dirs from generated logs (and, when present, the shared
fixtures copied at test time)."""
import csv
import json
import shutil
from pathlib import Path

import pytest

import logmaker
from harness import cli, ledger
from harness.public import importer
from test_ledger import root, snapshot  # noqa: F401  (the tmp-project fixture)
import fixtures

FIXTURES = fixtures.LOGS


def tree(tmp_path: Path) -> Path:
    """Three dated folders in two date styles (one failing verification), plus things to skip."""
    src = tmp_path / "track_1_short"
    for k, (name, final, n) in enumerate((("2026-01-01_Baseline", 1.15, 3), ("20260105_Faster_Muon", 1.15, 3),
                                          ("2026-01-03_TooSlow", 1.3, 2))):
        d = src / name / "this_pr"
        d.mkdir(parents=True)
        for seed in range(n):  # distinct seeds: distinct step times (the same times would be the same run)
            (d / f"{name}-{seed}.txt").write_text(logmaker.ours(seed=seed + 10 * k, final=final))
        (src / name / "README.md").write_text("# notes\n")
    (src / "2026-01-04_Empty").mkdir()
    (src / "2026-01-04_Empty" / "notes.txt").write_text("no step lines here\n")
    (src / "not_dated").mkdir()
    (src / "2026-02-30_BadDate").mkdir()
    return src


def test_import_one_record_per_folder_in_date_order(root, tmp_path, capsys):
    """Each dated folder becomes one record dated from its name, in date order; a failing folder is kept
    as unofficial with its verdict; undated, impossible-date and log-less folders are skipped with a reason."""
    src = tree(tmp_path)
    assert cli.main(["import", str(src), "--track", "tiny-cpu", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["imported"], plan["skipped"]) == (3, 3)
    reasons = {i["folder"]: i["reason"] for i in plan["items"] if i["action"] == "skip"}
    assert "date" in reasons["not_dated"] and "not a real date" in reasons["2026-02-30_BadDate"]
    assert "no run logs" in reasons["2026-01-04_Empty"]
    recs = ledger.records(root)
    assert [(r.id, r.date, r.official) for r in recs] == [
        ("tiny-cpu/0001_baseline", "2026-01-01", True), ("tiny-cpu/0002_tooslow", "2026-01-03", False),
        ("tiny-cpu/0003_faster-muon", "2026-01-05", False)]  # the baseline's own code: a reproduction
    assert recs[2].title == "Faster Muon" and recs[2].parent == recs[0].id
    assert "reproduction of tiny-cpu/0001_baseline" in (root / "records" / recs[2].id / "README.md").read_text()
    assert not recs[1].verdict["ok"] and recs[1].source["import"] == "2026-01-03_TooSlow"
    assert len(recs[0].runs) == 3 and all(f.startswith("logs/2026-01-01_Baseline-") for f in recs[0].files
                                          if f.startswith("logs/"))
    assert ledger.check(root).ok and "Baseline" in (root / "leaderboard.md").read_text()


def test_import_is_idempotent_and_dry_run_writes_nothing(root, tmp_path, capsys):
    """`--dry-run` prints the plan and writes nothing; a second import adds nothing and says why."""
    src = tree(tmp_path)
    before = snapshot(root)
    assert cli.main(["import", str(src), "--track", "tiny-cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would import" in out and "dry run" in out and snapshot(root) == before
    importer.import_tree(str(src), "tiny-cpu", root=root)
    after = snapshot(root)
    plan = importer.import_tree(str(src), "tiny-cpu", root=root)
    assert snapshot(root) == after
    assert all(i.action == "skip" for i in plan.items)
    assert sum("already imported as tiny-cpu/" in i.reason for i in plan.items) == 3


def test_hostile_names_write_nothing_outside_the_ledger(root, tmp_path, capsys):
    """Folder and file names with `..`, encoded slashes, newlines, control characters, great length, and
    embedded source paths that climb out, all import (or skip) without writing outside records/."""
    src = tmp_path / "src"
    names = ["2026-01-01_..", "2026-01-02_..%2F..%2Fevil", "2026-01-03_a\nb\x1b[31m", "2026-01-04_" + "x" * 240]
    kernels = {"../../evil.py": "x = 1\n", "/etc/evil.py": "y = 1\n"}
    for k, name in enumerate(names):
        (src / name).mkdir(parents=True)
        for seed in range(2):
            fname = ["..%2F..%2Fevil.txt", "..txt", f"\n{seed}.log", "y" * 200 + ".txt"][k]
            (src / name / f"{seed}{fname}").write_text(logmaker.ours(seed=seed + 10 * k, kernels=kernels))
    outside = tmp_path / "outside"
    outside.mkdir()
    (src / "2026-01-05_link").symlink_to(outside, target_is_directory=True)
    (outside / "0.txt").write_text(logmaker.ours(seed=99))
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("proj/")}
    assert cli.main(["import", str(src), "--track", "tiny-cpu"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("proj/")} == before
    recs = ledger.records(root)
    assert len(recs) == 4 and ledger.check(root).ok
    for r in recs:
        folder = (root / "records" / r.id).resolve()
        assert folder.parent == (root / "records/tiny-cpu").resolve() and len(folder.name) <= 45
        assert all((folder / f).resolve().is_relative_to(folder) for f in r.files)
        assert not any("evil.py" in f for f in r.files) and "\n" not in r.title
    assert all(p.resolve().is_relative_to(root.resolve()) for p in root.rglob("*"))


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures absent")
def test_import_real_public_logs(root, tmp_path):
    """The public fixture logs, laid out as records/track_1_short/<date>_<name>/ in a tmp tree, import as
    one record each, dated from the folder, each verdict kept; a second import adds nothing."""
    src = tmp_path / "track_1_short"
    rows = list(csv.DictReader((FIXTURES / "index.csv").open()))
    for row in rows:
        d = src / row["record_folder"]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / row["file"], d / row["file"].split("__", 1)[-1])
    shutil.copytree(Path(__file__).resolve().parents[1] / "records/gpt2-small", root / "records/gpt2-small")
    plan = importer.import_tree(str(src), "gpt2-small", root=root)
    folders = {r["record_folder"] for r in rows}
    assert sum(i.action == "imported" for i in plan.items) == len(folders), [vars(i) for i in plan.items]
    recs = ledger.records(root)
    assert {r.source["import"] for r in recs} == folders
    assert all(r.verdict["runs"] and len(r.runs) >= 1 for r in recs)
    assert any(r.date == "2026-05-03" for r in recs)  # a YYYYMMDD folder
    assert ledger.check(root).ok
    assert all(i.action == "skip" for i in importer.import_tree(str(src), "gpt2-small", root=root).items)


RECORDS = fixtures.RECORDS


@pytest.mark.skipif(not RECORDS.is_dir(), reason="shared fixtures absent")
def test_import_with_the_readme_keeps_the_public_row(root, tmp_path, capsys):
    """`speedrun import --readme`: each record keeps its public number, title, contributors, PR link and the
    table's official (re-timed) time beside its logs' time; a folder the table does not link is imported
    unofficial (not a record), and never becomes the next record's parent."""
    src = tmp_path / "track_1_short"
    for name in ("2026-01-26-UntieValueEmbeddings", "2026-02-28_TransposeCopyBackward"):
        shutil.copytree(RECORDS / "track_1_short" / name, src / name)
    # another record's runs under a name the table does not link (runs of their own: a copy of a folder
    # imported beside it would be the same runs, refused as such)
    shutil.copytree(RECORDS / "track_1_short" / "2025-12-29_VeSkipGates", src / "2026-02-01_NotInTheTable")
    shutil.copytree(Path(__file__).resolve().parents[1] / "records/gpt2-small", root / "records/gpt2-small")
    assert cli.main(["import", str(src), "--track", "gpt2-small", "--readme", str(RECORDS / "README_excerpt.md"),
                     "--json"]) == 0
    capsys.readouterr()
    recs = {r.source["import"]: r for r in ledger.records(root)}
    tcb = recs["2026-02-28_TransposeCopyBackward"]
    pub = tcb.source["public"]
    assert (pub["number"], pub["title"]) == (76, "Reuse and tune backward transpose kernel")
    assert pub["time_s"] == pytest.approx(86.76)
    assert pub["contributors"] == ["@samacqua"] and tcb.contributors == ["@samacqua"]
    assert pub["pr"] == "https://github.com/KellerJordan/modded-nanogpt/pull/240"
    assert pub["log_time_s"] == pytest.approx(87.9355, abs=1e-3) and tcb.title == pub["title"] and tcb.official
    extra = recs["2026-02-01_NotInTheTable"]
    assert not extra.official and "public" not in extra.source
    assert tcb.parent == recs["2026-01-26-UntieValueEmbeddings"].id and ledger.check(root).ok
