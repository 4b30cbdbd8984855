"""`speedrun audit PATH [--readme README.md] [--parent P]`: record folders judged as a maintainer would, nothing written.

PATH is one record folder (its logs anywhere below it) or a tree of dated record folders. For each
folder, in record order (the README table's numbers, else the dates its runs ran): its cohorts, the
submission and how it was chosen, and the baseline (harness/layout.py); the rules in force on the
record's date (harness/rules.py); the runs verified (harness/verify.py); and one outcome from the one
judge (harness/judge.py): accepted, rejected (naming the rule the logs show broken) or unverifiable
(naming what the logs cannot show, and what the folder attests instead). The parent is the previous
row of the README table, else the previous folder by its runs' dates; a rejected parent is still the
parent. With `--readme`, only the table whose links point into PATH is read; each row is set beside its
folder (its time is the official re-timing: differences are reported, not failed on), the summary
says how many records the logs confirm, dispute or cannot show, and folders not in the table are not
records. One folder gets the reviewer's page (runs, statistics, speedups, code and environment against
the parent, plausibility flags, a val-loss plot), `--markdown FILE` its statistics.md.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from statistics import fmean
from pathlib import Path

from harness import judge
from harness.public import layout
from harness.judge import logs, verify
from harness.core import stats
from harness.core import rules as rulebook
from harness.core.errors import InputError
from harness.core.files import number, sha256_text
from harness.core.track import load_track
from harness.public.table import Row, read_table, resolve

@dataclass
class Audit:
    folder: str
    date: str | None
    number: int | None = None
    epoch: str | None = None
    status: str = "unreadable"             # accepted | rejected | unverifiable (judge.decide) | unreadable
    submission: dict | None = None         # {dir, runs, how}
    n: int = 0
    mean_val_loss: float | None = None
    std_val_loss: float | None = None
    p_value: float | None = None
    p_value_waived: bool = False
    mean_train_time_s: float | None = None
    train_time_ci95_s: list | None = None
    speedup: dict | None = None            # over the folder's baseline cohort (judge.Speed), else None
    parent_speedup: dict | None = None     # over the parent's own logged times (another node)
    baseline: dict | None = None           # {dir, runs, how} of the cohort the speedup is measured against
    baseline_missed: list = field(default_factory=list)  # baselines that miss the target: reported only
    failed: dict = field(default_factory=dict)   # check → evidence (the first failing run's detail)
    unknown: dict = field(default_factory=dict)  # check → what the logs cannot show
    reasons: list = field(default_factory=list)  # judge.decide's reasons, each naming its rule
    decision: dict | None = None
    parent: str | None = None
    run_date: str | None = None            # when its runs ran (nvidia-smi), else the folder name's date
    in_table: bool | None = None           # with --readme: a row of the table links it (else: not a record)
    groups: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # the submission's runs: file, run id, val, time, ok
    incomplete: list[str] = field(default_factory=list)  # runs with no val line at their last step: not counted
    attests: list[str] = field(default_factory=list)  # what the folder says that its logs cannot show
    flags: list[str] = field(default_factory=list)    # plausibility: worth a reviewer's look, not a rule
    readme: dict | None = None             # {row, time_s, log_time_s, difference_s, links, unresolved}
    reason: str = ""


@dataclass
class Known:
    """A judged folder, as the next one's parent."""
    name: str
    number: int | None
    sources: dict | None
    trials: list
    times_ms: list
    flags_epoch: bool          # judged under an epoch where rule 3 is relative to the parent
    parsed: list = field(default_factory=list)

    def reference(self) -> verify.Reference:
        return verify.Reference(self.name, self.sources, self.trials)


def _is_tree(base: Path) -> bool:
    dated, _ = layout.dated_folders(base)
    return bool(dated)


def audit_tree(tree: str | Path, track_name: str, readme: str | None = None, parent: str | None = None) -> dict:
    """Judge PATH: a tree of dated record folders, or one record folder."""
    base = Path(tree)
    if not base.is_dir():
        raise InputError(f"{tree}: not a folder (pass a record folder, or a tree of them such as "
                         f"modded-nanogpt/records/track_1_short)")
    track = load_track(track_name)
    if _is_tree(base):
        if parent:
            raise InputError(f"--parent {parent}: only for one record folder ({tree} is a tree of them; "
                             f"there each folder's parent is the one before it)")
        dated, skipped = layout.dated_folders(base)
        folders = [f for _, f in dated]
        root = base
    else:
        folders, skipped, root = [base], [], base.parent
    rows = read_table(readme, root) if readme else []
    by_folder: dict[str, list[Row]] = {}
    unresolved = []
    for r in rows:
        for link in r.logs:
            p = resolve(link, root)
            if p is None or p.resolve() == root.resolve():
                if not (len(folders) == 1 and root != base):  # one folder: other rows are simply elsewhere
                    unresolved.append({"row": r.number, "line": r.line, "link": link})
                continue
            by_folder.setdefault(p.resolve().relative_to(root.resolve()).parts[0], []).append(r)
    found = read_all(folders)
    ran = {f.name: min((x.env.date for _, x in found[f.name][0] if x.env.date), default=None) for f in folders}
    number_of = {name: min(x.number for x in rs) for name, rs in by_folder.items()}
    row_of = {}
    for r in rows:
        row_of.setdefault(r.number, r)

    def when(f: Path) -> str:
        return (ran[f.name] or "")[:10] or layout.folder_date(f.name)[0] or ""
    order = sorted(folders, key=lambda f: (number_of.get(f.name, 10 ** 9), when(f), f.name)) if rows else \
        sorted(folders, key=lambda f: (when(f), f.name))
    given = _given_parent(parent, track) if parent else None
    single = len(folders) == 1 and root != base
    if single and given is None and rows and number_of.get(base.name, 0) > 1:
        # one folder, with its README row: the previous row's folder beside it is its parent
        prev = next((n for n, k in number_of.items() if k == number_of[base.name] - 1 and (root / n).is_dir()), None)
        if prev is not None:
            given = _row_parent(root / prev, track, by_folder[prev], root)
    out, known = [], []  # known: every judged folder with a submission, in order
    by_number = {}
    for folder in order:
        rs = by_folder.get(folder.name, [])
        num = number_of.get(folder.name)
        in_table = bool(rs) if rows else None
        if given is not None:
            par = given
        elif rows and num is not None:
            par = by_number.get(num - 1) if num > 1 else None
            if par is None and num > 1:
                par = Known(f"#{num - 1} (not in the tree)", num - 1, None, [], [], True)
        elif rows:
            par = None  # not a record of the table: judged on its own
        else:
            par = known[-1] if known else None
        # The first record of its track: row 1 of the table, or (no table) the earliest folder of a tree.
        first = num == 1 if rows else (not known and not single)
        prev_row = row_of.get(num - 1) if num else None
        a = judge_folder(folder, track, rs, par, known, root, first=first, found=found.pop(folder.name),
                         prev_row=prev_row)
        a.in_table = in_table
        a.run_date = a.run_date or when(folder) or None
        out.append(a)
        if not single:  # the folder's logs are needed again only for one folder's page
            a.__dict__.pop("_layout", None)
        k = getattr(a, "_known", None)
        if k is not None:
            if known:  # only the latest folder can still be a parent: let the older ones' curves go
                known[-1].trials = []
            known.append(k)
            if num is not None:
                by_number[num] = k
    pages = {}
    if single and out and out[0].submission:
        pages = page(out[0], given)
    for a in out:
        a.__dict__.pop("_known", None)
        a.__dict__.pop("_layout", None)
    counts = {k: sum(a.status == k for a in out) for k in ("accepted", "rejected", "unverifiable", "unreadable")}
    rep = {"tree": str(base), "track": track_name, "readme": readme, "folders": [vars(a) for a in out],
           "skipped": skipped, "unresolved_links": unresolved, "rows": len(rows),
           "summary": counts, "single": single, "page": pages or None}
    if rows:
        table = [a for a in out if a.in_table]
        disputed: dict[str, int] = {}
        for a in table:
            if a.status == "rejected":
                for r in a.reasons:
                    if not r["unknown"]:
                        disputed[_rule_name(r)] = disputed.get(_rule_name(r), 0) + 1
        rep["agreement"] = {"confirmed": sum(a.status == "accepted" for a in table),
                            "disputed": sum(a.status == "rejected" for a in table), "by_rule": disputed,
                            "unverifiable": sum(a.status in ("unverifiable", "unreadable") for a in table),
                            "not_in_table": sum(not a.in_table for a in out)}
    return rep


def _read_one(folder: Path):
    """One folder's logs, parsed, with the normalised hash of every script they embed (worker side)."""
    found, skipped = layout.run_logs(folder)
    norms, same = {}, {}
    for _, p in found:
        p.sources = {k: same.setdefault(v, v) for k, v in p.sources.items()}  # one copy per text: pickled once
    if len({tuple(sorted(p.sources.items())) for _, p in found}) > 1:  # several scripts: they will be compared
        for text in same:
            norms[sha256_text(text)] = layout.normalised(text)
    return found, skipped, norms


def read_all(folders: list[Path]) -> dict[str, tuple]:
    """run_logs of every folder, folders spread over the CPUs (parsing and normalising code dominate a
    whole-history audit); one process where there is one CPU or few folders."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpus < 2 or len(folders) < 4:
        return {f.name: layout.run_logs(f) for f in folders}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    out = {}
    try:
        with ProcessPoolExecutor(max_workers=min(cpus, 8), mp_context=ctx) as ex:
            for f, (found, skipped, norms) in zip(folders, ex.map(_read_one, folders)):
                layout._NORMALISED.update(norms)
                out[f.name] = (found, skipped)
    except (OSError, BrokenProcessPool):  # no processes here (a sandbox): one at a time
        return {f.name: layout.run_logs(f) for f in folders}
    return out


def _rule_name(r: dict) -> str:
    rule = r["rule"]
    return rule.split(":")[0] if ":" in rule else r["check"]


def _row_parent(folder: Path, track: dict, rs: list[Row], root: Path) -> Known:
    """The folder of the README's previous row, as a parent: its submission's code, runs and times."""
    linked = {p.resolve().relative_to(folder.resolve()).as_posix() for x in rs for link in x.logs
              if (p := resolve(link, root)) is not None and p.resolve().is_relative_to(folder.resolve())
              and p.resolve() != folder.resolve()}
    f = layout.read_folder(folder, track, linked=linked)
    sub = f.submission
    num = min(x.number for x in rs)
    if sub is None:
        return Known(f"#{num} {folder.name} (no runs)", num, None, [], [], True)
    trials = [t for p in sub.parsed for t in p.trials if t.complete]
    return Known(f"#{num} {folder.name}", num, sub.sources or None, trials,
                 [t.final_val.time_ms for t in trials if t.final_val.time_ms], True, sub.parsed)


def _given_parent(spec: str, track: dict) -> Known:
    """--parent: a record folder (public or ours), a folder of logs, one log, or a record id."""
    from harness.public import diff

    side = diff.resolve(spec)
    trials = [t for p in side.logs for t in p.trials if t.complete]
    return Known(Path(spec).name or str(spec), None, side.sources or None, trials,
                 [t.final_val.time_ms for t in trials if t.final_val.time_ms], True, side.logs)


def _complete_only(p: logs.ParsedLog) -> logs.ParsedLog | None:
    """The log with only its complete trials (a val line at the total steps), or None when it has none. A
    log that never states its total steps (llm.c) keeps its trials: whether they finished is unknown."""
    done = [t for t in p.trials if t.complete or t.total_steps is None]
    if len(done) == len(p.trials):
        return p
    return replace(p, trials=done) if done else None


def _flags_reference(par: Known | None, known: list[Known], rules: dict, first: bool) -> verify.Reference | None:
    """What rule 3 compares against. A parent whose code is not at hand: under rule 3 no flag was allowed
    when it came in, so the flags allowed are those of the nearest earlier record judged under it, else none."""
    if rules["flags"] != "parent" or (par is not None and par.sources is not None):
        return par.reference() if par else None
    if par is None and first:
        return None
    earlier = next((k for k in reversed(known) if k.flags_epoch and k.sources is not None
                    and (par is None or par.number is None or k.number is None or k.number < par.number)), None)
    who = par.name if par else "the parent (not given: pass --parent)"
    if earlier is not None:
        return verify.Reference(f"{who}; flags as {earlier.name}, the nearest earlier record under rule 3",
                                earlier.sources, par.trials if par else [])
    return verify.Reference(f"{who}; no flag was allowed when rule 3 came in", {}, par.trials if par else [])


def judge_folder(folder: Path, track: dict, rs: list[Row], par: Known | None, known: list[Known], root: Path,
                 first: bool = False, found: tuple | None = None, prev_row: Row | None = None) -> Audit:
    num = min((x.number for x in rs), default=None)
    linked = set()
    for x in rs:
        for link in x.logs:
            p = resolve(link, root)
            if p is not None and p.resolve().is_relative_to(folder.resolve()) and p.resolve() != folder.resolve():
                linked.add(p.resolve().relative_to(folder.resolve()).as_posix())
    f = layout.read_folder(folder, track, linked=linked, parent_sources=par.sources if par else None, found=found)
    when = next((x.date for x in rs if x.date), None) or f.run_date
    a = Audit(folder.name, when, num, run_date=f.run_date)
    a.parent = par.name if par else None
    a.groups = [g.to_json(folder) for g in f.groups]
    a.flags += f.problems
    if f.submission is None:
        a.reason = f.how
        return a
    sub = f.submission
    a.submission = {"dir": sub.dir, "runs": len(sub.paths), "how": f.how}
    rules = rulebook.at(track, when, num)
    a.epoch = rules["name"]
    parsed = []
    for p in sub.parsed:
        q = _complete_only(replace(p, file=_rel(p.file, folder)))
        if q is None or len(q.trials) < len(p.trials):
            a.incomplete.append(f"{_rel(p.file, folder)}: no val line at its last step (of {p.trials[-1].total_steps}); "
                                f"left out of the statistics")
        if q is not None:
            parsed.append(q)
    base = f.baseline
    base_ref = verify.Reference(f"the {base.dir or '.'} baseline runs", base.sources or None,
                                [t for p in base.parsed for t in p.trials if t.complete]) if base else None
    flags_ref = _flags_reference(par, known, rules, first)
    parent_name = par.name if par else (None if first else "the prior record (not given: pass --parent)")
    if not parsed:
        d = judge.decide(None, rules, parent=parent_name, problems=[judge.reason(
            "complete", "no complete run (a val line at the last step) in the submission")])
        return _finish(a, d, f, None, folder, par, rules, known)
    v = verify.verify(parsed, track, rules=rules, parent=flags_ref, baseline=base_ref)
    _unknowns(v, rules, f, a, base_ref or (par.reference() if par and par.trials else None), track["target"])
    s = v.summary
    a.n, a.mean_val_loss, a.p_value = s["n"], number(s["mean_val_loss"]), number(s["p_value"])
    a.std_val_loss = number(s.get("std_val_loss"))
    a.p_value_waived = s.get("p_value_waived", False)
    a.mean_train_time_s = None if s["mean_train_time_ms"] is None else s["mean_train_time_ms"] / 1000
    if s.get("train_time_ms_ci95"):
        a.train_time_ci95_s = [x / 1000 for x in s["train_time_ms_ci95"]]
    for r in v.runs:
        a.runs.append({"file": _rel(r.file, folder), "run_id": Path(r.file.split("#")[0]).stem,
                       "val_loss": r.val_loss, "train_time_s": None if r.train_time_ms is None else r.train_time_ms / 1000,
                       "ok": r.ok, "date": r.log.env.date})
        for c in r.checks:
            if not c.ok:
                (a.unknown if c.unknown else a.failed).setdefault(c.name, f"{_rel(r.file, folder)}: {c.detail}")
    times = [r.train_time_ms for r in v.runs if r.train_time_ms]
    speed = None
    if base is not None and times and base.final_times_ms:
        against = f"{base.dir or '.'} ({len(base.final_times_ms)} runs, {base.steps} steps)"
        speed = judge.Speed.unpaired(against, base.final_times_ms, times)
        a.baseline = {"dir": base.dir, "runs": len(base.paths), "how": f.baseline_how, "steps": base.steps}
        # `baseline` names the cohort's folder here; `baseline_mean_s` is kept for scripts that read it
        a.speedup = {**speed.to_json(), "baseline": base.dir or ".", "baseline_mean_s": speed.baseline_mean_ms / 1000}
    a.baseline_missed = [{"dir": g.dir, "runs": len(g.paths), "steps": g.steps,
                          "mean_val_loss": fmean(g.final_losses) if g.final_losses else None}
                         for g in f.baseline_missed]
    if par is not None and par.times_ms and times:
        ps = judge.Speed.unpaired(par.name, par.times_ms, times, kind="logged")
        a.parent_speedup = ps.to_json()
        if speed is None:
            speed = ps
    mine = min(rs, key=lambda x: x.number).time_s if rs else None
    if speed is None and prev_row is not None and prev_row.time_s and mine:
        # the board's own ranking: this row's official time against the previous row's
        speed = judge.Speed.unpaired(f"#{prev_row.number}'s official time (the README)", [prev_row.time_s * 1000],
                                     [mine * 1000], kind="logged")
        a.parent_speedup = speed.to_json()
    for g, gj in zip(f.groups, a.groups):
        if g is sub:
            gj["ok"] = v.ok
            continue
        done = [q for q in (_complete_only(p) for p in g.parsed) if q is not None]
        if not done:
            gj.update(ok=False, n=0, failed=["complete"])
            continue
        gv = verify.verify(done, track, rules=rules, parent=flags_ref)
        gj.update(ok=gv.ok, n=gv.summary["n"], mean_val_loss=number(gv.summary["mean_val_loss"]),
                  p_value=number(gv.summary["p_value"]),
                  mean_train_time_s=None if gv.summary["mean_train_time_ms"] is None
                  else gv.summary["mean_train_time_ms"] / 1000,
                  failed=sorted({c.name for r in gv.runs for c in r.checks if not c.ok}))
    a.flags += plausibility(v, f, track)
    d = judge.decide(v, rules, speed=speed, parent=parent_name)
    if rs:
        row = min(rs, key=lambda x: x.number)
        a.readme = {"row": row.number, "line": row.line, "time_s": row.time_s, "log_time_s": a.mean_train_time_s,
                    "difference_s": None if row.time_s is None or a.mean_train_time_s is None
                    else a.mean_train_time_s - row.time_s, "date": row.date, "title": row.description,
                    "contributors": row.contributors}
    return _finish(a, d, f, v, folder, par, rules, known)


def _finish(a: Audit, d: judge.Decision, f: layout.Folder, v, folder: Path, par, rules: dict, known) -> Audit:
    a.status = d.outcome
    a.decision = d.to_json()
    a.reasons = d.reasons
    for r in d.reasons:
        if r["check"] not in a.failed and r["check"] not in a.unknown:
            (a.unknown if r["unknown"] else a.failed)[r["check"]] = r["detail"]
    sub = f.submission
    a._layout = f
    a._known = Known(f"{'#' + str(a.number) + ' ' if a.number else ''}{folder.name}", a.number,
                     sub.sources or None,
                     [t for p in sub.parsed for t in p.trials if t.complete],
                     [t.final_val.time_ms for p in sub.parsed for t in p.trials if t.complete and t.final_val.time_ms],
                     rules["flags"] == "parent")
    return a


def _rel(file: str, folder: Path) -> str:
    p = Path(file.split("#")[0])
    try:
        rel = p.relative_to(folder).as_posix()
    except ValueError:
        rel = p.name
    return rel + (("#" + file.split("#", 1)[1]) if "#" in file else "")


def _unknowns(v, rules: dict, f: layout.Folder, a: Audit, ref, target: float) -> None:
    """Checks the logs cannot decide become unknown (judge: unverifiable), saying what is missing and what
    the folder attests instead: a p-value from too few logs, the systems-only waiver without the parent's
    curves, llm.c logs (no timing, no hardware, no code), a log without a GPU listing."""
    mean, n = v.summary["mean_val_loss"], v.summary["n"]
    attest = _attested(f, target)
    for r in v.runs:
        for c in r.checks:
            if c.ok:
                continue
            if r.log.era == logs.ERA_LLMC and c.name in ("complete", "timing", "hardware", "code", "flags"):
                c.unknown, c.detail = True, f"llm.c logs carry no {_LLMC_LACKS[c.name]}: {c.detail}"
            elif c.name == "hardware" and r.log.env.gpus is None:
                c.unknown = True
            elif c.name == "flags" and not r.log.sources:
                c.unknown = True
            elif c.name == "target" and mean is not None and mean <= target and \
                    "identical trajectory" not in c.detail and r.val_loss is not None:
                why = (f"{n} distinct run(s) cannot show p < {rules['alpha']}" if n < 2 else
                       f"p = {v.summary['p_value']:.3g} over {n} runs does not show p < {rules['alpha']}")
                if rules.get("systems_only") and not v.summary.get("p_value_waived") and ref is None:
                    why += "; the systems-only waiver needs the parent's val curves, which are not here"
                c.unknown, c.detail = True, why
                if attest and attest not in a.attests:
                    a.attests.append(attest)


_LLMC_LACKS = {"complete": "total step count", "timing": "train time", "hardware": "GPU listing",
               "code": "embedded code", "flags": "embedded code"}


def _attested(f: layout.Folder, target: float) -> str:
    """The README's per-run list (losses, with its own p-value) checked against the folder's logs."""
    rr = f.readme_runs
    losses = rr.get("losses")
    if not losses:
        return ""
    every = [x for g in f.groups for x in g.final_losses]
    unmatched = [x for x in losses if not any(abs(x - y) <= 5e-5 for y in every)]
    sub = f.submission.final_losses if f.submission else []
    others = sum(1 for x in losses if not any(abs(x - y) <= 5e-5 for y in sub))
    p = stats.t_test(losses, target).p_value if len(losses) >= 2 else None
    text = f"its README lists {len(losses)} run losses (mean {fmean(losses):.4f}" + \
        (f", p = {p:.3g}" if p is not None else "") + ")"
    if others:
        text += f"; {others} of them from runs of other code than the submission's"
    if unmatched:
        text += f"; {len(unmatched)} match no log in the folder ({', '.join(map(str, unmatched[:3]))})"
    return text


def plausibility(v, f: layout.Folder, track: dict) -> list[str]:
    """Worth a reviewer's look, not rules: near-duplicate runs, other hardware mixed in, loss spread far
    outside the track's history, time drift along the run order, README lists that disagree with the logs."""
    out = []
    runs = [r for r in v.runs if r.val_loss is not None and r.train_time_ms]
    for i, r in enumerate(runs):
        for q in runs[i + 1:]:
            if r.val_loss == q.val_loss and abs(r.train_time_ms - q.train_time_ms) <= 1.0:
                out.append(f"near-duplicate runs: {Path(r.file).name} and {Path(q.file).name} (same loss, "
                           f"times within 1 ms)")
    hw = {layout._gpus(r.log) for r in v.runs}
    other = [g for g in f.groups if g.role == "other-hardware"]
    if len(hw) > 1:
        out.append(f"runs on different hardware in one cohort: {', '.join(sorted(hw))}")
    elif other:
        out.append(f"{sum(len(g.paths) for g in other)} run(s) on other hardware in the folder "
                   f"({', '.join(sorted({g.gpus for g in other}))}): kept as evidence")
    sd = v.summary.get("std_val_loss")
    if sd is not None and sd > 0.004:  # the public history's spread is ~0.001
        out.append(f"val-loss spread {sd:.4f} is far outside the track's history (~0.001)")
    dated = sorted((r.log.env.date, r.train_time_ms) for r in runs if r.log.env.date)
    if len(dated) >= 4:
        xs = list(range(len(dated)))
        ys = [t for _, t in dated]
        mx, my = fmean(xs), fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        resid = [y - (my + slope * (x - mx)) for x, y in zip(xs, ys)]
        se = math.sqrt(sum(e * e for e in resid) / (len(xs) - 2) / sxx) if len(xs) > 2 else 0
        if se and abs(slope / se) > 3 and abs(slope) * len(xs) > 0.002 * my:
            out.append(f"train time drifts along the run order: {slope / 1000:+.3f} s per run ({len(xs)} runs)")
    rr = f.readme_runs
    if rr.get("times"):
        every = [t / 1000 for g in f.groups for t in g.final_times_ms]
        off = [x for x in rr["times"] if not any(abs(x - y) <= 0.0015 for y in every)]
        if off:
            out.append(f"README lists {len(off)} run time(s) no log shows: {', '.join(map(str, off[:3]))}")
    if rr.get("losses"):
        every = [x for g in f.groups for x in g.final_losses]
        off = [x for x in rr["losses"] if not any(abs(x - y) <= 5e-5 for y in every)]
        if off:
            out.append(f"README lists {len(off)} run loss(es) no log shows: {', '.join(map(str, off[:3]))}")
    return out


# ---- the reviewer's page: one folder -----------------------------------------------------------------------

def page(a: Audit, par: Known | None) -> dict:
    """What a reviewer reads besides the verdict: code against the parent (files, +/− lines), rule-3 flags,
    environment differences, and the val-loss curves near the target (for the plot)."""
    f: layout.Folder = a._layout
    sub = f.submission
    out = {"code": None, "env": [], "curves": {}, "target": None}
    ref_sources = par.sources if par and par.sources else (f.baseline.sources if f.baseline else None)
    ref_name = par.name if par and par.sources else (f"the {f.baseline.dir or '.'} baseline" if f.baseline else None)
    if ref_sources:
        import difflib
        files = []
        for name in sorted(set(sub.sources) | set(ref_sources)):
            x, y = ref_sources.get(name, ""), sub.sources.get(name, "")
            if x == y:
                continue
            plus = minus = 0
            for line in difflib.unified_diff(x.splitlines(), y.splitlines(), lineterm="", n=0):
                if line.startswith("+") and not line.startswith("+++"):
                    plus += 1
                elif line.startswith("-") and not line.startswith("---"):
                    minus += 1
            files.append({"file": name, "plus": plus, "minus": minus})
        out["code"] = {"against": ref_name, "files": files,
                       "flags": rulebook.extra_flags(sub.sources, ref_sources)}
        ref_parsed = par.parsed if par and par.sources else (f.baseline.parsed if f.baseline else [])
        out["env"] = env_differences(sub.parsed, ref_parsed)
    curves = {}
    for g in [sub] + ([f.baseline] if f.baseline else []):
        by_step: dict[int, list[float]] = {}
        for p in g.parsed:
            for t in p.trials:
                if t.complete:
                    for q in t.val:
                        if q.loss is not None and math.isfinite(q.loss):
                            by_step.setdefault(q.step, []).append(q.loss)
        curves[g.role + (f" {g.dir}" if g.dir else "")] = sorted((k, fmean(v)) for k, v in by_step.items())
    out["curves"] = curves
    return out


def env_differences(mine: list, theirs: list) -> list[str]:
    """torch, CUDA, driver and GPU differences between two sets of runs."""
    def facts(ps):
        out = {"torch": set(), "CUDA": set(), "driver": set(), "GPUs": set()}
        for p in ps:
            e = p.env
            out["torch"].add(e.torch or "?")
            out["CUDA"].add(e.cuda or "?")
            out["GPUs"].add(layout._gpus(p))
            out["driver"].add(driver(p) or "?")
        return out
    a, b = facts(mine), facts(theirs)
    return [f"{k}: {', '.join(sorted(b[k]))} → {', '.join(sorted(a[k]))}" for k in a if b[k] and a[k] != b[k]]


DRIVER = re.compile(r"Driver Version:\s*(\S+)")


def driver(p) -> str | None:
    """The NVIDIA driver version from a log's nvidia-smi header (read from the file, first 200 lines after code)."""
    try:
        with open(p.file.split("#")[0], encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if "Driver Version" in line:
                    m = DRIVER.search(line)
                    return m[1] if m else None
    except OSError:
        return None
    return None


# ---- for people -------------------------------------------------------------------------------------------

OUTCOME_STYLE = {"accepted": "green", "rejected": "red", "unverifiable": "yellow", "unreadable": "yellow"}


def _sp(sp: dict | None) -> str:
    if not sp:
        return "-"
    lo, hi = sp.get("lo"), sp.get("hi")
    return f"{sp['speedup']:.4f}×" + (f" [{lo:.4f}, {hi:.4f}]" if lo is not None else "")


def render(rep: dict, console) -> None:
    from rich.markup import escape

    if rep.get("single") and rep["folders"]:
        render_page(rep, console)
    else:
        for a in rep["folders"]:
            _render_folder(a, console, escape)
    for u in rep["unresolved_links"]:
        console.print(f"[yellow]README line {u['line']}[/] (record #{u['row']}): {escape(u['link'])} does not resolve "
                      f"in the tree", highlight=False)
    for s in rep["skipped"]:
        console.print(f"[yellow]skipped[/] {escape(layout.shown(s['folder']))}: {escape(s['reason'])}", highlight=False)
    console.print(summary_line(rep), highlight=False, soft_wrap=True)  # one line: what scripts grep


def summary_line(rep: dict) -> str:
    c = rep["summary"]
    line = (f"{len(rep['folders'])} record folder(s): {c['accepted']} accepted, {c['rejected']} rejected by rule, "
            f"{c['unverifiable']} unverifiable, {c['unreadable']} unreadable")
    ag = rep.get("agreement")
    if ag:
        rules = ", ".join(f"{k}: {v}" for k, v in sorted(ag["by_rule"].items()))
        line += (f"; README: {ag['confirmed']} records confirmed, {ag['disputed']} disputed"
                 + (f" ({rules})" if rules else "") + f", {ag['unverifiable']} unverifiable; "
                 f"{ag['not_in_table']} folders not in the table (not records)")
        if rep["unresolved_links"]:
            line += f"; {len(rep['unresolved_links'])} README link(s) unresolved"
    return line


def _say(console, text: str) -> None:
    """One line of the report (rich markup), wrapped at 80 columns, continuations indented."""
    from rich.text import Text

    for part in text.split("\n"):
        t = Text.from_markup(part)
        lines = t.wrap(console, 80)
        for line in lines:
            line.rstrip()
        console.print(lines[0] if lines else t, highlight=False, soft_wrap=True)
        if len(lines) > 1:
            rest = t[len(lines[0].plain):]
            rest = rest[len(rest.plain) - len(rest.plain.lstrip()):]
            for line in rest.wrap(console, 74):
                line.rstrip()
                console.print(Text("      ") + line, highlight=False, soft_wrap=True)


def _render_folder(a: dict, console, escape) -> None:
    name = (f"#{a['number']} " if a["number"] else "") + a["folder"]
    style = OUTCOME_STYLE[a["status"]]
    extra = "" if a.get("in_table") is not False else " (not in the table: not a record)"
    _say(console, f"[bold]{escape(layout.shown(name))}[/] [{style}]{a['status']}[/]{extra}")
    if a["submission"] is None:
        _say(console, f"  {escape(a['reason'])}")
        return
    sub = a["submission"]
    _say(console, f"  rules: {escape(a['epoch'] or '-')}; parent: {escape(a['parent'] or 'none')}")
    _say(console, f"  submission {escape(sub['dir'] or '.')} ({sub['runs']} runs): {escape(sub['how'])}")
    p = "-" if a["p_value"] is None else f"{a['p_value']:.2g}" + (" waived" if a["p_value_waived"] else "")
    loss = "-" if a["mean_val_loss"] is None else f"{a['mean_val_loss']:.4f} (p {p})"
    tt = "-" if a["mean_train_time_s"] is None else f"{a['mean_train_time_s']:.3f} s"
    sp = f"; {_sp(a['speedup'])} over {escape(a['speedup']['baseline'])}" if a["speedup"] else ""
    _say(console, f"  val {loss}; time {tt}{sp}")
    for m in a["baseline_missed"]:
        _say(console, f"  baseline {escape(m['dir'] or '.')} ({m['runs']} runs) misses the target "
                      f"({m['mean_val_loss']:.4f}): not used for the speedup" if m["mean_val_loss"] is not None else
                      f"  baseline {escape(m['dir'] or '.')} has no complete run")
    others = [g for g in a["groups"] if g["role"] != "submission"]
    if others:
        _say(console, "  other cohorts: " + escape("; ".join(
            f"{g['role']} {g['dir'] or '.'} ({g['runs']}, {g['steps']} steps): "
            + ("ok" if g.get("ok") else "fails " + ", ".join(g.get("failed", [])) if "ok" in g else "not judged")
            for g in others)))
    for r in a["reasons"]:
        tag = "not shown" if r["unknown"] else "broken"
        _say(console, f"  [{'yellow' if r['unknown'] else 'red'}]{tag}[/] {escape(r['rule'])}: "
                      f"{escape(r['detail'][:300])}")
    for x in a["attests"]:
        _say(console, f"  the folder attests: {escape(x)}")
    for x in a["flags"] + a["incomplete"]:
        _say(console, f"  [yellow]flag[/] {escape(x)}")
    rm = a["readme"]
    if rm and rm["time_s"] is not None:
        diff = "" if rm["difference_s"] is None else f"; logs {rm['difference_s']:+.2f} s"
        _say(console, f"  README #{rm['row']}: {rm['time_s']:.2f} s (official){diff}")


def render_page(rep: dict, console) -> None:
    """The reviewer's page for one folder, readable at 80 columns."""
    from rich.markup import escape
    from rich.table import Table

    a = rep["folders"][0]
    _render_folder(a, console, escape)
    if a["submission"] is None:
        return
    t = Table(title="runs of the submission", show_edge=False, pad_edge=False)
    for col in ("file", "run id", "val", "time (s)", ""):
        t.add_column(col, overflow="fold")
    for r in a["runs"]:
        t.add_row(escape(layout.shown(r["file"], 34)), escape(r["run_id"][:12]),
                  "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}",
                  "-" if r["train_time_s"] is None else f"{r['train_time_s']:.3f}", "" if r["ok"] else "✗")
    console.print(t)
    _say(console, stats_text(a))
    pg = rep.get("page") or {}
    code = pg.get("code")
    if code:
        files = ", ".join(f"{x['file']} +{x['plus']}/−{x['minus']}" for x in code["files"]) or "identical"
        _say(console, f"code against {escape(code['against'])}: {escape(files)}")
        _say(console, "rule-3 flags not in it: " + (escape(", ".join(f"{k} ({v})" for k, v in code["flags"].items()))
                                                    or "none"))
    for e in pg.get("env") or []:
        _say(console, f"environment: {escape(e)}")
    for line in plot(pg.get("curves") or {}, load_track(rep["track"])["target"]):
        console.print(escape(line), highlight=False)


def stats_text(a: dict) -> str:
    """The summary once: mean ± std, the 95 % CI of the time, p; the speedups with their intervals."""
    lines = []
    if a["mean_val_loss"] is not None:
        sd = f" ± {a['std_val_loss']:.4f}" if a["std_val_loss"] is not None else ""
        p = "-" if a["p_value"] is None else f"{a['p_value']:.3g}"
        lines.append(f"val loss {a['mean_val_loss']:.4f}{sd} over {a['n']} runs, p = {p}"
                     + (" (waived: systems only)" if a["p_value_waived"] else ""))
    if a["mean_train_time_s"] is not None:
        ci = a["train_time_ci95_s"]
        lines.append(f"train time {a['mean_train_time_s']:.3f} s" + (f" (95% CI {ci[0]:.3f}–{ci[1]:.3f} s)" if ci else ""))
    if a["speedup"]:
        lines.append(f"speedup over the baseline cohort {a['speedup']['baseline']}: {_sp(a['speedup'])}")
    if a["parent_speedup"]:
        lines.append(f"speedup over the parent's logged times ({a['parent']}): {_sp(a['parent_speedup'])}")
    return "\n".join(lines)


def plot(curves: dict, target: float, width: int = 60, height: int = 10) -> list[str]:
    """A zoomed val-loss plot (text, 80 columns): the last part of each curve near the target, the target
    as a line of dots."""
    pts = {k: v for k, v in curves.items() if v}
    if not pts:
        return []
    last = max(s for v in pts.values() for s, _ in v)
    lo_step = int(last * 0.75)
    zoom = {k: [(s, y) for s, y in v if s >= lo_step] for k, v in pts.items()}
    ys = [y for v in zoom.values() for _, y in v] + [target]
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y1 = y0 + 1e-3
    grid = [[" "] * width for _ in range(height)]

    def cell(s, y):
        c = min(width - 1, int((s - lo_step) / max(1, last - lo_step) * (width - 1)))
        r = min(height - 1, int((y1 - y) / (y1 - y0) * (height - 1)))
        return r, c
    tr = cell(lo_step, target)[0]
    for c in range(width):
        grid[tr][c] = "·"
    marks = "*o+x"
    legend = []
    for i, (k, v) in enumerate(zoom.items()):
        m = marks[i % len(marks)]
        legend.append(f"{m} {k}")
        for s, y in v:
            r, c = cell(s, y)
            grid[r][c] = m
    out = [f"val loss, steps {lo_step}–{last} (· = target {target})"]
    for r, row in enumerate(grid):
        y = target if r == tr else y1 - r * (y1 - y0) / (height - 1)
        out.append(f"{y:8.4f} |" + "".join(row))
    out.append("  " + "; ".join(legend))
    return out


def markdown(rep: dict) -> str:
    """statistics.md for one folder: what submitters build by hand."""
    a = rep["folders"][0]
    lines = [f"# {a['folder']}", "", f"Outcome: **{a['status']}** (rules: {a['epoch']}; parent: {a['parent'] or 'none'})", "",
             "| file | run id | val loss | train time (s) |", "|---|---|---|---|"]
    for r in a["runs"]:
        lines.append(f"| {r['file']} | {r['run_id']} | {'-' if r['val_loss'] is None else format(r['val_loss'], '.4f')} | "
                     f"{'-' if r['train_time_s'] is None else format(r['train_time_s'], '.3f')} |")
    lines += ["", stats_text(a).replace("\n", "  \n"), ""]
    for r in a["reasons"]:
        lines.append(f"- {'not shown' if r['unknown'] else 'broken'}: {r['rule']}: {r['detail']}")
    return "\n".join(lines) + "\n"
