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
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from harness import launch as launcher, proc
from harness.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, InputError
from harness.files import atomic_write, finite, number, sha256_bytes, sha256_file
from harness.track import data_dir, load_track, nproc as track_nproc, repo_root

SCHEMA = 1
MANIFEST = "attempt.json"
OUTCOMES = ("ok", "failed", "diverged", "timeout", "interrupted")


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
    fault: str | None = None          # SPEEDRUN_FAULT for the first candidate run only (tests)
    record: str | None = None         # title
    contributors: tuple = ()
    allow_failing: bool = False       # with record: record unfinished or failing runs, marked unofficial
    as_json: bool = False


# ---- the manifest --------------------------------------------------------------------------------------

class Manifest:
    """attempt.json: written whole to a temp file, fsynced, renamed over the old one. A write that fails
    (a full disk) leaves the previous version in place and is retried at the next save."""

    def __init__(self, folder: Path, data: dict, name: str = MANIFEST):
        self.folder, self.data = folder, data
        self.path = folder / name
        self.error: str | None = None

    def save(self) -> bool:
        try:
            atomic_write(self.path, json.dumps(finite(self.data), indent=2, allow_nan=False) + "\n")
        except OSError as e:
            self.error = f"{self.path}: not written ({e.strerror or e}); the previous version stands"
            return False
        self.error = None
        return True


def load_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no attempt manifest here; `speedrun attempt` writes one per attempt "
                         f"under logs/attempts/") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("runs"), list):
        raise InputError(f"{path}: not an attempt manifest (schema {SCHEMA}, with runs)")
    return data


def node_paths(nnodes: int, node_rank: int | None) -> dict[str, str]:
    """What one node writes in the attempt folder, relative to it. Nodes of one attempt share the folder (a
    cluster's shared filesystem: one checkout): node 0 keeps the plain names (attempt.json is the attempt's
    manifest, beside the log its rank 0 writes), node r > 0 writes attempt.node<r>.json and its own
    console/, ranks/ and baseline/ subfolders, so no two nodes ever write one file."""
    tag = f"node{node_rank}" if nnodes > 1 and node_rank else ""
    return {"manifest": f"attempt.{tag}.json" if tag else MANIFEST, "console": f"console/{tag}" if tag else "console",
            "ranks": f"ranks/{tag}" if tag else "ranks", "baseline": f"baseline.{tag}" if tag else "baseline"}


def new_attempt_id(track: str, shared: str | None = None) -> str:
    """A fresh id; or, for a multi-node attempt, one every node derives alike from the rendezvous id it
    was given (so every node writes the same attempt folder name and passes the same run ids)."""
    if shared:
        return f"{track}-{re.sub(r'[^A-Za-z0-9._-]+', '_', shared)[:60]}"
    now = _dt.datetime.now(_dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{track}-{uuid.uuid4().hex[:6]}"


# ---- the baseline: a record's own snapshot ---------------------------------------------------------------

def snapshot_baseline(rec, dest: Path) -> Path:
    """Copy the record's script and kernels (every stored file but logs/, README.md and record.json), each
    checked against record.json's sha256, to dest; the script to run is its train_gpt.py (or its one .py)."""
    from harness import ledger

    src = repo_root() / "records" / rec.folder
    files = [p for p in rec.files if not p.startswith(("logs/", "evidence/")) and p not in ledger.RESERVED]
    for rel in files:
        data = (src / rel).read_bytes() if (src / rel).is_file() else None
        if data is None or sha256_bytes(data) != rec.files[rel]:
            raise InputError(f"{src / rel}: missing or edited since it was recorded; run `speedrun ledger check`")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    scripts = ["train_gpt.py"] if "train_gpt.py" in files else [p for p in files if "/" not in p and p.endswith(".py")]
    if len(scripts) != 1:
        raise InputError(f"record {rec.id} stores {len(scripts) or 'no'} top-level scripts ({', '.join(scripts)}): "
                         f"nothing to run as its baseline")
    return dest / scripts[0]


# ---- one run ---------------------------------------------------------------------------------------------

def root_cause(tail) -> dict:
    """From torchrun's failure report: the rank it saw fail first, its exit code and its traceback line."""
    lines = list(tail)
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("Root Cause"))
    except ValueError:
        return {}
    out = {}
    for line in lines[start:]:
        key, sep, value = line.strip().partition(":")
        key, value = key.strip(), value.strip()
        if sep and key == "rank" and "rank" not in out:
            out["rank"], out["local_rank"] = int(value.split()[0]), int(value.rsplit(":", 1)[-1].strip(" )"))
        elif sep and key == "exitcode" and "exitcode" not in out:
            out["exitcode"] = int(value.split()[0])
        elif sep and key == "traceback" and "traceback" not in out:
            out["traceback"] = value
    return out


def _last_error(lines) -> str | None:
    """The last line of a Python traceback (`SomeError: …`) in lines, or None."""
    for line in reversed(list(lines)):
        s = line.strip()
        head = s.split(":", 1)[0]
        if head and " " not in head and (head.endswith(("Error", "Exception", "Exit", "Interrupt"))):
            return s
    return None


def classify(done: proc.Finished, watch: launcher.Watch, *, timeout, multinode: bool) -> tuple[str, str, int | None]:
    """(outcome, message, rank to show) for a finished stream."""
    at = f"at step {watch.step}/{watch.total}" if watch.total else "before its first step"
    if done.interrupted:
        return "interrupted", f"interrupted (Ctrl-C or SIGTERM) {at}; its process tree was stopped", None
    if done.timed_out:
        return "timeout", f"ran past --timeout {timeout:g} s {at}; its process tree was killed", None
    if watch.diverged:
        return "diverged", watch.diverged, None
    if done.code == 0 and watch.result and number(watch.result.get("val_loss")) is None:
        return "diverged", f"final val_loss is {watch.result.get('val_loss')} {at}", None
    if done.code == 0 and watch.result:
        r = watch.result
        return "ok", f"val_loss {r.get('val_loss')} after {r.get('steps')} steps in {r.get('train_time_ms', 0) / 1000:.2f} s", None
    if done.code == 0:
        if multinode:
            return "ok", "finished; rank 0 (and its log) is on another node", None
        return "failed", "exit 0 without a RESULT line", None
    cause = root_cause(done.tail)
    if cause:
        rank = cause.get("local_rank")
        said = _last_error(done.ranks.get(rank, ()))
        why = cause.get("traceback", "")
        if said and (not why or why.startswith("To enable traceback")):
            why = said
        return "failed", (f"rank {cause.get('rank')} failed first (exitcode {cause.get('exitcode')}): {why}".rstrip(": ")
                          + f"; torchrun exit {done.code}"), rank
    said = _last_error(done.tail)
    return "failed", f"exit {done.code}" + (f": {said}" if said else ""), None


# ---- the attempt -----------------------------------------------------------------------------------------

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
    rec = ledger.find(ledger.records(), o.baseline, "--baseline") if o.baseline else None
    if rec is not None and rec.track != track["name"]:
        raise InputError(f"--baseline {rec.id} is a {rec.track} record; this attempt is on {track['name']}")
    data_dir, _ = launcher.prepare_data(track, o.data_dir)

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
    if rec is not None:
        base = {"record": rec.id, "script": str(snapshot_baseline(rec, adir / mine["baseline"])),
                "launch": rec.launch or {"convention": "speedrun"}}
        base["script_sha256"] = sha256_file(Path(base["script"]))
        if launcher.convention_of(base["launch"]) == "modded":
            launcher.modded_workdir(Path(base["script"]), data_dir, base["launch"])
    plan = [(role, s) for s in seeds for role in (("baseline", "candidate") if base else ("candidate",))]
    manifest = Manifest(adir, {
        "schema": SCHEMA, "id": aid, "dir": str(adir), "track": track["name"], "track_version": track["version"],
        "status": "running", "started": _now(), "finished": None, "command": ["speedrun", *sys.argv[1:]],
        "script": str(script), "script_sha256": sha256_file(script), "baseline": base,
        "seeds": seeds, "nproc": nproc, "nnodes": o.nnodes, "max_steps": o.max_steps, "timeout_s": o.timeout,
        "data_dir": str(data_dir), "runs": [], "verdict": None, "recorded": None,
        **({"node_rank": o.node_rank} if o.nnodes > 1 else {})}, mine["manifest"])
    console.print(f"[bold]attempt {aid}[/]: {track['name']} v{track['version']}, {len(plan)} run(s) × {nproc} "
                  f"process(es){f' × {o.nnodes} nodes' if o.nnodes > 1 else ''}"
                  + (f", A/B against {base['record']}" if base else "") + f" → {adir}", highlight=False)
    if not manifest.save():
        raise InputError(manifest.error)

    old_term = proc.sigterm_as_interrupt()  # SIGTERM stops the attempt like Ctrl-C
    interrupted = False
    try:
        interrupted = _run_all(o, track, plan, script, base, data_dir, nproc, manifest, console)
    finally:
        signal.signal(signal.SIGTERM, old_term)

    m = manifest.data
    m["status"], m["finished"] = ("interrupted" if interrupted else "done"), _now()
    verdict = m["verdict"] = judge(m, track, o.max_steps)
    code = EXIT_OK if verdict["record"] else EXIT_FAIL
    if interrupted:
        code = EXIT_INTERRUPTED
        if o.record:
            m["recorded"] = {"recorded": False, "reason": "the attempt was interrupted: nothing recorded"}
    elif o.record and not verdict["record"] and not o.allow_failing:
        m["recorded"] = {"recorded": False, "reason": "not a record (see the verdict): nothing recorded "
                                                      "(--unofficial records the runs, marked unofficial)"}
        code = EXIT_FAIL
    elif o.record:
        if not manifest.save():  # the record reads the manifest as it stands
            raise InputError(manifest.error)
        m["recorded"] = record_attempt(adir, o.record, contributors=o.contributors, allow_failing=o.allow_failing)
        if not m["recorded"]["recorded"]:
            code = EXIT_FAIL
    if not manifest.save():
        console.print(f"[red]{manifest.error}[/]", highlight=False)
    return code, finite(m)


def _endpoint(endpoint: str | None, k: int, node_rank: int | None) -> str | None:
    """Run k's rendezvous address: under the static rendezvous (--node-rank) each run gets a port of its
    own, so a run's master port is never one the previous run's processes may still hold."""
    if endpoint is None or node_rank is None:
        return endpoint
    host, _, port = endpoint.rpartition(":")
    return f"{host}:{int(port) + k}" if port.isdigit() else endpoint


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _run_all(o, track, plan, script, base, data_dir, nproc, manifest, console) -> bool:
    """Every planned run, in order; True when Ctrl-C/SIGTERM ended the attempt."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    runs = manifest.data["runs"]
    adir = manifest.folder
    multinode = o.nnodes > 1
    with Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        overall = progress.add_task(f"[bold]{track['name']}[/]", total=len(plan), info="")
        try:
            for k, (role, seed) in enumerate(plan):
                tag = "b" if role == "baseline" else "c"
                run_id = f"{track['name']}-{tag}{k}-s{seed}-{hashlib.sha256(manifest.data['id'].encode()).hexdigest()[:6]}"
                launch = launcher.Launch(nproc=nproc, nnodes=o.nnodes, node_rank=o.node_rank,
                                         rdzv_endpoint=_endpoint(o.rdzv_endpoint, k, o.node_rank),
                                         rdzv_id=f"{o.rdzv_id or 'speedrun'}-{k}")
                paths = node_paths(o.nnodes, o.node_rank)
                if launch.torchrun:  # each rank's output in files, and tagged on the console
                    launch = replace(launch, rank_logs=adir / paths["ranks"] / run_id)
                run_script = Path(base["script"]) if role == "baseline" else script
                conv = launcher.convention_of(base["launch"]) if role == "baseline" else "speedrun"
                cmd = launcher.trainer_command(track, seed=seed, data_dir=data_dir, run_id=run_id, log_dir=adir,
                                               max_steps=o.max_steps, script=run_script, launch=launch, convention=conv)
                public_logs = run_script.parent / base["launch"].get("logs", "logs") if conv == "modded" else None
                before = {p.name for p in public_logs.glob("*.txt")} if public_logs and public_logs.is_dir() else set()
                fault = o.fault if (o.fault and role == "candidate" and not any(r["role"] == "candidate" for r in runs)) else None
                env = launcher.trainer_env(track, **({"SPEEDRUN_FAULT": fault} if fault else {}))
                entry = {"index": k, "role": role, "seed": seed, "run_id": run_id, "outcome": "running",
                         "exit_code": None, "log": f"{run_id}.txt", "log_sha256": None,
                         "console": f"{paths['console']}/{run_id}.txt", "message": "", "started": _now(), "wall_s": None,
                         "command": cmd,
                         "val_loss": None, "train_time_ms": None, "steps": None, "step_avg_ms": None}
                if fault:
                    entry["fault"] = fault
                runs.append(entry)
                manifest.save()

                watch = launcher.Watch(o.max_steps)
                task = progress.add_task(f"  {role} s{seed}", total=None, info="starting")
                progress.update(overall, info=f"run {k + 1}/{len(plan)}")

                def on_line(line, rank, watch=watch, task=task):
                    if watch.feed(line) in ("step", "val"):
                        progress.update(task, completed=watch.step, total=watch.total, info=_live(watch))

                done = proc.stream(cmd, env, on_line, cwd=run_script.parent, timeout=o.timeout,
                                     ranked=launch.torchrun, transcript=adir / entry["console"])
                if conv == "modded":  # its log, under the attempt's name; its facts, from the log (no RESULT line)
                    written = launcher.modded_log(run_script.parent, before, base["launch"])
                    if written is not None:
                        os.replace(written, adir / entry["log"])
                        watch.result = launcher.result_from_log(adir / entry["log"]) if done.code == 0 else {}
                    entry["seeded"] = False  # a public script picks its own seed: pairs are by order, not seed
                outcome, message, show_rank = classify(done, watch, timeout=o.timeout, multinode=multinode)
                r = watch.result if outcome == "ok" else {}  # a run that did not finish has no result
                log = adir / entry["log"]
                entry.update(outcome=outcome, exit_code=done.code, message=message, wall_s=round(done.wall_s, 2),
                             log_sha256=sha256_file(log, missing_ok=True), val_loss=r.get("val_loss"),
                             train_time_ms=r.get("train_time_ms"), steps=r.get("steps", watch.step or None),
                             step_avg_ms=r.get("step_avg_ms"))
                if not log.is_file():
                    entry["log"] = None
                if outcome != "ok":
                    entry["tail"] = _failing_lines(done, show_rank, outcome)
                manifest.save()
                progress.remove_task(task)
                progress.advance(overall)
                _print_row(progress.console, entry, len(plan))
                if outcome not in ("ok", "interrupted"):
                    for line in entry["tail"]:
                        progress.console.print(f"      {line}", style="dim", markup=False, highlight=False)
                if manifest.error:
                    progress.console.print(f"[red]{manifest.error}[/]", highlight=False)
                if outcome == "interrupted":
                    return True
        except KeyboardInterrupt:  # between runs, or while the manifest was written
            for e in runs:
                if e["outcome"] == "running":
                    e.update(outcome="interrupted", message="interrupted (Ctrl-C or SIGTERM)")
            manifest.save()
            return True
    return False


def _live(w: launcher.Watch) -> str:
    parts = []
    if w.val_loss is not None:
        parts.append(f"val {w.val_loss:.4f}")
    if w.step_avg_ms is not None:
        parts.append(f"{w.step_avg_ms:.0f} ms/step")
    if w.eta_s is not None:
        parts.append(f"ETA {w.eta_s:.0f} s")
    return "  ".join(parts)


def _failing_lines(done: proc.Finished, rank: int | None, outcome: str) -> list[str]:
    """What to show of a run that did not finish: the failing rank's own last lines, then the end of
    everything (torchrun's report included)."""
    out = []
    if outcome == "diverged":  # the trainer said what happened (the message repeats it): its last lines
        return list(done.ranks.get(0) or done.ranks.get(None) or done.tail)[-4:]
    if rank is not None:
        mine = list(done.ranks.get(rank, ()))[-12:]
        out += [f"rank {rank}'s last lines:"] + ([f"  {x}" for x in mine] or ["  (it printed nothing)"])
        rest = [x for x in done.tail if not x.startswith(f"[rank {rank}] ")]
        block = next((i for i, x in enumerate(rest) if x.startswith("Root Cause")), None)
        out += rest[block:] if block is not None else rest[-12:]
    else:
        out += list(done.tail)[-20:]
    return out


def _print_row(console, e: dict, n: int) -> None:
    from rich.markup import escape

    mark = {"ok": "[green]✓[/]", "interrupted": "[yellow]■[/]"}.get(e["outcome"], "[red]✗[/]")
    head = f"{mark} {e['index'] + 1}/{n} {e['role']:<9} s{e['seed']:<3} {e['outcome']:<11}"
    if e["outcome"] == "ok" and e["val_loss"] is not None:
        console.print(f"{head} val_loss {e['val_loss']:.4f}  train {e['train_time_ms'] / 1000:7.2f} s  "
                      f"{e['step_avg_ms']:.0f} ms/step  {e['log']}", highlight=False)
    else:
        console.print(f"{head} {escape(e['message'])}", highlight=False)


# ---- the verdict -----------------------------------------------------------------------------------------

# Why an attempt is not a record: each reason is {"check": one of these, "detail": what happened}.
# verify's own check names (target, timing, hardware, code, …) are used for failures it found.
REASONS = ("no-candidate", "unfinished", "never-started", "attempt-status", "logs-elsewhere", "unverifiable",
           "no-log-here", "smoke", "no-pairs", "slower", "one-pair", "not-faster")


def _reason(check: str, detail: str) -> dict:
    return {"check": check, "detail": detail}


def judge(m: dict, track: dict, max_steps: int | None = None) -> dict:
    """Record or not, and why: unfinished candidate runs, verification of the candidate logs (target at
    the track's α, completeness, timing, hardware, code), a smoke run, the speedup over the baseline.
    `reasons` is a list of {"check", "detail"}; an empty list is a record."""
    from harness import stats, verify

    adir = Path(m["dir"])
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
                                                 "another node: verify every run's log together"))
    logs = [str(adir / r["log"]) for r in cands if r["outcome"] == "ok" and r["log"]]
    v = None
    if logs:
        try:
            from harness import ledger

            parent = ledger.parent_reference(track["name"], (m.get("baseline") or {}).get("record"))
            v = verify.verify_files(logs, track["name"], script=m["script"], parent=parent)
        except InputError as e:
            reasons.append(_reason("unverifiable", f"the candidate logs could not be verified: {e}"))
    elif cands and not unfinished:
        reasons.append(_reason("no-log-here", "no candidate log on this node (rank 0 ran on another)"))
    if v is not None and not v.ok:
        s, sig = v.summary, track["significance"]
        failed = [c for r in v.runs for c in r.checks if not c.ok]
        if any(c.name == "target" for c in failed):
            if s["n"] >= 2 and s["mean_val_loss"] is not None:
                p = "-" if s["p_value"] is None else f"{s['p_value']:.3g}"
                reasons.append(_reason("target", f"target not met: mean val_loss {s['mean_val_loss']:.4f} over "
                                                 f"{s['n']} run(s) vs {track['target']} (one-sided p = {p}, needs < "
                                                 f"{sig.get('alpha', 0.01)})"))
            else:
                reasons.append(_reason("target", f"target not met: {s['n']} finished run(s); the t-test needs at "
                                                 "least 2"))
        for name in dict.fromkeys(c.name for c in failed if c.name != "target"):
            reasons.append(_reason(name, next(c.detail for c in failed if c.name == name)))
    if max_steps:
        reasons.append(_reason("smoke", f"a smoke attempt (--max-steps {max_steps}): the runs stop before the "
                                        "track's last step"))
    speed = None
    if m.get("baseline"):
        speed, why = _speedup(m, stats)
        if why:
            reasons.append(why)
    return finite({"record": not reasons, "reasons": reasons, "summary": v.summary if v else None,
                   "verify": v.to_json() if v else None, "speedup": speed})


def _speedup(m: dict, stats) -> tuple[dict | None, dict | None]:
    """The paired A/B speedup over the baseline record, and the reason it falls short (or None)."""
    by_seed = {}
    for r in m["runs"]:
        if r["outcome"] == "ok" and r["train_time_ms"]:
            by_seed.setdefault(r["seed"], {})[r["role"]] = r["train_time_ms"]
    pairs = [(t["baseline"], t["candidate"]) for t in by_seed.values() if len(t) == 2]
    rid = m["baseline"]["record"]
    if not pairs:
        return None, _reason("no-pairs", f"no seed with both runs finished: no speedup over {rid}")
    s = stats.speedup(pairs)
    speed = {"baseline": rid, "pairs": len(pairs), "speedup": s.estimate, "ci95": [s.lo, s.hi],
             "baseline_mean_ms": sum(a for a, _ in pairs) / len(pairs),
             "candidate_mean_ms": sum(b for _, b in pairs) / len(pairs)}
    a = [r["train_time_ms"] for r in m["runs"] if r["role"] == "baseline" and r["outcome"] == "ok"]
    b = [r["train_time_ms"] for r in m["runs"] if r["role"] == "candidate" and r["outcome"] == "ok"]
    if len(a) >= 2 and len(b) >= 2:
        speed["time_difference_ms_ci95"] = list(stats.welch_interval(a, b))
    ci = "" if s.lo is None else f" (95% CI {s.lo:.3f}–{s.hi:.3f})"
    if s.estimate <= 1:
        return speed, _reason("slower", f"slower than baseline {rid}: speedup {s.estimate:.3f}×{ci}")
    if s.lo is None:
        return speed, _reason("one-pair", f"one A/B pair: no confidence interval on the speedup over {rid}; "
                                          "run more seeds")
    if s.lo <= 1:
        return speed, _reason("not-faster", f"not faster than baseline {rid} at 95%: speedup {s.estimate:.3f}×{ci} "
                                            "includes 1")
    return speed, None


# ---- recording -------------------------------------------------------------------------------------------

def record_attempt(folder: str | Path, title: str, *, contributors=(), allow_failing: bool = False,
                   parent: str | None = None, date: str | None = None, readme: str | None = None) -> dict:
    """Record every candidate run of an attempt: {"recorded": bool, "reason" | "record", "ledger_line",
    "notes"}. Refused, with nothing written, when a candidate run did not finish (unless `allow_failing`)
    or the ledger's verification fails (unless `allow_failing`). A log whose sha256 differs from the
    manifest's, or a manifest that is not one, is bad input (InputError)."""
    from harness import ledger, logs as logmod

    folder = Path(folder).resolve()
    m = load_manifest(folder)
    cands = [r for r in m["runs"] if r.get("role") == "candidate"]
    if not cands:
        raise InputError(f"{folder / MANIFEST}: no candidate runs to record")
    unfinished = [r for r in cands if r.get("outcome") != "ok"]
    if m.get("status") != "done" and not allow_failing:
        return {"recorded": False, "reason": f"the attempt is {m.get('status')}, not done: nothing recorded "
                                             "(--unofficial records what it has)"}
    if len(cands) < len(m.get("seeds") or []) and not allow_failing:
        return {"recorded": False, "reason": f"{len(m['seeds']) - len(cands)} planned candidate run(s) never "
                                             "started: a record takes every run of its attempt; nothing recorded"}
    if unfinished and not allow_failing:
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
    if without and not allow_failing:
        return {"recorded": False, "reason": f"{len(without)} candidate run(s) left no log with a run in it here ("
                + ", ".join(r["run_id"] for r in without) + "): a record takes every run; nothing recorded"}
    # anything short of every planned run, finished and logged, can only be unofficial
    incomplete = bool(unfinished or without or m.get("status") != "done" or len(cands) < len(m.get("seeds") or []))
    from harness import leaderboard
    parent = parent or (m.get("baseline") or {}).get("record")
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    base_logs = [str(folder / r["log"]) for r in m["runs"] if r.get("role") == "baseline" and r.get("outcome") == "ok"
                 and r.get("log") and (folder / r["log"]).is_file()]
    evidence = [{"role": "baseline", "dir": "baseline", "paths": base_logs,
                 "why": f"the interleaved A/B runs of {m['baseline']['record']}'s snapshot in this attempt"}] \
        if base_logs else []
    prepared = ledger.prepare(paths, m["track"], date=date, parent=parent, evidence=evidence)
    if (m.get("verdict") or {}).get("speedup"):  # paired by seed in this attempt: better than the unpaired estimate
        prepared.speedup = {**m["verdict"]["speedup"], "paired": True}
    notes = prepared.notes
    notes.append(f"from attempt {m['id']}: {len(cands)} candidate run(s), "
                 + ", ".join(f"{n} {o}" for o in OUTCOMES if (n := sum(r['outcome'] == o for r in cands))))
    for r in without:
        notes.append(f"run {r['run_id']} (seed {r['seed']}, {r['outcome']}) left no log with a run in it: {r['message']}")
    source = {"attempt": m["id"], "manifest_sha256": sha256_file(folder / MANIFEST), "candidate_runs": len(cands),
              "unfinished": [r["run_id"] for r in unfinished]}
    try:
        added = ledger.add(paths, m["track"], title, contributors=list(contributors), parent=parent, date=date,
                           allow_failing=allow_failing, unofficial_reason="its attempt lost runs" if incomplete else None,
                           readme=readme, source=source, prepared=prepared, launch={"convention": "speedrun"})
    except ledger.Refused as e:
        return {"recorded": False, "reason": str(e), "verdict": finite(e.verdict.to_json())}
    leaderboard.write()
    return {"recorded": True, "record": added.record.to_json(), "ledger_line": added.line, "notes": added.notes}


# ---- the report ------------------------------------------------------------------------------------------

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
        console.print(f"vs {sp['baseline']}: speedup [bold]{sp['speedup']:.3f}×[/] over {sp['pairs']} A/B pair(s){ci_text} "
                      f"(baseline {sp['baseline_mean_ms'] / 1000:.2f} s, candidate {sp['candidate_mean_ms'] / 1000:.2f} s)",
                      highlight=False)
    if m["status"] == "interrupted":
        console.print("[bold yellow]INTERRUPTED[/]: the attempt stopped; finished runs' logs are kept, the "
                      "manifest marks the interrupted run, nothing was recorded", highlight=False)
    if v.get("record"):
        console.print("[bold green]RECORD[/]: every candidate run finished and passed verification"
                      + (", and it is faster than the baseline" if sp else ""), highlight=False)
    else:
        console.print("[bold red]NOT A RECORD[/]:", highlight=False)
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


# ---- ./run.sh: the main job ------------------------------------------------------------------------

def fetch_fineweb_if_missing(track: dict, train_shards: int = 8) -> Path:
    """The hook `./run.sh` calls on an 8-GPU node: FineWeb's val shard and `train_shards` train shards in the
    track's data dir, fetched by `speedrun data fineweb` when any is missing."""
    d = data_dir(track)
    have_val = any(d.glob(track["data"].get("val_pattern", "*val*.bin")))
    have_train = len(list(d.glob(track["data"].get("train_pattern", "*train*.bin"))))
    if have_val and have_train >= train_shards:
        return d
    cmd = [sys.executable, "-m", "harness.cli", "data", "fineweb", "--train-shards", str(train_shards), "--dir", str(d)]
    print(f"==> {d}: {have_train} train shard(s){'' if have_val else ', no val shard'}; fetching: "
          f"speedrun {' '.join(cmd[3:])}", flush=True)
    code = subprocess.call(cmd, cwd=repo_root())
    if code:
        raise InputError(f"`speedrun data fineweb --dir {d}` failed (exit {code}); fix that, then run ./run.sh again")
    return d


CPU_RUNS = 3  # ./run.sh without GPUs: three full tiny-cpu runs (≈2 min each): enough for a t-test


def main_job() -> int:
    """`./run.sh`: the record attempt this machine's hardware can make."""
    from rich.console import Console

    console = Console()
    n = launcher.gpu_count()
    if n >= 8:
        print(f"found {n} GPUs: the gpt2-small record attempt (`speedrun attempt --track gpt2-small`)", flush=True)
        fetch_fineweb_if_missing(load_track("gpt2-small"))
        o = Options(track="gpt2-small")
    else:
        if n:
            print(f"found {n} GPU(s), fewer than the 8 of gpt2-small: attempting the tiny-cpu track (on the CPU)")
        o = Options(track="tiny-cpu", runs=CPU_RUNS)
    code, m = run_attempt(o, console)
    render(m, console)
    return code
