"""`attempt.judge` on hand-built manifests: every reason an attempt is not a record, with no trainer run.

Manifests here carry no logs unless a test writes them, so verification is exercised only where the
reason depends on it (a synthetic log that misses the target)."""
import math
from pathlib import Path

import pytest

from harness.runs import attempt
from harness.runs.manifest import SCHEMA as MANIFEST_SCHEMA
from harness.public import submit
from harness.judge import verify
from harness.core.track import load_track

TRACK = load_track("tiny-cpu")


def run(seed, role="candidate", outcome="ok", ms=100_000.0, log=None):
    return {"seed": seed, "role": role, "outcome": outcome, "train_time_ms": ms, "log": log}


def manifest(tmp_path, runs, seeds=None, status="done", baseline=None):
    m = {"dir": str(tmp_path), "script": "train_gpt.py", "status": status, "runs": runs,
         "seeds": seeds if seeds is not None else sorted({r["seed"] for r in runs if r["role"] == "candidate"})}
    if baseline:
        m["baseline"] = {"record": baseline}
    return m


def reasons(m, **kw):
    """The verdict's reasons, by check name (every name one `attempt.REASONS` or a verify check knows)."""
    out = attempt.judge(m, TRACK, **kw)
    assert out["record"] == (not out["reasons"])
    assert all(r["check"] in attempt.REASONS + verify.CHECKS + ("speed",) for r in out["reasons"])
    return {r["check"]: r["detail"] for r in out["reasons"]}


def test_no_candidate(tmp_path):
    assert "no-candidate" in reasons(manifest(tmp_path, [], seeds=[]))


def test_unfinished_runs_are_named_with_their_outcome(tmp_path):
    rs = reasons(manifest(tmp_path, [run(0, outcome="nan"), run(1, outcome="timeout"), run(2, log=None)]))
    unfinished = rs["unfinished"]
    assert unfinished.startswith("2 of 3") and "seed 0 nan" in unfinished and "seed 1 timeout" in unfinished


def test_planned_runs_that_never_started(tmp_path):
    rs = reasons(manifest(tmp_path, [run(0, outcome="crashed")], seeds=[0, 1, 2], status="interrupted"))
    assert rs["never-started"].startswith("2 of 3 planned")
    assert "interrupted" in rs["attempt-status"]


def test_finished_runs_without_logs_anywhere(tmp_path):
    rs = reasons(manifest(tmp_path, [run(0), run(1)]))
    assert "no-log-here" in rs


def test_smoke_attempt_is_never_a_record(tmp_path):
    rs = reasons(manifest(tmp_path, [run(0)]), max_steps=6)
    assert "--max-steps 6" in rs["smoke"]


def test_speedup_from_seed_pairs(tmp_path):
    runs = []
    for seed, (a, b) in enumerate([(300.0, 100.0), (330.0, 110.0), (270.0, 90.0), (310.0, 101.0)]):
        runs += [run(seed, "baseline", ms=a * 1000), run(seed, ms=b * 1000)]
    out = attempt.judge(manifest(tmp_path, runs, baseline="tiny-cpu/0001"), TRACK)
    s = out["speedup"]
    assert s["pairs"] == 4 and s["baseline"] == "tiny-cpu/0001"
    expected = math.exp(sum(math.log(a / b) for a, b in [(300, 100), (330, 110), (270, 90), (310, 101)]) / 4)
    assert s["speedup"] == pytest.approx(expected)
    assert 1 < s["ci95"][0] < s["speedup"] < s["ci95"][1]
    lo, hi = s["time_difference_ms_ci95"]
    assert lo < (100_250 - 302_500) < hi < 0  # candidate minus baseline mean, ms
    assert not {"no-pairs", "speed"} & {r["check"] for r in out["reasons"]}


def test_slower_and_inconclusive_speedups_are_reasons(tmp_path):
    """Rule 4: slower is a broken rule; an interval that includes 1, or one pair, is not shown (unverifiable),
    and says how many more pairs the spread needs."""
    slower = [run(0, "baseline", ms=100.0), run(0, ms=120.0), run(1, "baseline", ms=100.0), run(1, ms=125.0)]
    out = attempt.judge(manifest(tmp_path, slower, baseline="t/0001"), TRACK)
    speed = next(r for r in out["reasons"] if r["check"] == "speed")
    assert "slower than t/0001" in speed["detail"] and not speed["unknown"] and "rule 4" in speed["rule"]
    noisy = [run(0, "baseline", ms=100.0), run(0, ms=80.0), run(1, "baseline", ms=100.0), run(1, ms=95.0)]
    speed = next(r for r in attempt.judge(manifest(tmp_path, noisy, baseline="t/0001"), TRACK)["reasons"]
                 if r["check"] == "speed")
    assert "includes 1" in speed["detail"] and speed["unknown"] and "more pair(s)" in speed["detail"]
    one = [run(0, "baseline", ms=100.0), run(0, ms=50.0)]
    assert "one run a side" in reasons(manifest(tmp_path, one, baseline="t/0001"))["speed"]


def test_more_pairs_needed_clears_the_interval(tmp_path):
    """The pairs the verdict asks for are enough: with that many pairs of the same spread the interval
    clears 1 (and one fewer does not)."""
    from harness import judge as judging

    ratios = [1.3, 0.95, 1.25, 1.0]
    pairs = [(100.0 * r, 100.0) for r in ratios]
    s = judging.Speed.paired("t/0001", pairs)
    assert s.lo <= 1 < s.estimate
    more = s.more_needed()
    assert more and more > 0
    import math
    from statistics import fmean, stdev
    m, sd = fmean(math.log(r) for r in ratios), stdev(math.log(r) for r in ratios)
    n = len(ratios) + more
    from harness.core import stats
    assert m - stats.t_ppf(0.975, n - 1) * sd / math.sqrt(n) > 0
    assert m - stats.t_ppf(0.975, n - 2) * sd / math.sqrt(n - 1) <= 0


def test_first_record_of_a_track_needs_no_speed(tmp_path):
    """With no prior record there is nothing to beat: rule 4 adds no reason."""
    out = attempt.judge(manifest(tmp_path, [run(0), run(1)]), TRACK)
    assert "speed" not in {r["check"] for r in out["reasons"]}


def test_baseline_without_pairs(tmp_path):
    runs = [run(0, "baseline", outcome="killed", ms=None), run(0, ms=50.0)]
    assert "no-pairs" in reasons(manifest(tmp_path, runs, baseline="t/0001"))


def first_record(tmp_path, monkeypatch):
    """A tmp project (SPEEDRUN_ROOT) whose tiny-cpu track holds one official record."""
    from test_ledger import make_logs

    root = tmp_path / "proj"
    (root / "records/tiny-cpu").mkdir(parents=True)
    (root / "records/tiny-cpu/track.toml").write_text(
        (attempt.repo_root() / "records/tiny-cpu/track.toml").read_text())
    monkeypatch.setenv("SPEEDRUN_ROOT", str(root))
    return root, submit.add(make_logs(tmp_path / "rec"), "tiny-cpu", "first", root=root).record


def test_a_reproduction_that_meets_the_target_is_reproduced_not_a_record(tmp_path, monkeypatch):
    """Runs of a record's own code that meet the target: outcome accepted, label REPRODUCED <record>, never
    a record, no rule-4 reason, and a node calibration against the record's own time."""
    from test_ledger import make_logs

    root, rec = first_record(tmp_path, monkeypatch)
    adir = tmp_path / "attempt"
    logs = make_logs(adir, start=10, step_ms=50.0)
    import json
    runs = [run(k, log=Path(p).name, ms=json.loads(Path(p).read_text().rsplit("RESULT ", 1)[1])["train_time_ms"])
            for k, p in enumerate(logs)]
    m = manifest(adir, runs)
    m["reproduction_of"] = rec.id
    import logmaker
    (adir / "train_gpt.py").write_text(logmaker.SOURCE)
    m["script"] = str(adir / "train_gpt.py")
    out = attempt.judge(m, TRACK)
    assert out["outcome"] == "accepted", out["reasons"]
    assert out["record"] is False and out["label"] == f"REPRODUCED {rec.id}"
    assert "speed" not in {r["check"] for r in out["reasons"]}
    theirs = sum(r["train_time_ms"] for r in rec.runs) / len(rec.runs)
    assert out["calibration"]["factor"] == pytest.approx(theirs / out["summary"]["mean_train_time_ms"], rel=1e-3)
    assert out["calibration"]["factor"] < 0.5  # these runs took 5x the record's time: a slower node


def test_a_shorter_reproduction_calibrates_per_step_and_says_so(tmp_path, monkeypatch):
    """Runs of the record's code that stopped early (a smoke attempt) are not the record's time: the node
    calibration compares milliseconds a step, and names both step counts."""
    root, rec = first_record(tmp_path, monkeypatch)
    (rec_steps,) = {r["steps"] for r in rec.runs}
    per_step = sum(r["train_time_ms"] / r["steps"] for r in rec.runs) / len(rec.runs)
    m = manifest(tmp_path, [dict(run(k, ms=6 * per_step / 2), steps=6) for k in range(2)])
    cal = attempt.calibration(rec.id, m)
    assert cal["per_step"] == {"record_steps": rec_steps, "steps": 6} and rec_steps != 6
    assert cal["factor"] == pytest.approx(2.0)  # half the record's time a step, whatever the run's length
    same = manifest(tmp_path, [dict(run(k, ms=r["train_time_ms"]), steps=rec_steps) for k, r in enumerate(rec.runs)])
    assert "per_step" not in attempt.calibration(rec.id, same)


def _attempt_folder(tmp_path, root, rec_id, cand_ms, base_ms):
    """A finished attempt on disk: candidate logs of changed code and baseline logs, paired by seed."""
    import json

    import logmaker
    from harness.core.files import sha256_file

    adir = tmp_path / "attempt"
    adir.mkdir()
    changed = logmaker.SOURCE.replace('"step"', '"a new step"')
    (adir / "train_gpt.py").write_text(changed)
    runs = []
    for k, (b, c) in enumerate(zip(base_ms, cand_ms)):
        for role, ms, src in (("baseline", b, logmaker.SOURCE), ("candidate", c, changed)):
            name = f"{role[0]}{k}.txt"
            (adir / name).write_text(logmaker.ours(seed=20 + k + (50 if role == "baseline" else 0), step_ms=ms,
                                                   source=src, run_id=name[:-4]))
            t = float(json.loads((adir / name).read_text().rsplit("RESULT ", 1)[1])["train_time_ms"])
            runs.append({"index": len(runs), "role": role, "seed": k, "run_id": name[:-4], "outcome": "ok",
                         "log": name, "log_sha256": sha256_file(adir / name), "train_time_ms": t, "message": ""})
    m = {"schema": MANIFEST_SCHEMA, "id": "a1", "dir": str(adir), "track": "tiny-cpu", "status": "done",
         "script": str(adir / "train_gpt.py"), "seeds": list(range(len(cand_ms))), "runs": runs,
         "baseline": {"record": rec_id}, "looks": [], "max_steps": None}
    (adir / "attempt.json").write_text(json.dumps(m))
    return adir


@pytest.mark.parametrize("cand_ms,official", [((100.0, 104.0, 98.0), False), ((50.0, 52.0, 49.0), True)])
def test_record_add_attempt_honours_rule_4(tmp_path, monkeypatch, cand_ms, official):
    """`record add --attempt`: an attempt whose A/B shows no speedup is refused (nothing written); one
    faster side by side becomes an official record whose README shows the interval and the looks."""
    root, rec = first_record(tmp_path, monkeypatch)
    adir = _attempt_folder(tmp_path, root, rec.id, cand_ms, (100.0, 103.0, 99.0))
    before = (root / "records/ledger.jsonl").read_bytes()
    out = attempt.record_attempt(adir, "faster?")
    assert out["recorded"] is official, out.get("reason")
    if not official:
        assert "rule 4" in out["reason"] and (root / "records/ledger.jsonl").read_bytes() == before
    else:
        r = out["record"]
        assert r["official"] and r["speedup"]["paired"] and r["speedup"]["ci95"][0] > 1 and r["parent"] == rec.id
        readme = (root / "records" / r["id"] / "README.md").read_text()
        assert "3 interleaved A/B pairs" in readme and "after 1 look" in readme


def test_no_baseline_is_never_a_record(tmp_path):
    """An attempt run with --no-baseline has no side-by-side timing: never a record, whatever its runs."""
    m = manifest(tmp_path, [run(0), run(1)])
    m["no_baseline"] = True
    out = attempt.judge(m, TRACK)
    assert out["record"] is False and "no-baseline" in {r["check"] for r in out["reasons"]}
