"""`speedrun attempt`: N seeded runs of a script on a track, optionally interleaved A/B with a recorded
baseline, every run kept in a manifest whatever became of it; then verification and a verdict.

    speedrun attempt --track tiny-cpu --runs 3 --nproc 2 --max-steps 6   # a smoke attempt on a laptop
    speedrun attempt --track gpt2-small --runs 4                          # 8×H100: the track's nproc
    speedrun attempt --track tiny-cpu --runs 4 --baseline tiny-cpu/0001   # A B A B …: speedup with a CI
    speedrun attempt --track tiny-cpu --runs 3 --record "what changed" --contributors me

Several nodes: every node runs the same command, and torchrun joins a c10d rendezvous instead of
`--standalone`. Under SLURM, one task per node:

    srun --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 bash -c 'speedrun attempt \\
        --track gpt2-medium --nproc 8 --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" \\
        --rdzv-endpoint "$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1):29500" \\
        --rdzv-id "$SLURM_JOB_ID"'

Only global rank 0 writes a run's log, so the node that holds it has the logs and the verdict.

Everything lands in logs/attempts/<attempt id>/:
    attempt.json          the manifest: every run started, finished or not; rewritten atomically
                          (temp file + rename) when a run starts and when it ends
    <run id>.txt          each run's log, as the trainer writes it
    console/<run id>.txt  all the run printed: every rank, and torchrun's own failure report
    ranks/<run id>/       torchrun --tee: each rank's stdout and stderr in files of their own
    baseline/             the baseline record's snapshot (script + kernels), checked against its record.json
    attempt.node<r>.json, console/node<r>/, ranks/node<r>/, baseline.node<r>/
                          what node r > 0 of a multi-node attempt writes (node_paths): nodes may share the folder

A run's outcome is one of
    ok           exit 0 and a RESULT line
    diverged     the trainer printed its `diverged:` line (exit 3)
    failed       any other end; when a rank dies, the message names the rank torchrun saw fail first
                 and its last lines are shown
    timeout      it ran past --timeout seconds: its whole process tree is killed, the attempt goes on
    interrupted  Ctrl-C or SIGTERM: its process tree is stopped and the attempt ends (exit 130)

A record takes every candidate run of its attempt, so none can be dropped quietly: when any candidate
run did not finish, recording is refused (nothing written) unless --unofficial; then every candidate
log with a run in it is stored (the unfinished ones fail verification's `complete` check) and the
record's README names the runs that left no log. The ledger's verification decides `official`; a
speedup over the baseline is reported in the verdict, not enforced by the ledger.
`speedrun record add --attempt DIR` records from a manifest by the same rule, after checking every
log's sha256 against it.
"""
from __future__ import annotations

import datetime as _dt
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from harness.runs import launch as launcher
from harness.core.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, InputError
from harness.core.files import finite, sha256_file
from harness.core.track import load_track, nproc as track_nproc, repo_root
from harness.runs.manifest import (MANIFEST, OUTCOMES, SCHEMA, Manifest, load_manifest, new_attempt_id, node_paths,
                                    now, same_code, snapshot_baseline)
from harness.runs.runner import run_guarded

@dataclass
class Options:
    track: str
    runs: int | None = None
    seeds: list[int] | None = None
    script: str | None = None
    nproc: int | None = None
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    baseline: str | None = None
    max_steps: int | None = None
    timeout: float | None = None
    data_dir: str | None = None
    kill_rank_at_step: tuple[int, int] | None = None  # tests, no flag: (step, rank): SIGKILL that rank of the
    # first candidate run once its step lines reach step (a crash from outside; the manifest's "fault" says so)
    record_title: str | None = None   # --record TITLE: store every candidate run as a record with this title
    contributors: tuple = ()
    unofficial: bool = False          # --unofficial: with a title, record even unfinished or failing runs, marked unofficial
    as_json: bool = False
    no_baseline: bool = False         # no baseline arm even where the track has a record: never a record


def run_attempt(o: Options, console=None) -> tuple[int, dict]:
    """Run every planned run, judge, record if asked: (exit code, the manifest). Live progress and each
    run's row go to `console` (rich; stderr under --json); `render` shows the manifest afterwards."""
    from rich.console import Console

    from harness import ledger

    console = console or Console(stderr=o.as_json)
    track = load_track(o.track)
    script = Path(o.script).resolve() if o.script else repo_root() / "train_gpt.py"
    if not script.is_file():
        raise InputError(f"--script {script}: no such file")
    seeds = list(o.seeds) if o.seeds else list(range(o.runs if o.runs is not None else 3))
    if not seeds or (o.runs is not None and o.seeds and len(o.seeds) != o.runs):
        raise InputError(f"--runs {o.runs} and --seeds {','.join(map(str, o.seeds or []))}: give one, or agree")
    if o.timeout is not None and o.timeout <= 0:
        raise InputError(f"--timeout {o.timeout}: expected seconds > 0")
    nproc = o.nproc or track_nproc(track)
    if o.baseline and o.no_baseline:
        raise InputError("--baseline and --no-baseline: give one")
    recs = ledger.records()
    rec = ledger.find(recs, o.baseline, "--baseline") if o.baseline else \
        None if o.no_baseline else ledger.default_parent(recs, track["name"])
    if rec is not None and rec.track != track["name"]:
        raise InputError(f"--baseline {rec.id} is a {rec.track} record; this attempt is on {track['name']}")
    repro = rec.id if rec is not None and same_code(rec, script) else None
    data_dir = launcher.shards_dir(track, o.data_dir)

    if o.nnodes > 1 and not o.rdzv_id:
        raise InputError(f"--nnodes {o.nnodes} needs --rdzv-id: every node derives the attempt and run ids from it "
                         "(under SLURM: --rdzv-id \"$SLURM_JOB_ID\")")
    aid = new_attempt_id(track["name"], o.rdzv_id if o.nnodes > 1 else None)
    adir = repo_root() / "logs" / "attempts" / aid
    mine = node_paths(o.nnodes, o.node_rank)
    try:  # several nodes share the folder; each refuses only a manifest of its own already there
        adir.mkdir(parents=True, exist_ok=o.nnodes > 1)
        if o.nnodes > 1 and (adir / mine["manifest"]).exists():
            raise FileExistsError
    except FileExistsError:
        raise InputError(f"{adir / mine['manifest'] if o.nnodes > 1 else adir}: exists; a multi-node attempt needs "
                         "a --rdzv-id of its own") from None
    base = None
    if rec is not None and not repro:  # a reproduction runs no baseline arm: the code is the record's
        base = {"record": rec.id, "script": str(snapshot_baseline(rec, adir / mine["baseline"])),
                "launch": rec.launch or {"convention": "speedrun"}}
        base["script_sha256"] = sha256_file(Path(base["script"]))
        if launcher.convention_of(base["launch"]) == "modded":
            launcher.modded_workdir(Path(base["script"]), data_dir, base["launch"])
    plan = [(role, s) for s in seeds for role in (("baseline", "candidate") if base else ("candidate",))]
    manifest = Manifest(adir, {
        "schema": SCHEMA, "id": aid, "dir": str(adir), "track": track["name"], "track_version": track["version"],
        "status": "running", "started": now(), "finished": None, "command": ["speedrun", *sys.argv[1:]],
        "script": str(script), "script_sha256": sha256_file(script), "baseline": base, "reproduction_of": repro,
        "seeds": seeds, "nproc": nproc, "nnodes": o.nnodes, "max_steps": o.max_steps, "compiled": not o.max_steps,
        "timeout_s": o.timeout,
        "data_dir": str(data_dir), "runs": [], "verdict": None, "looks": [], "recorded": None,
        **({"node_rank": o.node_rank} if o.nnodes > 1 else {})}, mine["manifest"])
    against = (f", A/B against {base['record']}" if base else f", a reproduction of {repro} (its code, byte for byte: "
               "no baseline arm)" if repro else ", no baseline (--no-baseline: never a record)" if o.no_baseline
               else ", no baseline (the track has no record yet)")
    console.print(f"[bold]attempt {aid}[/]: {track['name']} v{track['version']}, {len(plan)} run(s) × {nproc} "
                  f"process(es){f' × {o.nnodes} nodes' if o.nnodes > 1 else ''}{against} → {adir}", highlight=False)
    if o.max_steps:
        console.print(f"smoke attempt: --max-steps {o.max_steps}, each run uncompiled (--no-compile: the compile "
                      "would take longer than the steps it times); never a record", highlight=False)
    if not manifest.save():
        raise InputError(manifest.error)
    if o.no_baseline:
        manifest.data["no_baseline"] = True
    interrupted = run_guarded(o, track, plan, script, base, data_dir, nproc, manifest, console)
    return _finish(o, track, manifest, interrupted, console)


def extend_attempt(folder: str | Path, o: Options, console=None) -> tuple[int, dict]:
    """`speedrun attempt --extend DIR`: more A/B pairs for the same attempt (same candidate, same baseline
    snapshot, new seeds), judged again. Every look at the interval is kept in the manifest's `looks`, and a
    record's README says after how many looks its verdict was reached: peeking until the interval clears
    1 raises the rate of false records, so the count is disclosed, not hidden."""
    from rich.console import Console

    console = console or Console(stderr=o.as_json)
    adir = Path(folder).resolve()
    m = load_manifest(adir)
    if m.get("status") != "done":
        raise InputError(f"--extend {folder}: the attempt is {m.get('status')}; only a finished attempt is extended")
    if (m.get("nnodes") or 1) > 1:
        raise InputError(f"--extend {folder}: a multi-node attempt is extended by starting every node again; "
                         "start a new attempt")
    base = m.get("baseline")
    if not base:
        raise InputError(f"--extend {folder}: it has no baseline arm (a reproduction or --no-baseline): there is no "
                         "speedup to narrow")
    script = Path(m["script"])
    for path, want, what in ((script, m["script_sha256"], "the candidate script"),
                             (Path(base["script"]), base["script_sha256"], "the baseline snapshot")):
        if not path.is_file() or sha256_file(path) != want:
            raise InputError(f"--extend {folder}: {what} {path} changed since the attempt ran (or is gone): an "
                             "extension runs the same code; start a new attempt")
    track = load_track(m["track"])
    if (m.get("recorded") or {}).get("recorded"):
        raise InputError(f"--extend {folder}: it was recorded; its manifest's sha256 is in the ledger, so it stays as "
                         "it is: start a new attempt")
    n = o.runs or ((m.get("verdict") or {}).get("speedup") or {}).get("more_pairs_needed") or 2
    first = max(m["seeds"]) + 1
    seeds = list(range(first, first + min(int(n), 20)))
    o = replace(o, track=m["track"], max_steps=m.get("max_steps"), nproc=m["nproc"], no_baseline=False)
    plan = [(role, s) for s in seeds for role in ("baseline", "candidate")]
    m.update(status="running", seeds=m["seeds"] + seeds)
    m.setdefault("extensions", []).append({"at": now(), "seeds": seeds,
                                           "command": ["speedrun", *sys.argv[1:]]})
    manifest = Manifest(adir, m)
    if not manifest.save():
        raise InputError(manifest.error)
    console.print(f"[bold]attempt {m['id']}[/]: extended by {len(seeds)} A/B pair(s) (seeds {seeds[0]}–{seeds[-1]}); "
                  f"look {len(m.get('looks') or []) + 1} at the interval", highlight=False)
    interrupted = run_guarded(o, track, plan, script, base, Path(m["data_dir"]), m["nproc"], manifest, console,
                               start=len(m["runs"]))
    return _finish(o, track, manifest, interrupted, console)


def _finish(o: Options, track: dict, manifest: Manifest, interrupted: bool, console) -> tuple[int, dict]:
    """Judge (one more look, kept), record if asked, save: (exit code, the manifest)."""
    m, adir = manifest.data, manifest.folder
    m["status"], m["finished"] = ("interrupted" if interrupted else "done"), now()
    verdict = m["verdict"] = judge(m, track, o.max_steps)
    sp = verdict.get("speedup") or {}
    m.setdefault("looks", []).append({"at": m["finished"], "runs": len(m["runs"]), "pairs": sp.get("pairs"),
                                      "speedup": sp.get("speedup"), "ci95": sp.get("ci95"),
                                      "outcome": verdict["outcome"]})
    ok = verdict["record"] or (verdict["reproduction_of"] and verdict["outcome"] == "accepted")
    code = EXIT_OK if ok else EXIT_FAIL
    if interrupted:
        code = EXIT_INTERRUPTED
        if o.record_title:
            m["recorded"] = {"recorded": False, "reason": "the attempt was interrupted: nothing recorded"}
    elif o.record_title and not verdict["record"] and not o.unofficial:
        what = f"a reproduction of {verdict['reproduction_of']}" if verdict["reproduction_of"] else "not a record"
        m["recorded"] = {"recorded": False, "reason": f"{what} (see the verdict): nothing recorded "
                                                      "(--unofficial records the runs, marked unofficial)"}
        code = EXIT_FAIL
    elif o.record_title:
        if not manifest.save():  # the record reads the manifest as it stands
            raise InputError(manifest.error)
        try:
            m["recorded"] = record_attempt(adir, o.record_title, contributors=o.contributors, unofficial=o.unofficial)
        except InputError as e:  # e.g. a baseline that is not a record cannot be a parent
            m["recorded"] = {"recorded": False, "reason": str(e)}
        if not m["recorded"]["recorded"]:
            code = EXIT_FAIL
    if not manifest.save():
        console.print(f"[red]{manifest.error}[/]", highlight=False)
    return code, finite(m)


REASONS = ("no-candidate", "unfinished", "never-started", "attempt-status", "logs-elsewhere", "unverifiable",
           "no-log-here", "smoke", "no-pairs", "no-baseline")


def _reason(check: str, detail: str, unknown: bool = False) -> dict:
    from harness import judge as judging

    return judging.reason(check, detail, unknown)


def _problems(m: dict, max_steps: int | None) -> list[dict]:
    """What the attempt itself lacks, before its logs are read: unfinished, missing or elsewhere runs, no
    baseline arm, a smoke run."""
    cands = [r for r in m["runs"] if r["role"] == "candidate"]
    reasons = []
    unfinished = [r for r in cands if r["outcome"] != "ok"]
    if not cands:
        reasons.append(_reason("no-candidate", "no candidate run"))
    if unfinished:
        reasons.append(_reason("unfinished", f"{len(unfinished)} of {len(cands)} candidate run(s) did not finish ("
                               + ", ".join(f"seed {r['seed']} {r['outcome']}" for r in unfinished) + ")"))
    planned = len(m.get("seeds") or [])
    if len(cands) < planned:
        reasons.append(_reason("never-started", f"{planned - len(cands)} of {planned} planned candidate run(s) "
                                                "never started"))
    if m.get("status") not in ("done", "running"):  # "running": judged at the end of this very attempt
        reasons.append(_reason("attempt-status", f"the attempt is {m.get('status')}: not every planned run ran "
                                                 "to its end"))
    missing = [r for r in cands if r["outcome"] == "ok" and not r["log"]]
    if missing and len(missing) < len(cands):
        reasons.append(_reason("logs-elsewhere", f"{len(missing)} finished candidate run(s) left their log on "
                                                 "another node: verify every run's log together", unknown=True))
    if cands and not unfinished and not any(r["log"] for r in cands):
        reasons.append(_reason("no-log-here", "no candidate log on this node (rank 0 ran on another)", unknown=True))
    if m.get("no_baseline"):
        reasons.append(_reason("no-baseline", "run with --no-baseline: no side-by-side timing, never a record",
                               unknown=True))
    if max_steps:
        reasons.append(_reason("smoke", f"a smoke attempt (--max-steps {max_steps}): the runs stop before the "
                                        "track's last step"))
    return reasons


def judge(m: dict, track: dict, max_steps: int | None = None) -> dict:
    """Record or not, and why, from `harness.judge.decide`: the attempt's own problems (unfinished or
    missing runs, a smoke run), verification of the candidate logs, and rule 4 (the paired speedup over
    the baseline record). A reproduction (the candidate's code is the baseline record's) is judged on its
    runs alone and compared with the record's own time (a node calibration). The verdict dict keeps the
    keys scripts read (`record`, `reasons`, `summary`, `verify`, `speedup`) beside the judge's own."""
    from harness import judge as judging
    from harness.core import rules as rulebook
    from harness.judge import verify

    adir = Path(m["dir"])
    cands = [r for r in m["runs"] if r["role"] == "candidate"]
    reasons = _problems(m, max_steps)
    logs = [str(adir / r["log"]) for r in cands if r["outcome"] == "ok" and r["log"]]
    repro = m.get("reproduction_of")
    against = repro or (m.get("baseline") or {}).get("record")
    v = None
    if logs:
        try:
            from harness import ledger

            parent = ledger.record_reference(track["name"], against)  # None: the latest record, if any
            v = verify.verify_files(logs, track["name"], script=m["script"], parent=parent)
        except InputError as e:
            reasons.append(_reason("unverifiable", f"the candidate logs could not be verified: {e}", unknown=True))
    speed = None
    if m.get("baseline") and not repro:
        speed = _speed(m)
        if speed is None:
            reasons.append(_reason("no-pairs", f"no seed with both runs finished: no speedup over "
                                               f"{m['baseline']['record']}", unknown=True))
    rules = rulebook.at(track)
    d = judging.decide(v, rules, speed=speed, parent=against, reproduction_of=repro, problems=reasons)
    out = {"record": d.record, "outcome": d.outcome, "label": d.label, "reproduction_of": repro,
           "reasons": d.reasons, "notes": d.notes, "summary": v.summary if v else None,
           "verify": v.to_json() if v else None, "speedup": _speed_json(m, speed) if speed else None,
           "looks": len(m.get("looks") or []) + 1}
    if repro:
        out["calibration"] = calibration(repro, m)
    return finite(out)


def _speed(m: dict):
    """Rule 4's evidence: the paired speedup over the baseline record, from runs paired by seed (or by order
    for a public script that picks its own seed)."""
    from harness import judge as judging

    return judging.Speed.from_pairs_by_seed(m["baseline"]["record"], m["runs"], looks=len(m.get("looks") or []) + 1)


def _speed_json(m: dict, speed) -> dict:
    from harness.core import stats

    out = speed.to_json()
    a = [r["train_time_ms"] for r in m["runs"] if r["role"] == "baseline" and r["outcome"] == "ok"]
    b = [r["train_time_ms"] for r in m["runs"] if r["role"] == "candidate" and r["outcome"] == "ok"]
    if len(a) >= 2 and len(b) >= 2:  # every finished run, paired or not
        out["time_difference_ms_ci95"] = list(stats.welch_interval(a, b))
    return out


def calibration(record_id: str, m: dict) -> dict | None:
    """This node against the node a record was timed on, from a reproduction of its code: the record's
    runs' mean train time over this attempt's (> 1: this node ran it faster)."""
    from statistics import fmean

    from harness import ledger

    try:
        rec = ledger.find(ledger.records(), record_id, "reproduction")
    except InputError:
        return None
    theirs = [r for r in rec.runs if r.get("train_time_ms")]
    ours = [r for r in m["runs"] if r["role"] == "candidate" and r["outcome"] == "ok" and r.get("train_time_ms")]
    if not theirs or not ours:
        return None
    steps = [{r.get("steps") for r in runs} for runs in (theirs, ours)]
    # Runs of other lengths (a smoke attempt's --max-steps) are not the record's time: compare ms a step, and say so.
    per_step = all(len(s) == 1 and None not in s for s in steps) and steps[0] != steps[1]
    ms = [[r["train_time_ms"] / (r["steps"] if per_step else 1) for r in runs] for runs in (theirs, ours)]
    out = {"record": rec.id, "record_ms": fmean(ms[0]), "this_node_ms": fmean(ms[1]),
           "factor": fmean(ms[0]) / fmean(ms[1]), "runs": [len(theirs), len(ours)]}
    if per_step:
        out["per_step"] = {"record_steps": steps[0].pop(), "steps": steps[1].pop()}
    return out


def record_attempt(folder: str | Path, title: str, *, contributors=(), unofficial: bool = False,
                   parent: str | None = None, date: str | None = None, readme: str | None = None) -> dict:
    """Record every candidate run of an attempt: {"recorded": bool, "reason" | "record", "ledger_line",
    "notes"}. Refused, with nothing written, when a candidate run did not finish (unless `unofficial`)
    or the ledger's verification fails (unless `unofficial`). A log whose sha256 differs from the
    manifest's, or a manifest that is not one, is bad input (InputError)."""
    from harness import ledger
    from harness.judge import logs as logmod, submission

    folder = Path(folder).resolve()
    m = load_manifest(folder)
    cands = [r for r in m["runs"] if r.get("role") == "candidate"]
    if not cands:
        raise InputError(f"{folder / MANIFEST}: no candidate runs to record")
    unfinished = [r for r in cands if r.get("outcome") != "ok"]
    if m.get("status") != "done" and not unofficial:
        return {"recorded": False, "reason": f"the attempt is {m.get('status')}, not done: nothing recorded "
                                             "(--unofficial records what it has)"}
    if len(cands) < len(m.get("seeds") or []) and not unofficial:
        return {"recorded": False, "reason": f"{len(m['seeds']) - len(cands)} planned candidate run(s) never "
                                             "started: a record takes every run of its attempt; nothing recorded"}
    if unfinished and not unofficial:
        return {"recorded": False, "reason": f"{len(unfinished)} of {len(cands)} candidate run(s) did not finish ("
                + ", ".join(f"{r['run_id']}: {r['outcome']}" for r in unfinished)
                + "): a record takes every run of its attempt; nothing recorded (--unofficial records them all, "
                  "marked unofficial)"}
    paths, without = [], []
    for r in cands:
        p = folder / r["log"] if r.get("log") else None
        if p is None or not p.is_file():
            without.append(r)
            continue
        if sha256_file(p) != r.get("log_sha256"):
            raise InputError(f"{p}: sha256 differs from {folder / MANIFEST}'s: the log changed after the attempt")
        if not logmod.parse_file(str(p)).trials:
            without.append(r)
            continue
        paths.append(str(p))
    if not paths:
        return {"recorded": False, "reason": "no candidate log has a run in it: nothing to record"}
    if without and not unofficial:
        return {"recorded": False, "reason": f"{len(without)} candidate run(s) left no log with a run in it here ("
                + ", ".join(r["run_id"] for r in without) + "): a record takes every run; nothing recorded"}
    # anything short of every planned run, finished and logged, can only be unofficial
    incomplete = bool(unfinished or without or m.get("status") != "done" or len(cands) < len(m.get("seeds") or []))
    from harness.ledger import leaderboard
    parent = parent or (m.get("baseline") or {}).get("record") or m.get("reproduction_of")
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    base_logs = [str(folder / r["log"]) for r in m["runs"] if r.get("role") == "baseline" and r.get("outcome") == "ok"
                 and r.get("log") and (folder / r["log"]).is_file()]
    evidence = [{"role": "baseline", "dir": "baseline", "paths": base_logs,
                 "why": f"the interleaved A/B runs of {m['baseline']['record']}'s snapshot in this attempt"}] \
        if base_logs else []
    rec, ref = ledger.parent_for(m["track"], parent)
    prepared = submission.prepare(paths, m["track"], date=date, parent_id=rec.id if rec else None, parent_ref=ref,
                                  evidence=evidence)
    speed = _speed(m) if m.get("baseline") else None
    if speed is not None and speed.against != prepared.parent:
        speed = prepared.speed = None  # timed against another record than its parent: no rule-4 evidence
    if speed is not None:  # paired by seed in this attempt: better than the unpaired estimate
        prepared.speedup = {**_speed_json(m, speed), "paired": True, "looks": max(1, len(m.get("looks") or []))}
    # the attempt's own problems (a smoke run, …) count as at the attempt's end; the logs are judged again
    problems = [r for r in _problems(m, m.get("max_steps"))  # the logs are judged by `prepare`, once
                if r["check"] not in ("unfinished", "never-started", "attempt-status")]
    if m.get("baseline") and speed is None and prepared.parent == m["baseline"]["record"]:
        problems.append(_reason("no-pairs", f"no seed with both runs finished: no speedup over {prepared.parent}",
                                unknown=True))
    decision = submission.decide(prepared, speed=speed, problems=problems)
    notes = prepared.notes
    notes.append(f"from attempt {m['id']}: {len(cands)} candidate run(s), "
                 + ", ".join(f"{n} {o}" for o in OUTCOMES if (n := sum(r['outcome'] == o for r in cands))))
    for r in without:
        notes.append(f"run {r['run_id']} (seed {r['seed']}, {r['outcome']}) left no log with a run in it: {r['message']}")
    source = {"attempt": m["id"], "manifest_sha256": sha256_file(folder / MANIFEST), "candidate_runs": len(cands),
              "unfinished": [r["run_id"] for r in unfinished]}
    try:
        added = ledger.add(prepared, decision, title, contributors=list(contributors), date=date,
                           unofficial=unofficial, unofficial_reason="its attempt lost runs" if incomplete else None,
                           readme=readme, source=source, launch={"convention": "speedrun"})
    except submission.Refused as e:
        return {"recorded": False, "reason": str(e), "verdict": finite(e.verdict.to_json()),
                "decision": e.decision.to_json() if e.decision else None}
    leaderboard.write()
    return {"recorded": True, "record": added.record.to_json(), "ledger_line": added.line, "notes": added.notes}


def render(m: dict, console) -> None:
    """The attempt for people: a row per run, the candidate summary, the speedup, the verdict and why."""
    from rich.table import Table

    track = load_track(m["track"])
    t = Table(title=f"attempt {m['id']}: {m['track']}", title_justify="left")
    for col in ("#", "role", "seed", "outcome", "val loss", "train time", "step avg", "log / message"):
        t.add_column(col, overflow="fold")
    for e in m["runs"]:
        color = {"ok": "green", "interrupted": "yellow"}.get(e["outcome"], "red")
        ok = e["outcome"] == "ok"
        t.add_row(str(e["index"] + 1), e["role"], str(e["seed"]), f"[{color}]{e['outcome']}[/]",
                  "-" if e["val_loss"] is None else f"{e['val_loss']:.4f}",
                  "-" if e["train_time_ms"] is None else f"{e['train_time_ms'] / 1000:.2f} s",
                  "-" if e["step_avg_ms"] is None else f"{e['step_avg_ms']:.0f} ms",
                  (e["log"] or "-") if ok else e["message"])
    console.print(t)
    v = m["verdict"] or {}
    s = v.get("summary")
    if s and s.get("mean_val_loss") is not None:
        p = "-" if s.get("p_value") is None else f"{s['p_value']:.3g}"
        tt = "-" if s.get("mean_train_time_ms") is None else f"{s['mean_train_time_ms'] / 1000:.3f} s"
        console.print(f"candidate: {s['n']} distinct run(s), mean val_loss {s['mean_val_loss']:.4f} "
                      f"(target {track['target']}, p = {p}), mean train time {tt}", highlight=False)
    sp = v.get("speedup")
    if sp:
        ci = sp["ci95"]
        ci_text = "" if ci[0] is None else f", 95% CI {ci[0]:.3f}–{ci[1]:.3f}"
        looks = len(m.get("looks") or [])
        console.print(f"vs {sp['baseline']}: speedup [bold]{sp['speedup']:.3f}×[/] over {sp['pairs']} A/B pair(s){ci_text} "
                      f"(baseline {sp['baseline_mean_ms'] / 1000:.2f} s, candidate {sp['candidate_mean_ms'] / 1000:.2f} s)"
                      + (f"; look {looks} at this interval" if looks > 1 else ""), highlight=False)
    cal = v.get("calibration")
    if cal:
        f, ps = cal["factor"], cal.get("per_step")
        unit = (lambda ms: f"{ms:.1f} ms a step") if ps else (lambda ms: f"{ms / 1000:.2f} s")
        console.print(f"node calibration: this node ran {cal['record']}'s code in {unit(cal['this_node_ms'])}, "
                      f"the record's node in {unit(cal['record_ms'])}: this node is "
                      f"{f:.3f}× {'faster' if f >= 1 else 'slower'} ({1 / f:.3f}× the record's time)"
                      + (f" — per step only: {ps['steps']}-step runs against the record's {ps['record_steps']}, "
                         "not like for like" if ps else ""), highlight=False)
    if m["status"] == "interrupted":
        console.print("[bold yellow]INTERRUPTED[/]: the attempt stopped; finished runs' logs are kept, the "
                      "manifest marks the interrupted run, nothing was recorded", highlight=False)
    label = v.get("label") or ("RECORD" if v.get("record") else "NOT A RECORD")
    good = v.get("record") or (v.get("reproduction_of") and v.get("outcome") == "accepted")
    if v.get("record"):
        console.print("[bold green]RECORD[/]: every candidate run finished and passed verification"
                      + (", and it is faster than the baseline side by side" if sp else
                         " (the first record of its track: nothing to beat)"), highlight=False)
    elif good:
        console.print(f"[bold green]{label}[/]: its runs meet the target; the same code as the record, so a "
                      "reproduction (a node calibration), not a record", highlight=False)
    else:
        console.print(f"[bold red]{label}[/]" + (" (unverifiable)" if v.get("outcome") == "unverifiable" else "") + ":",
                      highlight=False)
        for reason in v.get("reasons", []):
            console.print(f"  - {reason['detail']}", highlight=False, markup=False)
    rec = m.get("recorded")
    if rec:
        if rec["recorded"]:
            r = rec["record"]
            kind = "[green]official[/]" if r["official"] else "[yellow]unofficial[/]"
            console.print(f"recorded [bold]{r['id']}[/] ({kind}); ledger seq {rec['ledger_line']['seq']}", highlight=False)
        else:
            console.print(f"[red]not recorded[/]: {rec['reason']}", highlight=False, markup=False)
    console.print(f"manifest: {Path(m['dir']) / MANIFEST}", highlight=False)
