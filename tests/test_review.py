"""`speedrun audit` as a maintainer reviews a PR: any path, cohorts wherever files sit, the submission a
folder names, the baseline that meets the target, parents by table row or run dates, three outcomes.
New layouts are built in tmp dirs out of the shared fixture logs (skipped when they are absent)."""
import json
import re
import shutil
from pathlib import Path

import pytest

from harness.public import audit, layout
from harness import cli
from harness.judge import logs, verify
from harness.core import rules
from harness.core.track import load_track
import fixtures

RECORDS = fixtures.RECORDS
TREE, README = RECORDS / "track_1_short", RECORDS / "README_excerpt.md"
LOGS = fixtures.LOGS
needs_fixtures = pytest.mark.skipif(not TREE.is_dir(), reason=f"{TREE} absent")
TCB, MUDD = "2026-02-28_TransposeCopyBackward", "2026-04-22_MuddFormer"


def _console(text: str) -> str:
    """A console capture of a run: its step lines, without the code or environment."""
    return "\n".join(line for line in text.splitlines() if line.startswith(("step:", "peak memory"))) + "\n"


def phases(dest: Path, readme: str = "The claim is the certify cohort.\n") -> Path:
    """The September-2026 layout: runs/<phase>/<NN>_<role>/<uuid>.txt, each with result.json and a
    console.log capture; pilot and certify run the candidate's code, accepted the parent's, and
    short_control the parent's with a final loss that misses the target."""
    src = TREE / TCB
    cand, base = sorted((src / "this_pr").glob("*.txt")), sorted((src / "baseline").glob("*.txt"))
    k = 0

    def put(phase, role, log, text=None):
        nonlocal k
        k += 1
        d = dest / "runs" / phase / f"{k:02d}_{role}"
        d.mkdir(parents=True)
        text = text if text is not None else log.read_text()
        (d / log.name).write_text(text)
        (d / "console.log").write_text(_console(text))
        last = [line for line in text.splitlines() if "val_loss:" in line][-1]
        loss, ms = re.search(r"val_loss:([\d.]+) train_time:(\d+)ms", last).groups()
        (d / "result.json").write_text(json.dumps({"final": {"val_loss": float(loss), "train_time_ms": int(ms)}}))
    for log in cand[:2]:
        put("pilot", "candidate", log)
    for log in cand[2:]:
        put("certify", "candidate", log)
    for log in base:
        put("accepted", "baseline", log)
    for log in base[:3]:  # the parent's code, "shortened": its final loss misses the target
        text = log.read_text()
        last = [line for line in text.splitlines() if "val_loss:" in line][-1]
        put("short_control", "baseline", log, text.replace(last, re.sub(r"val_loss:[\d.]+", "val_loss:3.2950", last)))
    (dest / "README.md").write_text(readme)
    return dest


@needs_fixtures
def test_one_record_folder_is_audited(capsys):
    """`speedrun audit FOLDER` judges that one folder (it used to audit nothing and exit 0): the
    submission beside its baseline, accepted with its speedup; --json keeps the public keys; exit 0."""
    assert cli.main(["audit", str(TREE / TCB), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [a["folder"] for a in rep["folders"]] == [TCB] and rep["single"]
    a = rep["folders"][0]
    assert a["status"] == "accepted" and a["submission"]["dir"] == "this_pr" and a["number"] is None
    assert {g["role"] for g in a["groups"]} == {"submission", "baseline"} and all(g["files"] for g in a["groups"])
    assert a["speedup"]["baseline"] == "baseline" and 1 < a["speedup"]["ci95"][0]
    assert cli.main(["audit", str(TREE / "2025-05-30_noallreduce")]) == 1  # not accepted: exit 1
    out = capsys.readouterr().out
    assert "rule 3" in out and "1 record folder(s)" in out


@needs_fixtures
def test_phases_layout_cohorts_not_directories(tmp_path):
    """runs/<phase>/<NN>_<role>/<uuid>.txt with result.json and console.log beside each log: runs group
    into cohorts across run directories (certify's 4 directories are one cohort), console captures and
    result.json are evidence of their run (not runs of unknown hardware), the README's claim picks the
    certify cohort, the accepted-phase baseline gives the speedup and the short control that misses the
    target is reported, not used."""
    d = phases(tmp_path / "2026-09-10_Phases")
    a = audit.audit_tree(d, "gpt2-small")["folders"][0]
    roles = {g["dir"]: (g["role"], g["runs"], len(g["evidence"])) for g in a["groups"]}
    assert roles == {"runs/certify": ("submission", 4, 8), "runs/pilot": ("re-time", 2, 4),
                     "runs/accepted": ("baseline", 6, 12), "runs/short_control": ("baseline", 3, 6)}
    assert a["submission"]["how"] == "the folder's README says it is what was submitted"
    assert a["speedup"]["baseline"] == "runs/accepted" and a["status"] == "accepted"
    assert [m["dir"] for m in a["baseline_missed"]] == ["runs/short_control"]
    assert a["flags"] == []
    rj = next((d / "runs/certify").glob("*/result.json"))
    rj.write_text(json.dumps({"final": {"val_loss": 3.2700, "train_time_ms": 1}}))
    a = audit.audit_tree(d, "gpt2-small")["folders"][0]
    assert any("result.json" in x and "val_loss 3.27" in x and "train_time_ms" in x for x in a["flags"])


@needs_fixtures
def test_role_words_in_file_names_and_normalised_code(tmp_path):
    """A flat folder whose file names carry the roles: "baseline" in a file name makes a baseline cohort;
    runs whose code differs only in comments, docstrings or whitespace are one cohort."""
    f = layout.read_folder(TREE / "2026-04-08_PairedHeadMuon", load_track("gpt2-small"))
    assert f.submission.paths[0].name.startswith("split_qk") and len(f.submission.paths) == 8
    assert {g.role for g in f.groups if "baseline" in g.paths[0].name} == {"baseline"}
    d = tmp_path / "2026-02-28_Commented"
    shutil.copytree(TREE / TCB / "this_pr", d)
    for k, p in enumerate(sorted(d.glob("*.txt"))[:3]):
        p.write_text(p.read_text().replace("\nimport torch\n", f'\n# run {k}: a note\nimport torch  \n', 1))
    assert layout.normalised("def f(x: int) -> int:\n    '''doc'''\n    return x  # c\n") == \
        layout.normalised("def f(x):\n\n    return x\n")
    g = layout.read_folder(d, load_track("gpt2-small")).groups
    assert len(g) == 1 and len(g[0].paths) == 6


@needs_fixtures
def test_the_submission_a_folder_names_or_the_highest_version(tmp_path):
    """Several versions of a change beside baselines at two step counts: with nothing naming one, the
    highest version (v3) is the submission, never the first or the one with the fewest steps; a README
    naming the submitted version picks it; the baseline at the parent's step count that meets the target
    gives the speedup (≈1.034×, the README's), the one that misses the target is reported."""
    track = load_track("gpt2-small")
    f = layout.read_folder(TREE / MUDD, track)
    assert f.submission.dir == "this_pr_v3" and f.baseline.dir == "baseline-s1480"
    assert [g.dir for g in f.baseline_missed] == ["baseline-s1430"]
    d = tmp_path / MUDD
    shutil.copytree(TREE / MUDD, d)
    (d / "README.md").write_text("# MUDD\n\nThe submitted version is v2 (this_pr_v2); this_pr_v3 came later.\n")
    assert layout.read_folder(d, track).submission.dir == "this_pr_v2"
    (d / "README.md").write_text("# MUDD\n\nOur final val loss in this_pr_v1 was higher.\n")
    assert layout.read_folder(d, track).submission.dir == "this_pr_v3"
    a = audit.audit_tree(TREE / MUDD, "gpt2-small")["folders"][0]
    assert a["speedup"]["speedup"] == pytest.approx(84.7039 / 81.9146, rel=2e-4)
    assert 1 < a["speedup"]["ci95"][0] < a["speedup"]["ci95"][1] < 1.04
    assert a["baseline_missed"][0]["dir"] == "baseline-s1430" and a["baseline_missed"][0]["mean_val_loss"] > 3.28


def _redate(folder: Path, day: str) -> None:
    """Rewrite the nvidia-smi date line of every log (the runs' own date) to `day` (e.g. 'Sun Mar 15 … 2026')."""
    for p in folder.rglob("*.txt"):
        p.write_text(re.sub(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \w{3} +\d+ (\d\d:\d\d:\d\d) \d{4}", day,
                            p.read_text(), count=1, flags=re.M))


@needs_fixtures
def test_parent_by_run_dates_not_folder_names(tmp_path):
    """Without a README, the parent is the previous folder by the dates its runs ran: a duplicate folder
    whose name is dated later than its runs does not become the next record's parent; a rejected parent
    is still the parent."""
    src = tmp_path / "tree"
    shutil.copytree(TREE / "2026-01-26-UntieValueEmbeddings", src / "2026-04-01_MisdatedCopy")
    shutil.copytree(TREE / TCB, src / TCB)
    shutil.copytree(TREE / MUDD, src / MUDD)
    by = {a["folder"]: a for a in audit.audit_tree(src, "gpt2-small")["folders"]}
    assert by[MUDD]["parent"] == TCB and by[TCB]["parent"] == "2026-04-01_MisdatedCopy"
    for p in (src / TCB / "this_pr").glob("*.txt"):  # the parent now breaks rule 3
        p.write_text(p.read_text().replace("\nimport torch\n", "\nimport torch\ntorch._inductor.config.max_autotune = True\n", 1))
    by = {a["folder"]: a for a in audit.audit_tree(src, "gpt2-small")["folders"]}
    assert by[TCB]["status"] == "rejected" and by[MUDD]["parent"] == TCB


def test_rule_epochs_from_the_real_history():
    """p < 0.01 from record 14 (2024-12-04), rule 3 after record 21 (2025-02-01), the systems-only waiver
    from 2025-05-25; rule 4 compared logged times on the public board, side by side for this harness."""
    t = load_track("gpt2-small")
    assert rules.at(t, "2024-12-03")["significance"] == "single-run"
    assert rules.at(t, "2024-12-04")["significance"] == "t-test" and rules.at(t, None, 14)["significance"] == "t-test"
    assert rules.at(t, "2025-01-31")["flags"] == "any" and rules.at(t, "2025-02-01", 22)["flags"] == "parent"
    assert rules.at(t, "2025-05-24")["systems_only"] is None and rules.at(t, "2025-05-25")["systems_only"]
    assert rules.at(t, "2025-05-30", 24)["systems_only"]  # a record number bounds only its own epoch
    assert rules.at(t, "2024-11-03")["speed"] == "logged-time" and rules.at(t)["speed"] == "interval"


def _trial(losses: dict[int, float], total: int = 100) -> logs.Trial:
    return logs.Trial(0, val=[logs.Point((s, total, x, 1.0 * s, 1.0, s)) for s, x in sorted(losses.items())],
                      total_steps=total)


def test_systems_only_waiver_pools_per_step_noise():
    """The waiver compares the mean val curve with the reference's within max_val_gap plus z standard errors,
    the per-step noise pooled over every run of both sides: one candidate run against several reference
    runs still has a noise estimate (it had none: a gap of 0.004 failed at 0.003)."""
    cfg = {"max_val_gap": 0.003, "z": 3, "from_frac": 0.25}
    ref = verify.Reference("parent", None, [_trial({50: 3.40 + d, 100: 3.28 + d}) for d in (-0.004, 0.0, 0.004)])
    ok, why = verify.systems_only([_trial({50: 3.404, 100: 3.284})], ref, cfg)
    assert ok, why
    ok, why = verify.systems_only([_trial({50: 3.43, 100: 3.31})], ref, cfg)
    assert not ok and "off" in why


@needs_fixtures
def test_three_outcomes_with_the_readme(capsys):
    """The nine folders with their README rows: rule 3 broken (mode="reduce-overhead") is rejected naming
    it; a p-value two logs cannot show is unverifiable, with the README's loss list as what the folder
    attests; a record with no side-by-side timing is unverifiable; the summary states agreement."""
    assert cli.main(["audit", str(TREE), "--readme", str(README), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    by = {a["folder"]: a for a in rep["folders"]}
    nr = by["2025-05-30_noallreduce"]
    assert nr["status"] == "rejected" and "torch.compile(mode=)" in nr["failed"]["flags"]
    assert [r["rule"].split(":")[0] for r in nr["reasons"] if not r["unknown"]] == ["rule 3"]
    ve = by["2025-12-29_VeSkipGates"]
    assert ve["status"] == "unverifiable" and "p < 0.01" in ve["unknown"]["target"]
    assert "README lists 7 run losses" in ve["attests"][0] and "p = 0.0061" in ve["attests"][0]
    assert by["2025-10-24_NorMuon"]["status"] == "unverifiable" and "speed" in by["2025-10-24_NorMuon"]["unknown"]
    assert by[MUDD]["status"] == "accepted" and by[MUDD]["parent"] == "#80 2026-04-08_PairedHeadMuon"
    ag = rep["agreement"]
    assert (ag["confirmed"], ag["disputed"], ag["by_rule"], ag["not_in_table"]) == (5, 1, {"rule 3": 1}, 0)
    assert cli.main(["audit", str(TREE), "--readme", str(README)]) == 0
    assert "5 records confirmed, 1 disputed (rule 3: 1), 3 unverifiable; 0 folders not in the table" in \
        capsys.readouterr().out


@needs_fixtures
def test_other_tables_and_folders_not_in_the_table(tmp_path):
    """Only the table whose links point into the tree is read (another track's rows are not unresolved);
    a folder no row links is not a record; an llm.c log (no timing, no hardware) is unverifiable."""
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text() + "\n## GPT-2 Medium track\n\n| # | Record time | Description | Date | Log |"
                      " Contributors |\n| - | - | - | - | - | - |\n1 | 30 minutes | x | 01/01/25 | "
                      "[log](records/track_2_medium/2025-01-01_X/a.txt) | @a\n")
    src = tmp_path / "track_1_short"
    shutil.copytree(TREE / TCB, src / TCB)
    (src / "2024-10-13_llmc").mkdir()
    shutil.copy(LOGS / "2024-10-13_llmc__main.log", src / "2024-10-13_llmc" / "main.log")
    rep = audit.audit_tree(src, "gpt2-small", readme=str(readme))
    assert rep["unresolved_links"] == [] or all(u["row"] != 1 for u in rep["unresolved_links"])
    by = {a["folder"]: a for a in rep["folders"]}
    assert by["2024-10-13_llmc"]["in_table"] is False and by[TCB]["in_table"] is True
    assert by["2024-10-13_llmc"]["status"] == "unverifiable"
    assert "llm.c" in by["2024-10-13_llmc"]["unknown"]["timing"]
    assert rep["agreement"]["not_in_table"] == 1


@needs_fixtures
def test_final_loss_at_total_steps_and_final_newline(tmp_path):
    """A run cut off before its last val line is incomplete and leaves the statistics (reported); a file
    whose last line lacks only its newline is complete."""
    d = tmp_path / TCB
    shutil.copytree(TREE / TCB, d)
    runs = sorted((d / "this_pr").glob("*.txt"))
    text = runs[0].read_text()
    runs[0].write_text(text[: text.index("step:1000/")])
    runs[1].write_text(runs[1].read_text().rstrip("\n"))
    a = audit.audit_tree(d, "gpt2-small")["folders"][0]
    assert a["n"] == 5 and "complete" not in a["failed"]
    assert len(a["incomplete"]) == 1 and runs[0].name in a["incomplete"][0]
    p = logs.parse_file(runs[1])
    assert not p.ends_with_newline and not p.cut
    assert verify.verify([p], load_track("gpt2-small")).runs[0].checks[0].ok


@needs_fixtures
def test_reviewers_page_for_one_folder(tmp_path, capsys):
    """One folder with `--parent FOLDER` (a public folder): one row per run, the summary once, the speedup
    over the baseline cohort and over the parent's logged times, the code diff against the parent, rule-3
    flags, environment differences, a val-loss plot with the target line, lines of at most 80 columns;
    `--markdown` writes statistics.md; `speedrun diff` takes public folders too."""
    md = tmp_path / "statistics.md"
    args = ["audit", str(TREE / MUDD), "--parent", str(TREE / "2026-04-08_PairedHeadMuon")]
    assert cli.main(args + ["--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "speedup over the baseline cohort baseline-s1480: 1.034" in out
    assert "speedup over the parent's logged times (2026-04-08_PairedHeadMuon)" in out
    assert "code against 2026-04-08_PairedHeadMuon: train_gpt.py +" in out and "rule-3 flags not in it: none" in out
    assert "environment: driver:" in out and "· = target 3.28" in out and "s1415v6_ba900e13" in out
    assert "| s1415v6_" in md.read_text() and "95% CI" in md.read_text()
    assert cli.main(["diff", str(TREE / "2026-04-08_PairedHeadMuon"), str(TREE / MUDD)]) == 0
    assert "train_gpt.py  changed" in capsys.readouterr().out


@needs_fixtures
def test_run_lists_are_cross_checked(tmp_path):
    """A statistics.md (or README) table of per-run losses and times is read and checked against the logs:
    a run it lists that no log shows is flagged."""
    d = tmp_path / TCB
    shutil.copytree(TREE / TCB, d)
    (d / "README.md").unlink()
    rows = [(r["val_loss"], r["train_time_s"]) for r in audit.audit_tree(d, "gpt2-small")["folders"][0]["runs"]]
    table = "| run | val loss | time (s) |\n|---|---|---|\n" + "".join(f"| {k} | {v:.4f} | {t:.3f} |\n"
                                                                    for k, (v, t) in enumerate(rows))
    (d / "statistics.md").write_text(table)
    assert audit.audit_tree(d, "gpt2-small")["folders"][0]["flags"] == []
    (d / "statistics.md").write_text(table + "| 9 | 3.2700 | 80.000 |\n")
    flags = audit.audit_tree(d, "gpt2-small")["folders"][0]["flags"]
    assert any("80.0" in x and "no log shows" in x for x in flags) and any("3.27" in x for x in flags)


@needs_fixtures
def test_frame_keeps_repeated_strings_as_categoricals():
    """`harness.frame`: every step line, the strings repeated on each row of a log (file, kind, era, code,
    GPUs, torch, date) as categoricals (the whole history fits in ~120 MB), the numbers as the logs say."""
    pytest.importorskip("pandas")
    import harness

    df = harness.frame([TREE / TCB / "this_pr"])
    assert all(str(df[c].dtype) == "category" for c in ("file", "kind", "era", "code_sha256", "gpus", "torch", "date"))
    p = logs.parse_file(sorted((TREE / TCB / "this_pr").glob("*.txt"))[0])
    mine = df[(df.file == p.file) & (df.kind == "val")]
    assert [(int(r.step), r.val_loss, r.train_time_ms) for r in mine.itertuples()] == [
        (v.step, v.loss, v.time_ms) for v in p.trials[0].val]
    assert len(df[df.file == p.file]) == len(p.trials[0].val) + len(p.trials[0].train)


@needs_fixtures
def test_audit_bad_usage_exits_2_naming_the_flag(tmp_path, capsys):
    """--parent and --markdown are for one folder: on a tree they are bad usage (exit 2, naming the flag);
    a path that is not a folder names itself; an empty folder is unreadable (exit 1)."""
    assert cli.main(["audit", str(TREE), "--parent", str(TREE / TCB)]) == 2
    assert "--parent" in capsys.readouterr().err
    assert cli.main(["audit", str(TREE), "--markdown", str(tmp_path / "s.md")]) == 2
    assert "--markdown" in capsys.readouterr().err
    assert cli.main(["audit", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["audit", str(tmp_path / "empty"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["folders"][0]["status"] == "unreadable"


@needs_fixtures
def test_one_folder_with_its_readme_row_takes_the_previous_row_as_parent():
    """One folder audited with the README: its parent is the previous row's folder beside it (its code for
    the diff and rule 3, its logged times for the speedup over the parent)."""
    rep = audit.audit_tree(TREE / MUDD, "gpt2-small", readme=str(README))
    a = rep["folders"][0]
    assert a["number"] == 81 and a["parent"] == "#80 2026-04-08_PairedHeadMuon"
    assert a["parent_speedup"]["kind"] == "logged" and rep["page"]["code"]["against"] == a["parent"]
    assert rep["unresolved_links"] == []


@needs_fixtures
def test_parallel_reading_matches_one_process(monkeypatch):
    """Folders read in worker processes give the same audit as one process."""
    many = audit.audit_tree(TREE, "gpt2-small", readme=str(README))
    monkeypatch.setattr(audit.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(audit.os, "cpu_count", lambda: 1)
    one = audit.audit_tree(TREE, "gpt2-small", readme=str(README))
    strip = lambda rep: [(a["folder"], a["status"], a["submission"], a["mean_val_loss"], a["speedup"]) for a in rep["folders"]]
    assert strip(many) == strip(one)


@needs_fixtures
def test_logged_time_epochs_compare_the_tables_own_times(tmp_path):
    """Where the board compared logged record times, a record without a side-by-side baseline is judged by
    its row's official time against the previous row's (the parent not being in the tree): faster is
    rule 4 kept, slower is rule 4 broken; without the previous row it stays unverifiable."""
    readme = tmp_path / "README.md"
    row = "40 | {} minutes | Prior | 10/20/25 | [log](records/track_1_short/2025-10-20_Prior/x.txt) | @a\n"
    readme.write_text(README.read_text() + row.format("2.400"))
    nm = {a["folder"]: a for a in audit.audit_tree(TREE, "gpt2-small", readme=str(readme))["folders"]}
    assert nm["2025-10-24_NorMuon"]["status"] == "accepted"
    assert "#40's official time" in nm["2025-10-24_NorMuon"]["parent_speedup"]["against"]
    readme.write_text(README.read_text() + row.format("2.300"))
    nm = {a["folder"]: a for a in audit.audit_tree(TREE, "gpt2-small", readme=str(readme))["folders"]}
    assert nm["2025-10-24_NorMuon"]["status"] == "rejected" and "speed" in nm["2025-10-24_NorMuon"]["failed"]
