"""Record folders as the community lays them out: which runs are the submission, and what the others are.

A public record folder is rarely one submission. It holds the candidate's runs and the runs it was
timed against (`this_pr/` beside `baseline/`), ablations, runs at other step counts, single-GPU runs,
re-times. Here the folder's logs are grouped by directory, embedded code, hardware and total steps;
one group is chosen as the submission from the evidence the folder gives, strongest first:

  1. a log the caller was pointed to (the public README's record table links it: `speedrun audit --readme`)
  2. the folder's own script: a .py file in it equal to a group's embedded train_gpt.py
  3. the folder's README naming a log file
  4. directory names (`this_pr/`, `record/`, … against `baseline/`, `baseline_retime/`, …)
  5. the parent record's code: a group that runs it is a re-time of the parent, so a baseline
  6. the folder's README saying which step count is the control and which the change
  7. the most runs on the track's hardware (then the fewest steps: a record usually cuts steps)

and the choice says which rule decided it. Every other group keeps a role (baseline, re-time,
ablation, other hardware) and the reason for it. Words are matched as whole tokens of names, so
the rules are general: no folder or record name appears here.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import logs
from harness.errors import InputError
from harness.files import sha256_text

DATED = re.compile(r"^(\d{4}-\d{2}-\d{2}|\d{8})[_-](.*)$", re.DOTALL)
LOG_EXT = (".txt", ".log")

# Whole words in directory and file names, and in README lines (lower-cased, split on non-letters).
SUBMISSION_WORDS = {"this", "pr", "record", "records", "candidate", "new", "ours", "proposed", "improved", "h1",
                    "change", "treatment"}
BASELINE_WORDS = {"baseline", "baselines", "base", "control", "old", "before", "reference", "retime", "parent",
                  "previous", "prior", "original", "h0", "wr", "current"}
STEPS_MENTION = re.compile(r"\b(\d{3,6})\s*steps?\b", re.IGNORECASE)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+[0-9]?|[0-9]+", text.lower().replace("_", " ").replace("-", " ")))


def folder_date(name: str) -> tuple[str | None, str]:
    """(YYYY-MM-DD or None, the rest of the name) from `YYYY-MM-DD_Name`, `YYYY-MM-DD-Name` or `YYYYMMDD_Name`."""
    m = DATED.match(name)
    if not m:
        return None, name
    d = m[1] if "-" in m[1] else f"{m[1][:4]}-{m[1][4:6]}-{m[1][6:]}"
    try:
        dt.date.fromisoformat(d)
    except ValueError:
        return None, name
    return d, m[2]


@dataclass
class Group:
    """Runs of one directory, code, hardware and step count."""
    dir: str                       # relative to the record folder ("" for the folder itself)
    code_sha256: str | None        # over every embedded file
    gpus: str                      # "8× NVIDIA H100 80GB HBM3", "cpu", or "?"
    steps: int | None
    paths: list[Path] = field(default_factory=list)
    parsed: list[logs.ParsedLog] = field(default_factory=list)
    role: str = ""                 # submission | baseline | re-time | ablation | other-hardware
    why: str = ""

    @property
    def name(self) -> str:
        return f"{self.dir or '.'} ({len(self.paths)} run(s), {self.steps or '?'} steps, {self.gpus}, code " \
               f"{(self.code_sha256 or '-')[:8]})"

    @property
    def main_code(self) -> str | None:
        return next((p.sources.get(logs.MAIN_FILE) for p in self.parsed if p.sources), None)

    @property
    def sources(self) -> dict[str, str]:
        return next((p.sources for p in self.parsed if p.sources), {})

    def to_json(self, folder: Path | None = None) -> dict:
        return {"dir": self.dir, "role": self.role, "why": self.why, "runs": len(self.paths), "steps": self.steps,
                "gpus": self.gpus, "code_sha256": self.code_sha256,
                "files": [str(p.relative_to(folder)) if folder else str(p) for p in self.paths]}


@dataclass
class Folder:
    path: Path
    date: str | None
    title: str
    groups: list[Group]
    submission: Group | None
    how: str                                   # which rule chose the submission
    skipped: list[str] = field(default_factory=list)

    def by_role(self, role: str) -> list[Group]:
        return [g for g in self.groups if g.role == role]


# ---- reading a folder ---------------------------------------------------------------------------------

def run_logs(folder: Path) -> tuple[list[tuple[Path, logs.ParsedLog]], list[str]]:
    """Every readable run log under `folder` (sorted, symlinks never followed), parsed once, and why
    other .txt/.log files were passed over."""
    found, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(LOG_EXT):
                continue
            p = Path(dirpath) / name
            rel = shown(str(p.relative_to(folder)))
            if p.is_symlink() or not p.is_file():
                skipped.append(f"{rel}: a symlink or not a plain file")
                continue
            try:
                parsed = logs.parse_file(p)
            except InputError as e:
                skipped.append(f"{rel}: {e}")
                continue
            if not parsed.trials:
                skipped.append(f"{rel}: no step lines (not a run log)")
                continue
            found.append((p, parsed))
    return found, skipped


def shown(name: str, width: int = 80) -> str:
    """A name from outside, safe to print: control characters escaped, length capped."""
    s = name.encode("unicode_escape").decode("ascii")
    return s if len(s) <= width else s[:width - 1] + "…"


def _gpus(p: logs.ParsedLog) -> str:
    g = p.env.gpus
    if g is not None:
        return f"{g.count}× {g.model or '?'}"
    return "cpu" if p.env.cpu or p.env.speedrun.get("device") == "cpu" else "?"


def _code(p: logs.ParsedLog) -> str | None:
    return sha256_text("\0".join(f"{k}\0{v}" for k, v in sorted(p.sources.items()))) if p.sources else None


def group(folder: Path, found: list[tuple[Path, logs.ParsedLog]]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for path, p in found:
        rel_dir = path.parent.relative_to(folder).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        steps = p.trials[-1].total_steps if p.trials else None
        key = (rel_dir, _code(p), _gpus(p), steps)
        g = groups.setdefault(key, Group(rel_dir, key[1], key[2], steps))
        g.paths.append(path)
        g.parsed.append(p)
    return sorted(groups.values(), key=lambda g: (g.dir, -len(g.paths), g.steps or 0, g.code_sha256 or ""))


def on_hardware(g: Group, track: dict) -> bool:
    hw = track["hardware"]
    if hw.get("accelerator") == "cpu":
        return g.gpus == "cpu"
    m = re.match(r"(\d+)× (.*)", g.gpus)
    return bool(m) and int(m[1]) == hw["count"] and re.search(rf"\b{re.escape(hw['model'])}\b", m[2]) is not None


def read_folder(path: str | Path, track: dict, *, linked: set[str] | None = None,
                parent_code: str | None = None) -> Folder:
    """The folder's groups, its submission and every group's role. `linked`: file names (or paths
    relative to the folder) a record table points at; `parent_code`: the parent record's train_gpt.py."""
    folder = Path(path)
    date, rest = folder_date(folder.name)
    title = " ".join(re.sub(r"[\x00-\x1f\x7f]+", " ", rest.replace("_", " ")).split())[:100] or "untitled"
    found, skipped = run_logs(folder)
    groups = group(folder, found)
    f = Folder(folder, date, title, groups, None, "", skipped)
    if not groups:
        f.how = "no run logs"
        return f
    for g in groups:
        if not on_hardware(g, track):
            g.role = "other-hardware"
            hw = track["hardware"]
            want = "CPU" if hw.get("accelerator") == "cpu" else f"{hw['count']}× {hw['model']}"
            g.why = f"ran on {g.gpus}; the track requires {want}"
    pool = [g for g in groups if not g.role]
    caveat = ""
    if not pool:  # judged anyway (it fails the hardware check): a folder's history is kept, not dropped
        pool, caveat = groups, "; no group ran on the track's hardware"
        for g in pool:
            g.role = ""
    readme = _readme(folder)
    sub, f.how = _choose(folder, pool, readme, linked or set(), parent_code)
    if caveat:
        f.how = f.how.replace(" on the track's hardware", "") + caveat
    f.submission = sub
    sub.role = "submission"
    sub.why = f.how
    for g in pool:
        if g is not sub:
            g.role, g.why = _role(g, sub, pool, readme, parent_code)
    return f


def _readme(folder: Path) -> str:
    for name in ("README.md", "readme.md", "README.txt", "README"):
        p = folder / name
        if p.is_file() and not p.is_symlink():
            try:
                return p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return ""
    return ""


def _pick(pool: list[Group], hits: list[Group], how: str) -> tuple[Group | None, str]:
    if not hits:
        return None, ""
    best = max(hits, key=lambda g: len(g.paths))
    more = f" ({len(hits)} groups match; the one with the most runs)" if len(hits) > 1 else ""
    return best, how + more


def _choose(folder: Path, pool: list[Group], readme: str, linked: set[str], parent_code: str | None):
    if len(pool) == 1:
        return pool[0], "the only group of runs on the track's hardware"
    rules = []
    if linked:
        rules.append(([g for g in pool if any(p.name in linked or p.relative_to(folder).as_posix() in linked
                                              for p in g.paths)], "the record table links one of its logs"))
    scripts = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted(folder.glob("*.py"))
               if p.is_file() and not p.is_symlink()}
    if scripts:
        rules.append(([g for g in pool if g.main_code is not None and g.main_code in scripts.values()],
                      f"its code is the folder's own {', '.join(scripts)}"))
    if readme:
        rules.append(([g for g in pool if any(p.name in readme or p.stem in readme for p in g.paths)],
                      "the folder's README names one of its logs"))
    rules.append(([g for g in pool if words(g.dir) & SUBMISSION_WORDS and not words(g.dir) & BASELINE_WORDS],
                  "its directory's name says it is the change"))
    not_base = [g for g in pool if not (words(g.dir) & BASELINE_WORDS)]
    if len(not_base) < len(pool):
        rules.append((not_base, "the other directories' names say they are baselines"))
    if parent_code is not None:
        not_parent = [g for g in pool if g.main_code != parent_code]
        if len(not_parent) < len(pool):
            rules.append((not_parent, "the other groups run the parent record's code (re-times of the parent)"))
    if readme:
        said = _readme_steps(readme)
        change = [g for g in pool if said.get(g.steps) == "change"]
        rules.append((change, "the folder's README calls its step count the change"))
        not_control = [g for g in pool if said.get(g.steps) != "control"]
        if len(not_control) < len(pool):
            rules.append((not_control, "the folder's README calls the other step counts the control"))
    for hits, how in rules:
        if hits and len(hits) < len(pool):  # evidence that singles out some groups, not all
            return _pick(pool, hits, how)
    most = max(len(g.paths) for g in pool)
    tied = [g for g in pool if len(g.paths) == most]
    best = min(tied, key=lambda g: (g.steps or 0))
    return best, ("the most runs on the track's hardware" if len(tied) == 1 else
                  "the most runs on the track's hardware, then the fewest steps (no other evidence in the folder)")


def _readme_steps(readme: str) -> dict[int, str]:
    """Step counts the README mentions, each as "control" or "change" by the words on its line."""
    out: dict[int, str] = {}
    for line in readme.splitlines():
        w = words(line)
        base, change = bool(w & BASELINE_WORDS), bool(w & SUBMISSION_WORDS)
        if base == change:  # neither, or both: the line does not say which
            continue
        kind = "control" if base else "change"
        for m in STEPS_MENTION.finditer(line):
            out.setdefault(int(m[1]), kind)
    return out


def _role(g: Group, sub: Group, pool: list[Group], readme: str, parent_code: str | None) -> tuple[str, str]:
    same_code = g.code_sha256 == sub.code_sha256
    if same_code and g.steps == sub.steps:
        return "re-time", "the submission's code and steps, in another directory"
    if same_code:
        return "ablation", f"the submission's code at {g.steps} steps (it ran {sub.steps})"
    if words(g.dir) & BASELINE_WORDS:
        return "baseline", "its directory's name says it is a baseline"
    if parent_code is not None and g.main_code == parent_code:
        return "baseline", "it runs the parent record's code"
    if readme and _readme_steps(readme).get(g.steps) == "control":
        return "baseline", f"the folder's README calls {g.steps} steps the control"
    others = [x for x in pool if x is not sub and x.code_sha256 != sub.code_sha256]
    if len(others) == 1:
        return "baseline", "the folder's only other code: taken as what the submission was timed against"
    return "ablation", "other code than the submission's"
