"""Verification: judge run logs against a track's rules; every check has a name, a verdict and a detail.

Runs are judged by the rules in force on their record's date (`harness/rules.py`: the track's rule
epochs); the verdict names the epoch. Checks per run (a file with several trials holds several runs,
named `file#k`):
  complete    reached the last step and validated there; nothing unreadable; not truncated
  runs        counted once: a near-duplicate of another run (same step times, or same train time and val
              curve) fails it, naming both files
  target      the mean final val loss ≤ target: a single run's (early epochs), or at the track's α over the
              runs (copies count once) — waived for a systems-only change whose val-loss curve matches the
              parent's or the baseline runs' (rule 2's exception, decided from the curves)
  timing      train_time monotonic under the epoch's clock rule, step_avg = train_time/steps, claimed time =
              last val line's
  hardware    the GPU model and count (or CPU) the track requires
  code        all runs carry the same source (and `--script` when given); no banned pattern in live code
  flags       rule 3: no torch._inductor.config / torch.compile flag the parent record did not set
  provenance  (our logs) code/data hashes in the env block and RESULT agree with the embedded source
  data        (our logs) the val shards' logged sha256 are exactly the track's [data.pin] (no pin: passes, says so)

It reads logs only: embedded code is tokenized to strip comments, never executed.
Standard library + rich only.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev

from harness.judge import logs
from harness.core import stats
from harness.core import rules as rulebook
from harness.core.errors import InputError
from harness.core.text import fmt
from harness.core.track import data_pin, load_track

CHECKS = ("complete", "target", "runs", "timing", "hardware", "code", "flags", "provenance", "data")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    unknown: bool = False   # the logs cannot decide it: shown "not checked", never "ok" (judge: unverifiable)


@dataclass
class Run:
    """One trial of one file, and its checks."""
    file: str
    log: logs.ParsedLog
    trial: logs.Trial
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def val_loss(self) -> float | None:
        v = self.trial.final_val
        return None if v is None else v.loss

    @property
    def train_time_ms(self) -> float | None:
        v = self.trial.final_val
        return None if v is None else v.time_ms


@dataclass
class Reference:
    """What a candidate is judged against: the parent record (its code for rule 3, its runs' val curves
    for the systems-only exception) or the baseline runs timed beside it."""
    name: str                                # "record tiny-cpu/0002_…", "baseline/ in the folder"
    sources: dict[str, str] | None = None    # the parent's embedded files
    trials: list = field(default_factory=list)


@dataclass
class Verdict:
    track: str
    runs: list[Run]
    summary: dict
    rules: dict = field(default_factory=dict)   # the epoch the runs were judged under

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    def to_json(self) -> dict:
        return {"ok": self.ok,
                "runs": [{"file": r.file, "ok": r.ok, "checks": [vars(c) for c in r.checks]} for r in self.runs],
                "summary": self.summary,
                "rules": {k: self.rules.get(k) for k in ("name", "since", "significance", "timing", "flags")}}


def verify_files(paths: list[str], track_name: str, script: str | None = None, *, date: str | None = None,
                 parent: Reference | None = None) -> Verdict:
    """Parse and judge; a missing/unreadable file, a file with no run in it, or an unknown track → InputError.
    `date`: the record's date, for the rules in force then (default: the date the earliest run ran, from
    its nvidia-smi header, else today)."""
    track = load_track(track_name)
    script_text = None
    if script is not None:
        try:
            script_text = Path(script).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--script {script}: cannot read ({e})") from None
    parsed = [logs.parse_file(p) for p in paths]
    for p in parsed:
        if not p.trials:
            raise InputError(f"{p.file}: no step lines: not a run log (see `speedrun parse {p.file}`)")
    if date is None:  # judged as of when the runs ran (nvidia-smi's date), else today
        ran = sorted(p.env.date[:10] for p in parsed if p.env.date)
        date = ran[0] if ran else None
    return verify(parsed, track, script_text, rules=rulebook.at(track, date), parent=parent)


def verify(parsed: list[logs.ParsedLog], track: dict, script_text: str | None = None, *, rules: dict | None = None,
           parent: Reference | None = None, baseline: Reference | None = None) -> Verdict:
    """Judge parsed logs under `rules` (default: today's), against `parent` (rule 3; its curves for the
    systems-only exception) and `baseline` (runs timed beside these: the preferred curves to compare)."""
    rules = rules or rulebook.at(track)
    runs = [Run(p.file if len(p.trials) == 1 else f"{p.file}#{k + 1}", p, t)
            for p in parsed for k, t in enumerate(p.trials)]
    ref = baseline if baseline is not None and baseline.trials else parent
    complete = [_complete(r) for r in runs]
    provenance = [_provenance(r, track) if r.log.era == logs.ERA_OURS else None for r in runs]
    left_out = {id(r): (c.detail if not c.ok else f"provenance: {pv.detail}")
                for r, c, pv in zip(runs, complete, provenance) if not c.ok or (pv is not None and not pv.ok)}
    copy_of = duplicates(runs) if rules["dedupe"] else {}
    targets, summary = _target(runs, track, rules, ref, copy_of, left_out)
    code = _code(runs, track, script_text)
    flag_checks = _flags(runs, rules, parent)
    counted = _runs_counted(runs, copy_of)
    for r, done, target_check, code_check, flag_check, once, prov in zip(runs, complete, targets, code, flag_checks,
                                                                         counted, provenance):
        r.checks = [done, target_check, once, _timing(r, rules), _hardware(r, track), code_check, flag_check]
        if prov is not None:
            r.checks.append(prov)
            r.checks.append(_data(r, track))
    summary["rules"] = rules["name"]
    return Verdict(track["name"], runs, summary, rules)


# ---- complete ---------------------------------------------------------------------------------------------

def _complete(r: Run) -> Check:
    t, p = r.trial, r.log
    problems = []
    if t.total_steps is None:
        problems.append("the log never states its total steps (llm.c format?)")
    v = t.final_val
    if v is None:
        problems.append("no val line")
    elif t.total_steps is not None and (v.step != t.total_steps or t.final_step != t.total_steps):
        problems.append(f"last val line at step {v.step} (line {v.line}), last step {t.final_step}, "
                        f"of {t.total_steps}")
    elif v.loss is None or not math.isfinite(v.loss):
        problems.append(f"final val loss is not a number (line {v.line})")
    is_last = t is p.trials[-1]
    if is_last and p.cut:  # a last line that lacks only its newline is whole
        problems.append("the file ends mid-line (truncated)")
    if p.era == logs.ERA_OURS and t.result is None:
        problems.append("no RESULT line")
    unreadable = [w for w in p.warnings if "unreadable" in w or "does not start" in w]
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable line(s), first: {unreadable[0]}")
    if problems:
        return Check("complete", False, "; ".join(problems))
    return Check("complete", True, f"validated at step {v.step}/{t.total_steps} (line {v.line})")


# ---- target -----------------------------------------------------------------------------------------------

MIN_TIMED_POINTS = 8  # fewer timed step lines than this are too few to call two runs one


def duplicates(runs: list[Run], keys: tuple = ("val", "times", "time+curve")) -> dict[int, tuple[Run, str]]:
    """Runs that are one run, found twice: id(run) → (the earlier run, how they coincide). Two logs are one
    run when their val trajectories are identical, when their step-time sequences coincide to the
    millisecond (a copy with a val digit edited), or when their train time and rounded val curve coincide
    (a copy with the times nudged). `keys` picks the tests: across records of a deterministic track, same
    val curves are expected (a systems-only change on the same seeds), so only the times count there."""
    seen: dict[tuple, Run] = {}
    out: dict[int, tuple[Run, str]] = {}
    for r in runs:
        found = fingerprints(r.trial, keys)
        hit = next(((seen[k], why) for k, why in found if k in seen), None)
        if hit:
            out[id(r)] = hit
        for k, _ in found:
            seen.setdefault(k, r)
    return out


def fingerprints(t: logs.Trial, keys: tuple = ("val", "times", "time+curve")) -> list[tuple[tuple, str]]:
    """What identifies a run (`duplicates`): (key, how two runs with that key coincide) per test in `keys`."""
    timed = tuple((p.step, p.time_ms) for p in sorted(t.train + t.val, key=lambda p: p.line) if p.time_ms is not None)
    found = []
    if t.val and "val" in keys:
        found.append((("val", tuple((p.step, p.loss) for p in t.val)), "identical val-loss trajectory"))
    steps = {b[1] - a[1] for a, b in zip(timed, timed[1:])}
    if len(timed) >= MIN_TIMED_POINTS and len(steps) >= 2 and "times" in keys:  # not uniformly spaced
        found.append((("times", timed), f"the same {len(timed)} step times to the ms"))
    end = t.final_val.time_ms if t.final_val else None
    if t.val and end and "time+curve" in keys:
        curve = tuple((p.step, None if p.loss is None else round(p.loss, 3)) for p in t.val)
        found.append((("time+curve", end, curve), f"the same train time ({end:g} ms) and val curve"))
    return found


def _runs_counted(runs: list[Run], copy_of: dict) -> list[Check]:
    """Each run's `runs` check: a near-duplicate of another fails it, naming both files."""
    out = []
    for r in runs:
        if id(r) in copy_of:
            first, why = copy_of[id(r)]
            out.append(Check("runs", False, f"a near-duplicate of {first.file} ({why}): one run, counted once"))
        else:
            out.append(Check("runs", True, "a distinct run"))
    return out


def _target(runs: list[Run], track: dict, rules: dict, ref: Reference | None, copy_of: dict,
            left_out: dict) -> tuple[list[Check], dict]:
    """The target across the counted runs: copies count once; `left_out` (id → why) runs that failed
    `complete` or `provenance` (truncated, another track's) leave the mean and the p-value."""
    target, test_kind = track["target"], rules["significance"]
    alpha = rules["alpha"]
    unknown = False
    counted = [r for r in runs if id(r) not in copy_of and id(r) not in left_out
               and r.val_loss is not None and math.isfinite(r.val_loss)]
    losses = [r.val_loss for r in counted]
    n = len(losses)
    mean = fmean(losses) if losses else None
    copies = f"; {len(copy_of)} near-duplicate run(s) counted once" if copy_of else ""
    if left_out:
        copies += f"; {len(left_out)} run(s) left out (incomplete or not this track's)"
    p_value = None
    if test_kind == "single-run":  # the early rule: a run's final val loss at the target is a record
        across_ok = n >= 1 and mean <= target
        across = (f"mean {mean:.5f} {'≤' if across_ok else '>'} {target} over {n} run(s){copies} (no p-value "
                  f"required under '{rules['name']}')") if n else "no val loss"
    elif test_kind == "margin":  # track-3 style: (target − mean)·√n ≥ c
        c = rules["c"]
        across_ok = n >= 1 and stats.meets_margin(losses, target, c)
        across = (f"mean {mean:.5f} over {n} run(s){copies}: (target − mean)·√n = "
                  f"{stats.margin(losses, target):.5f} {'≥' if across_ok else '<'} {c}") if n else "no val loss"
    elif n >= 2:
        test = stats.t_test(losses, target)
        p_value = test.p_value
        across_ok = mean <= target and test.significant(alpha)
        across = (f"mean {mean:.5f} ≤ {target}? over {n} run(s){copies}: t = {test.t:.3f}, "
                  f"p = {test.p_value:.3g} {'<' if test.significant(alpha) else '≥'} α {alpha}")
    else:  # one run meeting the target cannot show significance: unverifiable, not broken
        across_ok = False
        unknown = n == 1 and mean <= target
        across = (f"{n} distinct run(s){copies}: the one-sided t-test (p < {alpha}) needs at least 2"
                  + (f" (mean {mean:.5f} vs target {target})" if n else ""))
    waived = None
    if test_kind == "t-test" and not across_ok and n and mean <= target and rules.get("systems_only") and ref:
        waived = systems_only([r.trial for r in counted], ref, rules["systems_only"])
        if waived[0]:
            across_ok, across = True, f"{across}; p-value waived (rule 2's exception): {waived[1]}"
        else:
            across = f"{across}; not a systems-only change: {waived[1]}"
    checks = []
    for r in runs:
        if id(r) in copy_of:
            checks.append(Check("target", across_ok, f"counted once, as {copy_of[id(r)][0].file}; {across}"))
        elif id(r) in left_out:  # its own check names what is wrong; the target is not shown by it
            checks.append(Check("target", False, f"not counted ({left_out[id(r)]}); {across}", unknown=True))
        elif r.val_loss is None or not math.isfinite(r.val_loss):
            checks.append(Check("target", False, f"no final val loss; {across}"))
        else:
            # a mean at or under the target without the significance shown is not shown broken (unverifiable)
            shown = unknown or (test_kind == "t-test" and n >= 1 and mean is not None and mean <= target)
            checks.append(Check("target", across_ok, f"final val_loss {r.val_loss}; {across}",
                                unknown=shown and not across_ok))
    times = [r.train_time_ms for r in counted if r.train_time_ms is not None]
    summary = {"n": n, "mean_val_loss": mean, "std_val_loss": stdev(losses) if n >= 2 else None,
               "p_value": p_value, "mean_train_time_ms": fmean(times) if times else None,
               "p_value_waived": bool(waived and waived[0])}
    if len(times) >= 2:
        ci = stats.mean_ci(times)
        summary["train_time_ms_ci95"] = [ci.lo, ci.hi]
    return checks, summary


def systems_only(trials: list, ref: Reference, cfg: dict) -> tuple[bool, str]:
    """Rule 2's exception, decided against the parent's (or its re-timed baseline's) val curves: at every
    shared val step past cfg["from_frac"] of training (same number of steps), is the runs' mean val loss
    within cfg["max_val_gap"] of the reference's, plus cfg["z"] standard errors of the difference? The
    per-step noise is pooled over every run of both sides, so one run against several still has it.
    When it holds, the loss claim is the parent's. (True/False, and the evidence either way.)"""
    def curve(ts):
        by_step: dict[int, list[float]] = {}
        for t in ts:
            for p in t.val:
                if p.loss is not None and math.isfinite(p.loss):
                    by_step.setdefault(p.step, []).append(p.loss)
        return by_step

    steps = {t.total_steps for t in trials}
    ref_steps = {t.total_steps for t in ref.trials}
    if steps != ref_steps or len(steps) != 1:
        return False, f"{ref.name} ran {sorted(ref_steps, key=str)} steps, these {sorted(steps, key=str)}"
    total = steps.pop() or 0
    mine, theirs = curve(trials), curve(ref.trials)
    shared = sorted(s for s in set(mine) & set(theirs) if s >= cfg.get("from_frac", 0.0) * total)
    if not shared:
        return False, f"no val step in common with {ref.name}"
    z, limit = cfg.get("z", 0.0), cfg["max_val_gap"]
    worst = None
    for s in shared:
        a, b = mine[s], theirs[s]
        ma, mb, dof = fmean(a), fmean(b), len(a) + len(b) - 2
        ss = sum((x - ma) ** 2 for x in a) + sum((x - mb) ** 2 for x in b)
        se = math.sqrt(ss / dof * (1 / len(a) + 1 / len(b))) if dof > 0 else 0.0
        gap, allowed = abs(ma - mb), limit + z * se
        if worst is None or gap - allowed > worst[0] - worst[1]:
            worst = (gap, allowed, s)
    gap, allowed, at = worst
    ok = gap <= allowed
    return ok, (f"mean val-loss curve {'within' if ok else 'off'} {ref.name}'s at {len(shared)} shared val steps "
                f"from step {shared[0]}: tightest at step {at}, gap {gap:.4f} {'≤' if ok else '>'} {allowed:.4f} "
                f"({limit} + {z:g} standard errors, noise pooled over {len(trials)} + {len(ref.trials)} runs)")


# ---- timing -----------------------------------------------------------------------------------------------

def _timing(r: Run, rules: dict) -> Check:
    t, era = r.trial, r.log.era
    if era == logs.ERA_LLMC:
        return Check("timing", False, "llm.c logs carry no train_time: nothing to time")
    points = sorted(t.val + t.train, key=lambda p: p.line)
    problems = []
    if era == logs.ERA_RESET10 and rules["timing"] != "reset-after-10":
        problems.append(f"steps 1–10 are untimed (the clock restarts after step 10): not allowed under "
                        f"'{rules['name']}'" + (f" (since {rules['since']})" if rules.get("since") else ""))
    prev = None
    for p in points:
        if p.time_ms is None:
            problems.append(f"line {p.line}: step {p.step} has no train_time")
            continue
        if prev is not None:
            if p.step < prev.step:
                problems.append(f"line {p.line}: step {p.step} after step {prev.step}")
            elif p.time_ms < prev.time_ms:
                reset = era == logs.ERA_RESET10 and prev.step == 10 and p.step == 11
                if not reset:
                    problems.append(f"line {p.line}: train_time {p.time_ms:g} ms < {prev.time_ms:g} ms at line "
                                    f"{prev.line}" + (" (the old rule resets only after step 10)"
                                                      if era == logs.ERA_RESET10 else ""))
        # step_avg = train_time / timed steps (or, in track-3 logs, the mean over the steps since the
        # previous line); print rounding allows 1 ms on the times and 0.005 ms per step on the average.
        timed = p.step - 10 if era == logs.ERA_RESET10 else p.step
        if p.step_avg_ms is not None and timed > 0:
            ok = abs(p.step_avg_ms * timed - p.time_ms) <= 1.0 + 0.0051 * timed
            if not ok and prev is not None and prev.time_ms is not None and p.step > prev.step:
                span = p.step - prev.step
                ok = abs(p.step_avg_ms * span - (p.time_ms - prev.time_ms)) <= 1.0 + 0.0051 * span
            if not ok:
                problems.append(f"line {p.line}: step_avg {p.step_avg_ms} ms × {timed} steps ≠ train_time "
                                f"{p.time_ms:g} ms")
        prev = p
    v = t.final_val
    claim = ""
    if t.result is not None and v is not None:
        claimed = t.result.get("train_time_ms")
        if not isinstance(claimed, (int, float)) or v.time_ms is None or abs(claimed - v.time_ms) > 0.51:
            problems.append(f"RESULT train_time_ms {claimed} ≠ last val line's {v.time_ms} (line {v.line})")
        claimed_loss = t.result.get("val_loss")
        if not isinstance(claimed_loss, (int, float)) or v.loss is None or abs(claimed_loss - v.loss) > 5.01e-5:
            problems.append(f"RESULT val_loss {claimed_loss} ≠ last val line's {v.loss} (line {v.line})")
        claim = "; RESULT agrees"
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return Check("timing", False, "; ".join(problems[:3]) + more)
    final = "-" if v is None or v.time_ms is None else f"{v.time_ms / 1000:.3f} s"
    return Check("timing", True, f"{len(points)} step lines monotonic under the {era} rule, step_avg consistent; "
                                 f"train time {final}{claim}")


# ---- hardware ---------------------------------------------------------------------------------------------

def _hardware(r: Run, track: dict) -> Check:
    hw = track["hardware"]
    env = r.log.env
    ws = env.speedrun.get("world_size")
    if hw.get("accelerator") == "cpu":
        if env.gpus is not None or env.speedrun.get("device", "cpu") != "cpu":
            return Check("hardware", False, f"the track runs on CPU; this run used {_gpus(env)}")
        if ws is not None and int(ws) != hw.get("count", 1):
            return Check("hardware", False, f"world_size {ws}; the track requires {hw.get('count', 1)} process(es)")
        if env.cpu is None:
            return Check("hardware", False, "no CPU line in the environment block")
        return Check("hardware", True, f"CPU: {env.cpu}")
    g = env.gpus
    if g is None:
        return Check("hardware", False, f"no GPU listing (nvidia-smi or its substitutes) in the log; "
                                        f"the track requires {hw['count']}× {hw['model']}")
    problems = []
    if g.count != hw["count"]:
        problems.append(f"{g.count} GPU(s), the track requires {hw['count']}")
    if not re.search(rf"\b{re.escape(hw['model'])}\b", g.model or ""):
        problems.append(f"GPU model {g.model!r} is not {hw['model']}")
    if ws is not None and int(ws) != hw["count"]:
        problems.append(f"world_size {ws}, the track requires {hw['count']}")
    if problems:
        return Check("hardware", False, "; ".join(problems))
    return Check("hardware", True, f"{g.count}× {g.model} ({g.source})")


def _gpus(env: logs.Environment) -> str:
    return "a GPU" if env.gpus is None else f"{env.gpus.count}× {env.gpus.model}"


# ---- code -------------------------------------------------------------------------------------------------

def _code(runs: list[Run], track: dict, script_text: str | None) -> list[Check]:
    banned = [(re.compile(b["pattern"]), b.get("why", b["pattern"])) for b in track.get("rules", {}).get("banned", [])]
    ref = runs[0] if runs else None
    violations: dict[int, list[str]] = {}  # per parsed log: live-code lines that match a banned pattern
    out = []
    for r in runs:
        src = r.log.sources
        if not src:
            out.append(Check("code", False, "no embedded source (llm.c logs carry none)"))
            continue
        problems = []
        if r is not ref and src != ref.log.sources:
            problems.append(_differs(src, ref.log.sources, ref.file))
        if script_text is not None and src.get(logs.MAIN_FILE) != script_text:
            problems.append("embedded " + _differs({logs.MAIN_FILE: src.get(logs.MAIN_FILE, "")},
                                                   {logs.MAIN_FILE: script_text}, "--script"))
        if id(r.log) not in violations:
            violations[id(r.log)] = [f"{name}:{line_no}: {why}" for name, text in src.items()
                                     for line_no, line in _live_lines(text)
                                     for pattern, why in banned if pattern.search(line)]
        if violations[id(r.log)]:
            v = violations[id(r.log)]
            problems.append(f"banned pattern in live code: {'; '.join(v[:3])}" + (f" (+{len(v) - 3})" if len(v) > 3 else ""))
        if problems:
            out.append(Check("code", False, "; ".join(problems)))
        else:
            same = " = --script" if script_text is not None else ""
            out.append(Check("code", True, f"{len(src)} file(s), sha256 {r.log.code_sha256[:12] if r.log.code_sha256 else '-'}"
                                           f"{same}, same in all {len(runs)} run(s); no banned pattern "
                                           f"({len(banned)} checked)"))
    return out


def _differs(a: dict[str, str], b: dict[str, str], other: str) -> str:
    if set(a) != set(b):
        return f"files {sorted(a)} differ from {other}'s {sorted(b)}"
    for name in a:
        if a[name] != b[name]:
            la, lb = a[name].split("\n"), b[name].split("\n")
            k = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
            return f"{name} differs from {other}'s at line {k + 1}"
    return f"source differs from {other}'s"


@functools.lru_cache(maxsize=512)  # once per distinct source: a folder of 20 runs of one script is read once
def _live_lines(text: str) -> tuple:
    """(line number, line without comments) for every line of Python source; comments are not code."""
    return tuple((i + 1, line) for i, line in enumerate(rulebook.live_code(text).split("\n")) if line.strip())


# ---- flags (rule 3) -----------------------------------------------------------------------------------

def _flags(runs: list[Run], rules: dict, parent: Reference | None) -> list[Check]:
    out, seen = [], {}
    for r in runs:
        key = id(r.log)
        if key not in seen:
            src = r.log.sources
            mine = {k: v for name, text in src.items() for k, v in rulebook.flags(text).items()}
            if rules["flags"] == "any":
                seen[key] = Check("flags", True, f"not restricted under '{rules['name']}'"
                                  + (f" ({len(mine)} set: {', '.join(sorted(mine))})" if mine else ""))
            elif not src:
                seen[key] = Check("flags", False, "no embedded source to read flags from")
            elif parent is not None and parent.sources is None:  # a parent exists, its code is not at hand
                seen[key] = Check("flags", False, f"not checked: the parent ({parent.name}) embeds no code here, and "
                                  "rule 3 needs it" + (f" ({len(mine)} set: {', '.join(sorted(mine))})" if mine
                                                       else " (none set)"), unknown=True)
            else:  # no parent record at all: every flag is extra
                who = f"the parent ({parent.name})" if parent else "a parent (there is none: every flag counts)"
                extra = rulebook.extra_flags(src, parent.sources if parent else {}, rules.get("allowed_flags", ()))
                if extra:
                    seen[key] = Check("flags", False, f"{len(extra)} flag(s) {who} did not set: "
                                      + "; ".join(f"{k} ({v})" for k, v in extra.items()))
                else:
                    seen[key] = Check("flags", True, f"no flag {who} did not set"
                                      + (f" ({len(mine)} set, all the parent's)" if mine else ""))
        out.append(seen[key])
    return out


# ---- provenance -------------------------------------------------------------------------------------------

def _provenance(r: Run, track: dict) -> Check:
    p, t = r.log, r.trial
    stated, actual = p.env.code_sha256, p.code_sha256s
    problems = []
    for name in sorted(set(stated) | set(actual)):
        if name not in actual:
            problems.append(f"env block hashes {name}, which is not embedded")
        elif name not in stated:
            problems.append(f"{name} is embedded but has no code_sha256 line")
        elif stated[name] != actual[name]:
            problems.append(f"{name}: env code_sha256 {stated[name][:12]}… ≠ embedded text's {actual[name][:12]}…")
    res = t.result or {}
    if res.get("code_sha256") != p.code_sha256:
        problems.append(f"RESULT code_sha256 {str(res.get('code_sha256'))[:12]}… ≠ embedded train_gpt.py's "
                        f"{str(p.code_sha256)[:12]}…")
    if res.get("data_sha256") != p.env.data_sha256:
        problems.append(f"RESULT data_sha256 {str(res.get('data_sha256'))[:12]}… ≠ env block's "
                        f"{str(p.env.data_sha256)[:12]}…")
    if not p.env.data_sha256:
        problems.append("no data_sha256 in the env block")
    logged_track = p.env.speedrun.get("track")
    if logged_track != track["name"] or res.get("track", logged_track) != logged_track:
        problems.append(f"log says track {logged_track} (RESULT: {res.get('track')}); verifying {track['name']}")
    for key in ("seed", "run_id"):
        if key in res and str(res[key]) != p.env.speedrun.get(key):
            problems.append(f"RESULT {key} {res[key]} ≠ env block's {p.env.speedrun.get(key)}")
    if problems:
        return Check("provenance", False, "; ".join(problems))
    return Check("provenance", True, f"code and data hashes agree ({len(actual)} file(s), data "
                                     f"{p.env.data_sha256[:12]}…)")


# ---- data -------------------------------------------------------------------------------------------------

def _data(r: Run, track: dict) -> Check:
    """The `val_shard_sha256 NAME: HEX` lines against the track's [data.pin]: every pinned shard logged with
    its pinned hash, and no val shard the track does not pin."""
    pin, logged = data_pin(track), r.log.env.val_shard_sha256
    if not pin:
        return Check("data", True, f"no pin in the track ({len(logged)} val shard hash(es) logged)")
    problems = []
    for name, want in sorted(pin.items()):
        got = logged.get(name)
        if got is None:
            problems.append(f"no val_shard_sha256 line for {name}, which the track pins")
        elif got != want:
            problems.append(f"{name}: logged sha256 {got[:12]}… ≠ the track's pin {want[:12]}…")
    problems += [f"val shard {name} is not pinned by the track" for name in sorted(set(logged) - set(pin))]
    if problems:
        return Check("data", False, "; ".join(problems))
    return Check("data", True, f"{len(pin)} val shard(s) match the track's pin ({', '.join(sorted(pin))})")


# ---- for people -------------------------------------------------------------------------------------------

def render(verdict: Verdict, console) -> None:
    """`speedrun verify` for people: every check of every run, the summary, PASS or FAIL."""
    from rich.table import Table

    t = Table(title=f"speedrun verify --track {verdict.track}")
    for col in ("run", "check", "", "detail"):
        t.add_column(col, overflow="fold")
    for r in verdict.runs:
        for k, c in enumerate(r.checks):
            mark = "[yellow]not checked[/]" if c.unknown else "[green]ok[/]" if c.ok else "[red]FAIL[/]"
            t.add_row(r.file if k == 0 else "", c.name, mark, c.detail,
                      end_section=k == len(r.checks) - 1)
    console.print(t)
    s = verdict.summary
    secs = None if s["mean_train_time_ms"] is None else s["mean_train_time_ms"] / 1000
    console.print(f"{s['n']} distinct run(s): mean val_loss {fmt(s['mean_val_loss'], '.5f')}, p = "
                  f"{fmt(s['p_value'], '.3g')}, mean train time {fmt(secs, '.3f')} s", highlight=False)
    failed = sorted({c.name for r in verdict.runs for c in r.checks if not c.ok})
    console.print("[bold green]PASS[/]: every check passed" if verdict.ok else f"[bold red]FAIL[/]: {', '.join(failed)}")
