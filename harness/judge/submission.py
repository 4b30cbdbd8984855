"""A submission judged: logs read as they will be stored, verified under the rules of their date against
their parent, rule 4's evidence, and whether the ledger already holds them (`Prepared`, `prepare`,
`decide`, `duplicates`). It reads no ledger: the caller hands it the parent and the stored runs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import InputError
from harness.core.files import number, safe_relpath, sha256_bytes
from harness.core.track import load_track
from harness.judge import logs, verify
from harness.judge.speed import Speed
from harness.judge.verdict import Decision, decide as judge_decide, reason, speed_rule, with_reason


@dataclass
class Prepared:
    """What `add` stores, verified: the submission's verdict, the files, the evidence groups' verdicts."""
    verdict: verify.Verdict
    track: dict
    stored: list[tuple[str, bytes]]     # (path in the record folder, bytes)
    notes: list[str]
    parent: str | None = None           # the record the runs were judged against (rule 3, its curves)
    evidence: list[dict] = field(default_factory=list)
    speedup: dict | None = None
    speed: object = None                # judge.Speed: rule 4's evidence (the dict above is its stored form)
    rules: dict = field(default_factory=dict)
    same_code: bool = False             # these runs are the parent's code, byte for byte (a reproduction)
    parent_trials: list = field(default_factory=list)  # the parent's runs (its logged times, for `logged-time`)


def _read(paths: list, prefix: str, taken: set, known: dict | None = None) -> tuple[list[tuple[str, bytes]],
                                                                                   list[logs.ParsedLog]]:
    """Each log's bytes under a safe, unique stored name, and the log parsed as it will be stored
    (`known`: path → the ParsedLog a caller already has, relabelled rather than parsed again)."""
    stored, parsed = [], []
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError as e:
            raise InputError(f"{p}: cannot read ({e.strerror}); pass the run logs `speedrun record add` should "
                             f"store") from None
        name = safe_relpath(f"{prefix}{Path(p).name.replace('/', '_')}") or f"{prefix}log"
        base, k = name, 2
        while name in taken:
            stem, dot, ext = base.rpartition(".")
            name = f"{stem}-{k}.{ext}" if dot else f"{base}-{k}"
            k += 1
        taken.add(name)
        if known and str(p) in known:
            stored.append((name, data))
            parsed.append(dataclasses.replace(known[str(p)], file=name))
            continue
        try:
            text, warn = data.decode("utf-8"), []
        except UnicodeDecodeError as e:  # as logs.parse_file says it
            text = data.decode("utf-8", errors="replace")
            warn = [f"byte {e.start}: not UTF-8; undecodable bytes replaced (code hashes will not match)"]
        log = logs.parse_text(text, file=name, warnings=warn, size=len(data))
        if not log.trials:
            raise InputError(f"{p}: no step lines: not a run log (see `speedrun parse {p}`)")
        stored.append((name, data))
        parsed.append(log)
    return stored, parsed


def prepare(log_paths: list[str], track_name: str, *, date: str | None = None, parent_id: str | None = None,
            parent_ref: verify.Reference | None = None, evidence: list[dict] = (),
            parsed: dict | None = None) -> Prepared:
    """Read and verify the logs as they will be stored (`logs/<safe name>`), under the rules in force on
    `date`, against the parent (`parent_id`, read as `parent_ref`; the caller finds it in the ledger).
    `parsed`: path → ParsedLog already read. `evidence`: other groups found with the logs, each {role, why,
    dir, paths}: stored under `evidence/`, each verified on its own; a baseline group is the preferred
    reference for the systems-only exception and gives the speedup. A missing file, a file with no run
    or an unknown track → InputError."""
    from harness.core import rules as rulebook

    track = load_track(track_name)
    taken: set = set()
    known = parsed
    stored, parsed = _read(log_paths, "logs/", taken, known)
    notes: list[str] = []
    rules = rulebook.at(track, date)
    groups = []
    for g in evidence:
        g_stored, g_parsed = _read(g["paths"], f"evidence/{g['dir'] + '/' if g['dir'] else ''}", taken, known)
        stored += g_stored
        groups.append((g, g_stored, g_parsed))
    base = next((verify.Reference(f"the {g['dir'] or 'flat'} baseline runs", None,
                                  [t for p in gp for t in p.trials]) for g, _, gp in groups if g["role"] == "baseline"), None)
    v = verify.verify(parsed, track, rules=rules, parent=parent_ref, baseline=base)
    out = []
    for g, g_stored, g_parsed in groups:
        gv = verify.verify(g_parsed, track, rules=rules, parent=parent_ref)
        failed = {c.name: c.detail for r in gv.runs for c in r.checks if not c.ok}
        s = gv.summary
        out.append({"role": g["role"], "why": g["why"], "dir": g["dir"], "files": [n for n, _ in g_stored],
                    "n": s["n"], "ok": gv.ok, "mean_val_loss": number(s["mean_val_loss"]),
                    "p_value": number(s["p_value"]), "mean_train_time_ms": number(s["mean_train_time_ms"]),
                    "failed": failed})
    speed = None
    base_times = next(([r.train_time_ms for r in verify.verify(gp, track, rules=rules).runs if r.train_time_ms]
                       for g, _, gp in groups if g["role"] == "baseline"), None)
    times = [r.train_time_ms for r in v.runs if r.train_time_ms]
    sp = None
    base_group = next(((g, gp) for g, _, gp in groups if g["role"] == "baseline"), None)
    if base_times and times:
        bdir = base_group[0]["dir"]
        sp = Speed.unpaired(f"evidence/{bdir}" if bdir else "evidence", base_times, times)
        base_code = next((_stored_names(p.sources) for p in base_group[1] if p.sources), None)
        if parent_id is not None and (parent_ref is None or base_code != parent_ref.sources):
            notes.append(f"the baseline runs in {sp.against} do not run the parent's code ({parent_id}): their "
                         "speedup is kept as evidence, not as rule 4's")
            sp = None
        elif parent_id is not None:
            sp.against = parent_id
        speed = sp.to_json()
    first = next((p for p in parsed if p.sources), None)
    repro = bool(parent_ref is not None and parent_ref.sources and first is not None
                 and _stored_names(first.sources) == _stored_names(parent_ref.sources))
    return Prepared(v, track, stored, notes, parent_id, out, speed, sp, rules, repro,
                    list(parent_ref.trials) if parent_ref is not None else [])


def _stored_names(sources: dict) -> dict:
    """Embedded files under the names a record stores them by (what `reference` reads back)."""
    return {safe_relpath(k) or k: v for k, v in sources.items()}


def decide(prepared: Prepared, *, speed=None, problems=()) -> Decision:
    """Ask the one judge about prepared runs: verification, rule 4 against the parent (`speed`: a paired
    A/B from an attempt; else the unpaired baseline group found with the runs), a reproduction when the
    code is the parent's byte for byte."""
    speed = speed or prepared.speed
    test, _ = speed_rule(prepared.rules)
    if speed is None and test == "logged-time" and prepared.parent and prepared.parent_trials:
        theirs = [t.final_val.time_ms for t in prepared.parent_trials if t.final_val and t.final_val.time_ms]
        mine = [r.train_time_ms for r in prepared.verdict.runs if r.train_time_ms]
        if theirs and mine:  # the early board: the parent's own logged times, another node
            speed = Speed.unpaired(prepared.parent, theirs, mine, kind="logged")
    return judge_decide(prepared.verdict, prepared.rules, speed=speed, parent=prepared.parent,
                          reproduction_of=prepared.parent if prepared.same_code else None,
                          problems=list(problems))


class Refused(Exception):
    """Not a record (and --unofficial was not given), or runs the ledger already holds: nothing was written."""

    def __init__(self, verdict: verify.Verdict, decision=None, message: str | None = None):
        self.verdict, self.decision = verdict, decision
        if message is None and decision is not None:
            if decision.reproduced:
                why = f"a reproduction of {decision.reproduction_of} (its code, byte for byte), not a record"
            else:
                why = f"{decision.label.lower()} ({decision.outcome}): " + "; ".join(
                    f"{r['rule']}: {r['detail']}" for r in decision.reasons)
            message = f"{why}; nothing recorded (`--unofficial` stores it as unofficial, with the reasons)"
        super().__init__(message or "verification failed: nothing recorded")


ACROSS_RECORDS = ("times", "time+curve")  # same val curves are expected across records (same seeds, same ML)


def duplicates(stored: list[tuple[str, bytes]], v: verify.Verdict, held: dict[str, str],
               runs_held: dict[tuple, str]) -> None:
    """Refuse (Refused, nothing written) logs the ledger already holds: the same bytes (`held`: sha256 →
    where) anywhere in it, or the same run (`runs_held`: verify.fingerprints key → where, from the records of
    this track: same step times, or same train time and val curve). A run is counted once, in one record."""
    for name, data in stored:
        h = sha256_bytes(data)
        if h in held:
            raise Refused(v, message=f"{name}: already in the ledger as {held[h]} (same sha256): a run is "
                                     "recorded once; nothing recorded")
    for run in v.runs:
        for key, why in verify.fingerprints(run.trial, ACROSS_RECORDS):
            if key in runs_held:
                raise Refused(v, message=f"{run.file}: the same run as {runs_held[key]} ({why}), already in the "
                                         "ledger; nothing recorded")


def behind_latest(decision: Decision, parent: str | None, latest: str | None) -> tuple[Decision, str | None]:
    """Rule 4 asks for the prior record: a record timed against a parent that is no longer the track's latest
    (`latest`, read under the ledger's lock) is not shown faster than it. The decision with that reason, and
    why it is stored unofficial (None when nothing changed)."""
    if not (decision.record and parent and latest is not None and latest != parent):
        return decision, None
    return (with_reason(decision, reason("speed", f"timed against {parent}, but the track's latest record is "
                                                  f"{latest}: rule 4 asks for the prior record", unknown=True,
                                         why="not-the-latest")),
            f"not a record: timed against {parent}, not the latest record {latest}")
