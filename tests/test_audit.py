"""The community's history judged as the community does: record folders grouped into a submission and
its evidence, rules in force on each record's date, rule 3 (flags relative to the parent), `speedrun
audit` against the public README's table. Real folders come from ../shared/fixtures/modded_records
(copied into tmp trees when a test edits them); the tests skip when that folder is absent."""
import json
import re
import shutil
from pathlib import Path

import pytest

import logmaker
from harness.public import audit, importer, layout
from harness import cli, ledger
from harness.core import rules
from harness.judge import verify
from harness.core.track import load_track
from test_ledger import root  # noqa: F401  (the tmp-project fixture)
import fixtures

RECORDS = fixtures.RECORDS
TREE, README = RECORDS / "track_1_short", RECORDS / "README_excerpt.md"
needs_fixtures = pytest.mark.skipif(not TREE.is_dir(), reason=f"{TREE} absent")
FLAG = "torch._inductor.config.coordinate_descent_tuning = True"

# What a reader of each public folder decides (from the folder, before any README row).
SUBMISSION = {"2024-11-03_UntieEmbed": ("", 1), "2025-10-24_NorMuon": ("", 20),
              "2026-01-24_ImprovedLMHead": ("record", 3), "2026-01-26-UntieValueEmbeddings": ("", 10),
              "2026-02-28_TransposeCopyBackward": ("this_pr", 6)}


@needs_fixtures
def test_the_submission_group_of_each_real_folder():
    """Each fixture folder's submission is the group its layout says: the only group, `record/` beside
    `baseline_retime/` and single-GPU logs, the README's "change" step count in a flat folder of two
    scripts, `this_pr/` beside `baseline/`; the other groups keep roles and reasons."""
    track = load_track("gpt2-small")
    for name, (d, n) in SUBMISSION.items():
        f = layout.read_folder(TREE / name, track)
        assert (f.submission.dir, len(f.submission.paths)) == (d, n), (name, f.how)
        assert f.how and all(g.role and g.why for g in f.groups)
    roles = {g.dir or g.paths[0].name: g.role for g in layout.read_folder(TREE / "2026-01-24_ImprovedLMHead", track).groups}
    assert roles == {"baseline_retime": "baseline", "record": "submission", "single_gpu_baseline.txt": "other-hardware",
                     "single_gpu_improved_with_softcapping.txt": "other-hardware"}
    flat = layout.read_folder(TREE / "2026-01-26-UntieValueEmbeddings", track)
    assert flat.submission.steps == 1575 and flat.by_role("baseline")[0].steps == 1600
    assert layout.folder_date("2026-01-26-UntieValueEmbeddings") == ("2026-01-26", "UntieValueEmbeddings")


@needs_fixtures
def test_audit_of_the_fixture_tree_with_the_readme(capsys):
    """`speedrun audit TREE --readme`: every row's log resolves, the linked log (or directory) picks the
    submission, each record is judged under its date's epoch, the current-record-style folder is accepted
    with its speedup over its baseline runs (interval above 1), README times are set beside the logs', one
    summary line with the README's agreement."""
    assert cli.main(["audit", str(TREE), "--readme", str(README), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    by = {a["folder"]: a for a in rep["folders"]}
    assert rep["summary"] == {"accepted": 5, "rejected": 1, "unverifiable": 3, "unreadable": 0}
    assert rep["unresolved_links"] == []
    assert {k: (a["number"], a["submission"]["dir"]) for k, a in by.items() if k in SUBMISSION} == {
        "2024-11-03_UntieEmbed": (8, ""), "2025-10-24_NorMuon": (41, ""), "2026-01-24_ImprovedLMHead": (67, "record"),
        "2026-01-26-UntieValueEmbeddings": (63, ""), "2026-02-28_TransposeCopyBackward": (76, "this_pr")}
    assert by["2026-04-22_MuddFormer"]["submission"]["dir"] == "this_pr_v3"  # the row links a directory
    assert by["2024-11-03_UntieEmbed"]["epoch"] == "single runs"  # one run was a record in 2024
    cur = by["2026-02-28_TransposeCopyBackward"]
    assert cur["status"] == "accepted" and cur["n"] == 6 and cur["p_value"] < 0.01
    assert cur["mean_train_time_s"] == pytest.approx(87.9355, abs=1e-3)  # the PR's own figure
    sp = cur["speedup"]
    assert sp["baseline"] == "baseline" and 1.0 < sp["ci95"][0] < sp["speedup"] < sp["ci95"][1]
    assert sp["speedup"] == pytest.approx(88.3765 / 87.9355, rel=1e-4)
    assert cur["readme"]["time_s"] == pytest.approx(86.76) and cur["readme"]["difference_s"] == pytest.approx(1.1755, abs=1e-3)
    lm = by["2026-01-24_ImprovedLMHead"]  # 3 runs, p = 0.039: the systems-only exception, from the curves
    assert lm["status"] == "accepted" and lm["p_value"] > 0.01 and lm["p_value_waived"]
    cli.main(["audit", str(TREE), "--readme", str(README)])
    assert "5 accepted, 1 rejected by rule, 3 unverifiable, 0 unreadable" in capsys.readouterr().out


@needs_fixtures
def test_rule_epochs_judge_a_record_by_its_date(tmp_path):
    """The 2024 single-run record is judged under its epoch. The same run dated 2026 (its nvidia-smi
    header: the runs' own date, not the folder name) is judged by the rules of 2026: its single run cannot
    show p < 0.01 (unknown), the clock (steps 1–10 untimed) and rule 3 (no parent: its
    coordinate_descent_tuning is extra) are broken; after its 2024 twin, the p-value is waived (the curves
    match the parent's exactly: a systems-only re-run) and the flag is the parent's, but the clock rule
    still rejects it. The audit names the epoch each time."""
    src = tmp_path / "tree"
    late_dir = src / "2026-06-01_UntieEmbedAgain"
    shutil.copytree(TREE / "2024-11-03_UntieEmbed", late_dir)
    for p in late_dir.glob("*.txt"):
        p.write_text(re.sub(r"^(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d) 2024", r"\1 2026", p.read_text(), count=1, flags=re.M))
    late = audit.audit_tree(src, "gpt2-small")["folders"][0]
    assert late["status"] == "rejected" and late["epoch"] == "side by side" and late["run_date"].startswith("2026")
    assert "cannot show p < 0.01" in late["unknown"]["target"] and "steps 1–10 are untimed" in late["failed"]["timing"]
    assert "coordinate_descent_tuning" in late["failed"]["flags"]
    shutil.copytree(TREE / "2024-11-03_UntieEmbed", src / "2024-11-03_UntieEmbed")
    by = {a["folder"]: a for a in audit.audit_tree(src, "gpt2-small")["folders"]}
    assert by["2024-11-03_UntieEmbed"]["epoch"] == "single runs"
    assert by["2024-11-03_UntieEmbed"]["failed"] == {}
    late = by["2026-06-01_UntieEmbedAgain"]
    assert set(late["failed"]) == {"timing"} and late["p_value_waived"]
    t = load_track("gpt2-small")
    assert [rules.at(t, d)["name"] for d in ("2024-06-06", "2025-01-04", "2025-02-01")] == [
        "single runs", "p < 0.01", "explicit warm-up, no extra flags"]


def _with_flag(text: str) -> str:
    return text.replace("\nimport torch\n", f"\nimport torch\n{FLAG}\n", 1)


@needs_fixtures
def test_rule_3_flags_the_parent_did_not_set(tmp_path):
    """A candidate whose live code adds coordinate_descent_tuning is rejected, relative to its parent (the
    previous record in the tree), with the flag and its line as evidence; the same line in a comment is
    no flag; a parent that set it makes it no longer extra."""
    src = tmp_path / "tree"
    shutil.copytree(TREE / "2026-01-26-UntieValueEmbeddings", src / "2026-01-26-UntieValueEmbeddings")
    cand = src / "2026-02-28_TransposeCopyBackward"
    shutil.copytree(TREE / "2026-02-28_TransposeCopyBackward", cand)
    for p in (cand / "this_pr").glob("*.txt"):
        p.write_text(_with_flag(p.read_text()))
    a = {x["folder"]: x for x in audit.audit_tree(src, "gpt2-small")["folders"]}[cand.name]
    assert a["status"] == "rejected" and a["parent"] == "2026-01-26-UntieValueEmbeddings"
    assert set(a["failed"]) == {"flags"}
    assert "torch._inductor.config.coordinate_descent_tuning (train_gpt.py: line" in a["failed"]["flags"]
    for p in (cand / "this_pr").glob("*.txt"):
        p.write_text(p.read_text().replace(FLAG, "# " + FLAG))
    a = {x["folder"]: x for x in audit.audit_tree(src, "gpt2-small")["folders"]}[cand.name]
    assert a["status"] == "accepted"


def test_verify_enforces_rule_3(tmp_path, capsys):
    """`speedrun verify`: a flag in live code fails the `flags` check with no parent record (every flag is
    extra) and against a parent that did not set it; against a parent that set it, it passes."""
    src = logmaker.SOURCE + FLAG + "\n"
    paths = []
    for seed in range(3):
        p = tmp_path / f"r{seed}.txt"
        p.write_text(logmaker.ours(seed=seed, source=src, track="gpt2-small", preset="gpt2-small",
                                   gpus=(8, "H100 80GB HBM3"), world_size=8, final=3.27))
        paths.append(str(p))
    v = verify.verify_files(paths, "gpt2-small")
    flags = next(c for c in v.runs[0].checks if c.name == "flags")
    assert not flags.ok and "coordinate_descent_tuning" in flags.detail and "there is none" in flags.detail
    assert cli.main(["verify", *paths, "--track", "gpt2-small"]) == 1
    capsys.readouterr()
    parent = tmp_path / "parent.txt"
    parent.write_text(logmaker.ours(seed=9, track="gpt2-small", preset="gpt2-small", gpus=(8, "H100 80GB HBM3"),
                                    world_size=8, final=3.27))
    assert cli.main(["verify", *paths, "--track", "gpt2-small", "--parent", str(parent)]) == 1
    capsys.readouterr()
    parent.write_text(logmaker.ours(seed=9, source=src, track="gpt2-small", preset="gpt2-small",
                                    gpus=(8, "H100 80GB HBM3"), world_size=8, final=3.27))
    assert cli.main(["verify", *paths, "--track", "gpt2-small", "--parent", str(parent)]) == 0
    assert rules.flags("x = 1\n# " + FLAG + "\n") == {}
    assert set(rules.flags("import torch._inductor.config as cfg\ncfg.max_autotune = True\n"
                           "m = torch.compile(m, mode='max-autotune', dynamic=False)\n")) == {
        "torch._inductor.config.max_autotune", "torch.compile(mode=)"}


@needs_fixtures
def test_audit_reports_readme_rows_that_do_not_resolve(tmp_path):
    """A README row whose log link points at nothing in the tree is listed with its line; the rest is judged."""
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text() + "99 | 1.0 minutes | [Ghost](x) | 12/01/26 | "
                      "[log](records/track_1_short/2026-12-01_Ghost/nope.txt) | @nobody\n")
    rep = audit.audit_tree(TREE, "gpt2-small", readme=str(readme))
    assert [u["row"] for u in rep["unresolved_links"]] == [99] and rep["summary"]["accepted"] == 5


@needs_fixtures
def test_import_keeps_evidence_beside_the_submission(root, tmp_path):
    """`speedrun import` of the fixture folders: one record each, `runs` are the submission's only, the
    other groups are stored under evidence/ with their own verdicts, the baseline gives the speedup, the
    hyphen-dated folder is not skipped, launch is the public convention; `ledger check` passes."""
    shutil.copytree(Path(__file__).resolve().parents[1] / "records/gpt2-small", root / "records/gpt2-small")
    plan = importer.import_tree(str(TREE), "gpt2-small", root=root)
    assert sum(i.action == "imported" for i in plan.items) == 9
    recs = {r.source["import"]: r for r in ledger.records(root)}
    cur = recs["2026-02-28_TransposeCopyBackward"]
    assert cur.official and len(cur.runs) == 6 and all(f.startswith("logs/") for f in (r["file"] for r in cur.runs))
    assert [e["role"] for e in cur.evidence] == ["baseline"] and len(cur.evidence[0]["files"]) == 6
    assert all(f.startswith("evidence/baseline/") and f in cur.files for f in cur.evidence[0]["files"])
    assert 1 < cur.speedup["ci95"][0] < cur.speedup["speedup"] and cur.launch["convention"] == "modded"
    lm = recs["2026-01-24_ImprovedLMHead"]
    assert len(lm.runs) == 3 and sorted(e["role"] for e in lm.evidence) == ["baseline", "other-hardware", "other-hardware"]
    assert "2026-01-26-UntieValueEmbeddings" in recs and ledger.check(root).ok
    readme = (root / "records" / cur.id / "README.md").read_text()
    assert "Other runs kept as evidence" in readme and "Speedup over evidence/baseline" in readme
