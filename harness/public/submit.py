"""Someone's run logs into the ledger (`speedrun record add LOG…`): the parent from the ledger, the verdict
from the judge, the folder from the store. Also what `speedrun verify --parent` names: a record id, a record
folder or a log."""
from __future__ import annotations

from pathlib import Path

from harness import ledger
from harness.core.errors import InputError
from harness.judge import submission, verify


def add(log_paths: list[str], track_name: str, title: str, *, contributors: list[str] = (), parent: str | None = None,
        date: str | None = None, unofficial: bool = False, readme: str | None = None, evidence: list[dict] = (),
        launch: dict | None = None, root: Path | None = None) -> ledger.Added:
    """Judge the logs against their parent (`parent` by id, else the track's latest official record) and
    store them as the judge decided (ledger.add says what is refused). `evidence`: other groups of logs
    found with them (submission.prepare). Nothing is written on a refusal."""
    rec, ref = ledger.parent_for(track_name, parent, root)
    prepared = submission.prepare(log_paths, track_name, date=date, parent_id=rec.id if rec else None,
                                  parent_ref=ref, evidence=evidence)
    return ledger.add(prepared, submission.decide(prepared), title, contributors=contributors, date=date,
                      unofficial=unofficial, readme=readme, launch=launch, root=root)


def parent_reference(track_name: str, spec: str | None = None, root: Path | None = None) -> verify.Reference | None:
    """What runs on `track_name` are judged against for rule 3: `spec` (a record id, a record folder or a
    log file), else the track's latest official record; None when the track has no record yet."""
    if spec and Path(spec).exists():
        from harness.public import diff

        side = diff.resolve(spec)
        if not side.sources and not any(p.trials for p in side.logs):
            raise InputError(f"--parent {spec}: neither a run log nor a record (no embedded code, no step lines): "
                             "rule 3 needs the parent's code; give its log, its record folder or its id")
        if side.record and side.record.get("track") not in (None, track_name):
            raise InputError(f"--parent {spec} is a {side.record['track']} record; these runs are on {track_name}")
        return verify.Reference(f"{side.kind} {side.record_id or spec}", side.sources or None,
                                [t for p in side.logs for t in p.trials])
    return ledger.record_reference(track_name, spec, root)
