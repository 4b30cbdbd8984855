"""`speedrun audit TREE [--readme README.md]`: the public board judged against its own logs, nothing written.

For each dated record folder of TREE (in record order when the README's table gives numbers, else by
date): the submission group and how it was chosen (harness/layout.py), its runs' mean val loss, p-value
and train time, the claimed speedup over the folder's baseline runs with its interval, the verdict under
the rules in force on the record's date (harness/rules.py) with the evidence of every failing check,
and every other group's own verdict. With `--readme`, each row of the README's record table (number,
time, date, log links) is set beside what its linked logs say: the README's time is the official
(re-)timing, so the difference is reported, not failed on; a link that does not resolve in TREE is
reported. The last line counts records accepted, rejected by a rule, and unreadable.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from harness import layout, stats, verify
from harness import rules as rulebook
from harness.errors import InputError
from harness.files import number
from harness.importer import dated_folders
from harness.track import load_track

ROW = re.compile(r"^\|?\s*(\d+)\s*\|(.*)$")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
README_TIME = re.compile(r"([\d.]+)\s*(minutes?|mins?|seconds?|secs?|s|hours?|h)\b", re.IGNORECASE)
README_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})$")


# ---- the README's record table ----------------------------------------------------------------------------

@dataclass
class Row:
    number: int
    time_s: float | None
    description: str
    date: str | None
    logs: list[str]        # link targets of the Log column named "log"
    line: int
    note: str = ""         # "not a new record" rows (re-timings) say so


def _seconds(text: str) -> float | None:
    m = README_TIME.search(text)
    if not m:
        return None
    x, unit = float(m[1]), m[2].lower()
    return x * 60 if unit.startswith("m") else x * 3600 if unit.startswith("h") else x


def _date(text: str) -> str | None:
    m = README_DATE.match(text.strip())
    if not m:
        return None
    year = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
    try:
        return dt.date(year, int(m[1]), int(m[2])).isoformat()
    except ValueError:
        return None


def read_table(path: str | Path) -> list[Row]:
    """Rows of the README's record table: `# | time | description | date | log | contributors`."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"--readme {path}: cannot read ({e.strerror})") from None
    rows = []
    for k, line in enumerate(text.splitlines(), 1):
        m = ROW.match(line.strip())
        if not m:
            continue
        cells = [c.strip() for c in m[2].split("|")]
        if len(cells) < 4:
            continue
        time_cell, desc, date_cell, log_cell = cells[:4]
        links = [url for name, url in LINK.findall(log_cell) if name.strip().lower() == "log"]
        rows.append(Row(int(m[1]), _seconds(time_cell), LINK.sub(r"\1", desc), _date(date_cell), links, k,
                        " ".join(cells[4:5])[:120] if "not a new record" in line.lower() else ""))
    if not rows:
        raise InputError(f"--readme {path}: no record-table rows (lines like `12 | 5.03 minutes | … | 11/19/24 | "
                         f"[log](records/…) | …`)")
    return rows


def resolve(link: str, tree: Path) -> Path | None:
    """A README link (`records/track_1_short/<folder>/<file>`, or a GitHub URL to it) as a path in `tree`:
    the longest tail of its path that exists there."""
    parts = [p for p in unquote(urlparse(link).path).split("/") if p and p not in (".", "..")]
    for i in range(len(parts)):
        p = tree.joinpath(*parts[i:])
        if p.exists() and p.resolve().is_relative_to(tree.resolve()):
            return p
    return None


# ---- judging the tree ---------------------------------------------------------------------------------------

@dataclass
class Audit:
    folder: str
    date: str | None
    number: int | None = None
    epoch: str | None = None
    status: str = "unreadable"             # accepted | rejected | unreadable
    submission: dict | None = None         # {dir, runs, how}
    n: int = 0
    mean_val_loss: float | None = None
    p_value: float | None = None
    p_value_waived: bool = False
    mean_train_time_s: float | None = None
    speedup: dict | None = None            # over the folder's baseline group
    failed: dict = field(default_factory=dict)   # check → evidence (the first failing run's detail)
    parent: str | None = None
    groups: list[dict] = field(default_factory=list)
    readme: dict | None = None             # {row, time_s, log_time_s, difference_s, links, unresolved}
    reason: str = ""


def audit_tree(tree: str | Path, track_name: str, readme: str | None = None) -> dict:
    base = Path(tree)
    if not base.is_dir():
        raise InputError(f"{tree}: not a folder (pass e.g. modded-nanogpt/records/track_1_short)")
    track = load_track(track_name)
    rows = read_table(readme) if readme else []
    dated, skipped = dated_folders(base)
    by_folder: dict[str, list[Row]] = {}
    unresolved = []
    for r in rows:
        for link in r.logs:
            p = resolve(link, base)
            if p is None:
                unresolved.append({"row": r.number, "line": r.line, "link": link})
                continue
            top = p.relative_to(base).parts[0]
            by_folder.setdefault(top, []).append(r)
    number_of = {name: min(x.number for x in rs) for name, rs in by_folder.items()}
    order = sorted(dated, key=lambda e: (number_of.get(e[1].name, 10 ** 9), e[0], e[1].name)) if rows else dated

    out, prev = [], None  # prev: (number, name, Reference) of the last accepted record
    for date, folder in order:
        rs = by_folder.get(folder.name, [])
        num = number_of.get(folder.name)
        when = next((x.date for x in rs if x.date), None) or date
        a = Audit(folder.name, when, num)
        parent = prev
        if rows and num is not None and (prev is None or prev[0] not in (num - 1, num)) and num > 1:
            # the README's previous record is not in this tree: its code is unknown, rule 3 cannot be checked
            parent = (num - 1, f"#{num - 1}", verify.Reference(f"record #{num - 1}, not in the tree", None, []))
        a.parent = parent[1] if parent else None
        linked = {resolve(link, base).relative_to(folder).as_posix() for x in rs for link in x.logs
                  if resolve(link, base) is not None and resolve(link, base).is_relative_to(folder)}
        f = layout.read_folder(folder, track, linked=linked, parent_code=(parent[2].sources or {}).get("train_gpt.py")
                               if parent else None)
        a.groups = [g.to_json(folder) for g in f.groups]
        if f.submission is None:
            a.reason = f.how
            out.append(a)
            continue
        sub = f.submission
        a.submission = {"dir": sub.dir, "runs": len(sub.paths), "how": f.how}
        rules = rulebook.at(track, when, num)
        a.epoch = rules["name"]
        base_groups = f.by_role("baseline")
        baseline = verify.Reference(f"the {base_groups[0].dir or 'flat'} baseline runs", base_groups[0].sources,
                                    [t for p in base_groups[0].parsed for t in p.trials]) if base_groups else None
        v = verify.verify(sub.parsed, track, rules=rules, parent=parent[2] if parent else None, baseline=baseline)
        s = v.summary
        a.n, a.mean_val_loss, a.p_value = s["n"], number(s["mean_val_loss"]), number(s["p_value"])
        a.p_value_waived = s.get("p_value_waived", False)
        a.mean_train_time_s = None if s["mean_train_time_ms"] is None else s["mean_train_time_ms"] / 1000
        for r in v.runs:
            for c in r.checks:
                if not c.ok:
                    a.failed.setdefault(c.name, f"{Path(r.file).relative_to(folder) if Path(r.file).is_absolute() else r.file}: {c.detail}")
        a.status = "accepted" if v.ok else "rejected"
        for g, gj in zip(f.groups, a.groups):
            if g is sub:
                gj["ok"] = v.ok
                continue
            gv = verify.verify(g.parsed, track, rules=rules, parent=parent[2] if parent else None)
            gj.update(ok=gv.ok, n=gv.summary["n"], mean_val_loss=number(gv.summary["mean_val_loss"]),
                      p_value=number(gv.summary["p_value"]),
                      failed=sorted({c.name for r in gv.runs for c in r.checks if not c.ok}))
        times = [r.train_time_ms for r in v.runs if r.train_time_ms]
        if base_groups and times:
            bt = [t.final_val.time_ms for p in base_groups[0].parsed for t in p.trials
                  if t.final_val and t.final_val.time_ms]
            if bt:
                sp = stats.speedup_unpaired(bt, times)
                a.speedup = {"baseline": base_groups[0].dir or ".", "speedup": sp.estimate, "ci95": [sp.lo, sp.hi],
                             "baseline_mean_s": sum(bt) / len(bt) / 1000, "runs": [len(bt), len(times)]}
        if rs:
            row = min(rs, key=lambda x: x.number)
            a.readme = {"row": row.number, "line": row.line, "time_s": row.time_s, "log_time_s": a.mean_train_time_s,
                        "difference_s": None if row.time_s is None or a.mean_train_time_s is None
                        else a.mean_train_time_s - row.time_s, "date": row.date}
        out.append(a)
        if a.status == "accepted":
            prev = (num, folder.name, verify.Reference(f"{'#' + str(num) + ' ' if num else ''}{folder.name}",
                                                       sub.sources, [t for p in sub.parsed for t in p.trials]))
    counts = {k: sum(a.status == k for a in out) for k in ("accepted", "rejected", "unreadable")}
    return {"tree": str(base), "track": track_name, "readme": readme, "folders": [vars(a) for a in out],
            "skipped": [vars(i) for i in skipped], "unresolved_links": unresolved,
            "rows": len(rows), "summary": counts}


# ---- for people -------------------------------------------------------------------------------------------

def render(rep: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"speedrun audit {escape(rep['tree'])} --track {rep['track']}", show_lines=True)
    for col in ("record", "rules", "submission (how chosen)", "runs", "val loss (p)", "train time", "speedup vs baseline",
                "verdict", "README"):
        t.add_column(col, overflow="fold")
    for a in rep["folders"]:
        name = (f"#{a['number']} " if a["number"] else "") + a["folder"]
        if a["submission"] is None:
            t.add_row(escape(layout.shown(name)), "-", escape(a["reason"]), "-", "-", "-", "-", "[yellow]unreadable[/]", "-")
            continue
        sub = a["submission"]
        p = "-" if a["p_value"] is None else f"{a['p_value']:.2g}" + (" waived" if a["p_value_waived"] else "")
        loss = "-" if a["mean_val_loss"] is None else f"{a['mean_val_loss']:.4f} ({p})"
        tt = "-" if a["mean_train_time_s"] is None else f"{a['mean_train_time_s']:.3f} s"
        sp = a["speedup"]
        spt = "-" if not sp else f"{sp['speedup']:.4f}×" + (f" [{sp['ci95'][0]:.4f}, {sp['ci95'][1]:.4f}]"
                                                             if sp["ci95"][0] is not None else "")
        verdict = "[green]accepted[/]" if a["status"] == "accepted" else "[red]rejected[/]: " + escape(
            "; ".join(f"{k}: {v}" for k, v in a["failed"].items()))
        others = [g for g in a["groups"] if g["role"] != "submission"]
        if others:
            verdict += escape("\n" + "; ".join(f"{g['role']} {g['dir'] or '.'} ({g['runs']}): "
                                               + ("ok" if g.get("ok") else "fails " + ", ".join(g.get("failed", [])))
                                               for g in others))
        rm = a["readme"]
        rmt = "-" if not rm else (f"{rm['time_s']:.2f} s; logs {'+' if (rm['difference_s'] or 0) >= 0 else ''}"
                                  f"{rm['difference_s']:.2f} s" if rm["difference_s"] is not None else "no time")
        t.add_row(escape(layout.shown(name)), escape(a["epoch"] or "-"),
                  escape(f"{sub['dir'] or '.'}: {sub['how']}"), str(a["n"]), loss, tt, spt, verdict, rmt)
    console.print(t)
    for u in rep["unresolved_links"]:
        console.print(f"[yellow]README line {u['line']}[/] (record #{u['row']}): {escape(u['link'])} does not resolve "
                      f"in the tree", highlight=False)
    for s in rep["skipped"]:
        console.print(f"[yellow]skipped[/] {escape(layout.shown(s['folder']))}: {escape(s['reason'])}", highlight=False)
    c = rep["summary"]
    console.print(f"{len(rep['folders'])} record folder(s): {c['accepted']} accepted, {c['rejected']} rejected by "
                  f"rule, {c['unreadable']} unreadable" + (f"; {len(rep['unresolved_links'])} README link(s) unresolved"
                                                           if rep["readme"] else ""), highlight=False)
