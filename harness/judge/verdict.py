"""The one judge: is it a record? `speedrun attempt`, `record add`, `import` and `audit` all ask `decide`.

A record is a claim of speed. The public rules end with "4. Run faster than the prior record when
baselined on the same hardware", so a verdict needs both halves:
  - verification (`harness/verify.py`): the target at p < α, complete runs counted once, the rules of
    the record's date kept;
  - rule 4: the speedup over the parent, measured side by side (the paired, interleaved A/B of an
    attempt, or a baseline cohort timed beside the runs in a record folder), tested as the track says
    (`[speed]` in track.toml, or a rule epoch's `speed`).

Three outcomes, as a careful maintainer reaches them:
  accepted      every rule kept, shown by the logs
  rejected      the logs show a rule broken; each reason names the rule
  unverifiable  no rule is shown broken, but something a rule needs is not in the logs (no side-by-side
                baseline, an interval that still includes 1, a parent whose code cannot be read, one log
                where the p-value needs several); each reason names what is missing
A run of code identical to its parent's is a reproduction: never a record, accepted as a reproduction
when its own runs meet the target (a node calibration).

Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.judge.speed import Speed

OUTCOMES = ("accepted", "rejected", "unverifiable")
SPEED_TESTS = ("interval", "logged-time", "none")

# The rule behind each check, as a reviewer names it in a verdict.
RULES = {
    "complete": "complete runs (a final val line at the last step)",
    "target": "rule 2: mean val loss ≤ target at the track's significance",
    "timing": "timing: only training steps on the clock",
    "hardware": "the track's hardware",
    "code": "one script, no banned code",
    "flags": "rule 3: no torch.compile / inductor flag the parent did not set",
    "provenance": "provenance: code and data hashes agree",
    "data": "rule 1: the track's fixed data",
    "runs": "runs counted once",
    "speed": "rule 4: faster than the prior record on the same hardware",
    "parent": "a parent on the same track",
    "attempt": "every planned run of the attempt",
    "smoke": "the track's full run",
    # what an attempt itself can lack (harness/attempt.py)
    "no-candidate": "every planned run of the attempt",
    "unfinished": "every planned run of the attempt",
    "never-started": "every planned run of the attempt",
    "attempt-status": "every planned run of the attempt",
    "logs-elsewhere": "every run's log, verified together",
    "no-log-here": "every run's log, verified together",
    "unverifiable": "logs that can be verified",
    "no-pairs": "rule 4: faster than the prior record on the same hardware",
    "no-baseline": "rule 4: faster than the prior record on the same hardware",
}


@dataclass
class Decision:
    """The verdict: an outcome, the reasons (each {check, rule, detail, unknown}), the speed evidence."""
    outcome: str
    reasons: list[dict] = field(default_factory=list)
    speed: Speed | None = None
    parent: str | None = None
    reproduction_of: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def record(self) -> bool:
        """A new record: accepted, and not a reproduction."""
        return self.outcome == "accepted" and self.reproduction_of is None

    @property
    def reproduced(self) -> bool:
        return self.outcome == "accepted" and self.reproduction_of is not None

    @property
    def label(self) -> str:
        if self.reproduction_of:
            return f"REPRODUCED {self.reproduction_of}" if self.reproduced else f"NOT REPRODUCED {self.reproduction_of}"
        return {"accepted": "RECORD", "rejected": "NOT A RECORD", "unverifiable": "NOT SHOWN A RECORD"}[self.outcome]

    def to_json(self) -> dict:
        return {"outcome": self.outcome, "label": self.label, "record": self.record, "reproduced": self.reproduced,
                "reproduction_of": self.reproduction_of, "parent": self.parent, "reasons": self.reasons,
                "speed": self.speed.to_json() if self.speed else None, "notes": self.notes}


def reason(check: str, detail: str, unknown: bool = False, why: str | None = None) -> dict:
    """One reason: `unknown` = the logs cannot show it (unverifiable), else the logs show the rule broken;
    `why` a finer name (rule 4: slower, not-faster, one-pair, no-side-by-side, not-the-latest)."""
    out = {"check": check, "rule": RULES.get(check, check), "detail": detail, "unknown": unknown}
    if why:
        out["why"] = why
    return out


def with_reason(d: Decision, r: dict) -> Decision:
    """The same decision with one more reason (the outcome recomputed)."""
    reasons = d.reasons + [r]
    outcome = "rejected" if any(not x["unknown"] for x in reasons) else "unverifiable"
    return Decision(outcome, reasons, d.speed, d.parent, d.reproduction_of, d.notes)


def speed_rule(rules: dict) -> tuple[str, float]:
    """(test, level) of rule 4 under `rules` (harness.core.rules.at): track data, like the significance test."""
    return rules.get("speed", "interval"), float(rules.get("speed_level", 0.95))


def decide(verdict, rules: dict, *, speed: Speed | None = None, parent: str | None = None,
           reproduction_of: str | None = None, problems: list[dict] = ()) -> Decision:
    """The one verdict. `verdict`: verify's Verdict of the submitted runs (None: no run to verify);
    `rules`: the rules in force (harness.core.rules.at); `speed`: rule 4's evidence against `parent` (the
    record or folder it improves on; None: the first record of its track); `reproduction_of`: the
    record whose code these runs are, byte for byte (no speed claim then); `problems`: what the caller
    found before verification (unfinished runs, a smoke run, a bad parent), as `reason(...)` dicts."""
    reasons = list(problems)
    if verdict is not None:
        first: dict[str, dict] = {}
        for r in verdict.runs:
            for c in r.checks:
                if c.ok:
                    continue
                detail = c.detail if len(verdict.runs) == 1 else f"{r.file}: {c.detail}"
                unknown = getattr(c, "unknown", False)
                if c.name not in first:
                    first[c.name] = reason(c.name, detail, unknown)
                    reasons.append(first[c.name])
                elif first[c.name]["unknown"] and not unknown:  # a run that shows it broken outweighs one that cannot
                    first[c.name].update(detail=detail, unknown=False)
        if not verdict.runs:
            reasons.append(reason("complete", "no run to verify", unknown=True))
    elif not reasons:
        reasons.append(reason("complete", "no run to verify", unknown=True))
    notes = []
    if reproduction_of is None:
        r4, note = _rule4(speed, rules, parent)
        reasons += r4
        notes += note
    broken = [r for r in reasons if not r["unknown"]]
    outcome = "rejected" if broken else "unverifiable" if reasons else "accepted"
    return Decision(outcome, reasons, speed, parent, reproduction_of, notes)


def _rule4(speed: Speed | None, rules: dict, parent: str | None) -> tuple[list[dict], list[str]]:
    test, level = speed_rule(rules)
    if test == "none":
        return [], ["rule 4 is not in force under these rules"]
    if parent is None:
        return [], ["the first record of its track: no prior record to beat"]
    if speed is None and test == "logged-time":
        return [reason("speed", f"no time of the prior record {parent} to compare with (its runs are not here)",
                       unknown=True, why="no-side-by-side")], []
    if speed is None:
        return [reason("speed", f"no side-by-side timing against {parent}: a record needs one (`speedrun attempt` "
                                "interleaves runs of the parent by default)", unknown=True, why="no-side-by-side")], []
    if test == "logged-time" and not speed.side_by_side:  # the early board compared logged times
        if speed.estimate > 1:
            return [], [f"faster than {parent}'s logged time ({speed.describe()}); not timed side by side"]
        return [reason("speed", f"slower than the prior record's logged time: {speed.describe()}", why="slower")], []
    if not speed.side_by_side:
        return [reason("speed", f"{speed.describe()}: times from different nodes are not a side-by-side "
                                "measurement", unknown=True, why="no-side-by-side")], []
    if speed.estimate <= 1:
        return [reason("speed", f"slower than {speed.against}: {speed.describe()}", why="slower")], []
    if speed.lo is None:
        more = speed.more_needed()
        return [reason("speed", f"{speed.describe()}: one run a side gives no interval"
                                + (f"; about {more} more pair(s) would show it at this spread" if more else ""),
                       unknown=True, why="one-pair")], []
    if speed.lo <= 1:
        more = speed.more_needed()
        hint = (f"; at the observed spread about {more} more pair(s) would clear 1 (`speedrun attempt --extend`)"
                if more else "")
        return [reason("speed", f"not shown faster than {speed.against}: {speed.describe()} includes 1{hint}",
                       unknown=True, why="not-faster")], []
    return [], [f"faster than {speed.against}: {speed.describe()}"]
