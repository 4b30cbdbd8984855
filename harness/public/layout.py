"""Record folders as the community lays them out: which runs are the submission, and what the others are.

A public record folder is rarely one submission. It holds the candidate's runs and the runs it was
timed against, ablations, earlier versions of the change, runs at other step counts, single-GPU runs,
re-times, console captures and per-run `result.json` files. Runs are grouped into cohorts by what they
ran, wherever their files sit: normalised embedded code (comments, docstrings, annotations and
whitespace do not count), total steps, hardware, and the role words of their path (a `pilot/` and a
`certify/` phase of one script are two cohorts; `01_candidate/` and `02_candidate/` are one). Files
beside a log that are not runs (a console capture of a run whose log is there, `result.json`) are
evidence: read, and checked against the log they belong to.

The submission is chosen from the evidence the folder gives, strongest first, each rule saying so:

  1. named: a log or directory the record table links; the folder's own script; a line of the folder's
     README that says what was submitted or claimed (a directory, a version, a log); a log the README
     names; the step count the README calls the change
  2. role words of directory and file names (`this_pr/`, `candidate`, `record` against `baseline`,
     `control`, `retime`, `accepted`, …; a word in a file name counts)
  3. the newest code that differs from the parent's
and among groups the evidence leaves tied: the highest version (`v3` over `v2`), then more runs.

The baseline is a cohort that runs the parent's code (or whose names say it is a baseline) and meets
the target; one that misses the target is reported, never used for a speedup. Words are matched as
whole tokens of names, so the rules are general: no folder or record name appears here.
"""
from __future__ import annotations

import ast
import datetime as dt
import json
import math
import os
import re
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from harness.judge import logs
from harness.core.errors import InputError
from harness.core.files import sha256_hasher, sha256_text

DATED = re.compile(r"^(\d{4}-\d{2}-\d{2}|\d{8})[_-](.*)$", re.DOTALL)
LOG_EXT = (".txt", ".log")

# Whole words of directory and file names, and of README lines (lower-cased; letters and digits split).
SUBMISSION_WORDS = {"this", "pr", "record", "records", "candidate", "candidates", "new", "ours", "proposed",
                    "improved", "change", "treatment", "certify", "certified", "claim", "submission", "submitted"}
BASELINE_WORDS = {"baseline", "baselines", "base", "control", "controls", "old", "before", "reference", "retime",
                  "retimed", "parent", "previous", "prior", "original", "wr", "current", "accepted"}
ABLATION_WORDS = {"ablation", "ablations", "pilot", "sweep", "variant", "variants", "explore", "exploration", "short",
                  "long", "debug", "test"}
ROLE_WORDS = SUBMISSION_WORDS | BASELINE_WORDS | ABLATION_WORDS
SAYS_SUBMITTED = {"submit", "submits", "submitted", "submitting", "submission", "claim", "claims", "claimed"}
STEPS_MENTION = re.compile(r"\b(\d{3,6})\s*steps?\b", re.IGNORECASE)
VERSION = re.compile(r"(?<![a-z])v(\d{1,3})(?![a-z])")
EVIDENCE_FILES = ("result.json", "results.json")

def words(text: str) -> set[str]:
    """Lower-cased whole words of a name or line; letters and digits split (`baseline0` → baseline, 0)."""
    return set(re.findall(r"[a-z]+|[0-9]+", text.lower()))


def role_words(rel: str) -> frozenset[str]:
    """The role words of a path relative to its record folder (directories and file stem)."""
    return frozenset(words(rel.rsplit(".", 1)[0]) & ROLE_WORDS)


def version(rel: str) -> int | None:
    """The highest `vN` token of a path (`this_pr_v3/`, `s1415v6_…`), or None."""
    found = [int(m) for m in VERSION.findall(rel.lower())]
    return max(found) if found else None


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


def dated_folders(base: Path) -> tuple[list[tuple[str, Path]], list[dict]]:
    """(date, folder) for every dated folder under `base`, in date order, and the entries skipped
    ({folder, reason})."""
    dated, skipped = [], []
    for p in sorted(base.iterdir(), key=lambda p: p.name):
        if p.is_symlink():
            skipped.append({"folder": p.name, "reason": "a symlink (not followed)"})
        elif not p.is_dir():
            continue
        elif not DATED.match(p.name):
            skipped.append({"folder": p.name, "reason": "name does not start with a date (YYYY-MM-DD_, YYYY-MM-DD- "
                                                        "or YYYYMMDD_)"})
        elif folder_date(p.name)[0] is None:
            skipped.append({"folder": p.name, "reason": f"{DATED.match(p.name)[1]} is not a real date"})
        else:
            dated.append((folder_date(p.name)[0], p))
    dated.sort(key=lambda e: (e[0], e[1].name))
    return dated, skipped


# ---- normalised code: what a script does, not how it is commented ------------------------------------

def _strip(tree: ast.AST) -> ast.AST:
    """Drops docstrings and annotations in place (one pass; the compiler does the rest in C)."""
    for node in ast.walk(tree):
        t = type(node)
        if t in (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef):
            b = node.body
            if b and type(b[0]) is ast.Expr and type(b[0].value) is ast.Constant and isinstance(b[0].value.value, str):
                if len(b) > 1:
                    del b[0]
                else:
                    b[0] = ast.copy_location(ast.Pass(), b[0])
            if t is ast.FunctionDef or t is ast.AsyncFunctionDef:
                node.returns = None
                a = node.args
                for arg in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
                    arg.annotation = None
        elif t is ast.AnnAssign:
            node.annotation = ast.copy_location(ast.Constant(None), node.annotation)
    return tree


def _hash_code(co: types.CodeType, h) -> None:
    """Bytecode, names and constants of a code object and those nested in it: no line numbers, no file."""
    h.update(co.co_code)
    h.update(repr((co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars, co.co_argcount,
                   co.co_kwonlyargcount, co.co_flags)).encode())
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            _hash_code(c, h)
        else:
            h.update(repr(c).encode())


_NORMALISED: dict[str, str] = {}  # sha256 of a text → its normalised hash (filled by worker processes too)


def normalised(text: str) -> str:
    """A hash of what the code does: its compiled bytecode without comments, docstrings, annotations or
    layout (line numbers are not hashed); code that does not compile is compared as its whitespace-separated
    tokens. Once per distinct text: 20 runs of one script are normalised once."""
    key = sha256_text(text)
    got = _NORMALISED.get(key)
    if got is None:
        got = _NORMALISED[key] = _normalise(text)
    return got


def _normalise(text: str) -> str:
    try:
        with warnings.catch_warnings():  # a log's code is not ours to lint
            warnings.simplefilter("ignore")
            co = compile(_strip(ast.parse(text)), "<log>", "exec", dont_inherit=True)
        h = sha256_hasher()
        _hash_code(co, h)
        return h.hexdigest()
    except (SyntaxError, ValueError, TypeError, RecursionError):
        from harness.core.rules import live_code
        return sha256_text(" ".join(live_code(text).split()))


def code_key(sources: dict[str, str]) -> str | None:
    """One hash over every embedded file, each normalised (.py) or exact (anything else)."""
    if not sources:
        return None
    return sha256_text("\0".join(f"{k}\0{normalised(v) if k.endswith('.py') else v}" for k, v in sorted(sources.items())))


class Code:
    """What a cohort ran: the hash of its embedded files at once, the normalised hash only when a
    comparison needs it (normalising is the dear part of reading a folder)."""
    __slots__ = ("sources", "raw", "_norm")

    def __init__(self, sources: dict[str, str]):
        self.sources = sources
        self.raw = sha256_text("\0".join(f"{k}\0{v}" for k, v in sorted(sources.items()))) if sources else None
        self._norm = None

    @property
    def norm(self) -> str | None:
        if self._norm is None and self.sources:
            self._norm = code_key(self.sources)
        return self._norm

    def same(self, other: "Code | None") -> bool:
        """The same code, comments, docstrings, annotations and layout aside."""
        if other is None or self.raw is None or other.raw is None:
            return False
        return self.raw == other.raw or self.norm == other.norm


@dataclass
class Group:
    """A cohort: runs of one normalised code, step count, hardware and role words, wherever they sit."""
    dir: str                       # the runs' common directory, relative to the record folder ("" for the folder)
    code: Code | None              # what it ran
    gpus: str                      # "8× NVIDIA H100 80GB HBM3", "cpu", or "?"
    steps: int | None
    paths: list[Path] = field(default_factory=list)
    parsed: list[logs.ParsedLog] = field(default_factory=list)
    role: str = ""                 # submission | baseline | re-time | ablation | other-hardware
    why: str = ""
    words: frozenset = frozenset()  # role words of its paths
    version: int | None = None     # the highest vN in its paths
    evidence: list[Path] = field(default_factory=list)  # console captures, result.json beside its logs
    problems: list[str] = field(default_factory=list)   # evidence that disagrees with a log

    @property
    def code_sha256(self) -> str | None:
        """sha256 over its embedded files as logged (the normalised hash is `code.norm`)."""
        return self.code.raw if self.code else None

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

    @property
    def date(self) -> str | None:
        """When its latest run ran (nvidia-smi), or None."""
        ran = [p.env.date for p in self.parsed if p.env.date]
        return max(ran) if ran else None

    @property
    def final_losses(self) -> list[float]:
        return [t.final_val.loss for p in self.parsed for t in p.trials if t.complete and t.final_val.loss is not None
                and math.isfinite(t.final_val.loss)]

    @property
    def final_times_ms(self) -> list[float]:
        return [t.final_val.time_ms for p in self.parsed for t in p.trials if t.complete and t.final_val.time_ms]

    def meets(self, target: float) -> bool:
        """Its complete runs' mean final val loss is at the target (a baseline needs no p-value: the
        parent's claim stands; its job is the timing)."""
        x = self.final_losses
        return bool(x) and fmean(x) <= target

    def to_json(self, folder: Path | None = None) -> dict:
        rel = (lambda p: str(p.relative_to(folder))) if folder else str
        return {"dir": self.dir, "role": self.role, "why": self.why, "runs": len(self.paths), "steps": self.steps,
                "gpus": self.gpus, "code_sha256": self.code_sha256, "version": self.version,
                "words": sorted(self.words), "files": [rel(p) for p in self.paths],
                "evidence": [rel(p) for p in self.evidence], "problems": list(self.problems)}


@dataclass
class Folder:
    path: Path
    date: str | None
    title: str
    groups: list[Group]
    submission: Group | None
    how: str                                   # which rule chose the submission
    skipped: list[str] = field(default_factory=list)
    baseline: Group | None = None              # the cohort the speedup is measured against
    baseline_how: str = ""
    baseline_missed: list[Group] = field(default_factory=list)  # baselines that miss the target: reported only
    readme: str = ""
    readme_runs: dict = field(default_factory=dict)  # {"losses": [...], "times": [...]} the README lists
    problems: list[str] = field(default_factory=list)  # evidence that disagrees with the logs

    def by_role(self, role: str) -> list[Group]:
        return [g for g in self.groups if g.role == role]

    @property
    def run_date(self) -> str | None:
        """When the submission's runs ran (the earliest nvidia-smi date), else the folder name's date."""
        g = self.submission
        ran = sorted(p.env.date for p in (g.parsed if g else []) if p.env.date)
        return ran[0][:10] if ran else self.date


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




def _trajectory(p: logs.ParsedLog) -> tuple:
    return tuple((v.step, v.loss) for t in p.trials for v in t.val)


def captures(found: list[tuple[Path, logs.ParsedLog]]) -> dict[Path, Path]:
    """Files that are console captures of a run whose log is there: no embedded code of their own, and
    the val trajectory of a log that has it (in the same directory first). capture → log."""
    logs_by_traj: dict[tuple, list[Path]] = {}
    for path, p in found:
        if p.sources:
            logs_by_traj.setdefault(_trajectory(p), []).append(path)
    out = {}
    for path, p in found:
        if p.sources:
            continue
        hits = logs_by_traj.get(_trajectory(p), [])
        if hits:
            out[path] = next((h for h in hits if h.parent == path.parent), hits[0])
    return out


def _common_dir(folder: Path, paths: list[Path]) -> str:
    rel = os.path.commonpath([p.parent.relative_to(folder).as_posix() for p in paths])
    return "" if rel in (".", "") else Path(rel).as_posix()


def group(folder: Path, found: list[tuple[Path, logs.ParsedLog]]) -> list[Group]:
    """Cohorts of runs: normalised code, steps, hardware and role words, wherever their files sit."""
    groups: dict[tuple, Group] = {}
    codes: dict[str | None, Code] = {}
    for path, p in found:
        rel = path.relative_to(folder).as_posix()
        steps = p.trials[-1].total_steps if p.trials else None
        code = Code(p.sources)
        code = codes.setdefault(code.raw, code)
        key = (code.raw, _gpus(p), steps, role_words(rel))
        g = groups.setdefault(key, Group("", code, key[1], steps, words=key[3]))
        g.paths.append(path)
        g.parsed.append(p)
        v = version(rel)
        if v is not None:
            g.version = max(g.version or 0, v)
    # Runs whose code differs only in comments, docstrings, annotations or layout are one cohort.
    merged: dict[tuple, Group] = {}
    buckets: dict[tuple, int] = {}
    for g in groups.values():
        buckets[(g.gpus, g.steps, g.words)] = buckets.get((g.gpus, g.steps, g.words), 0) + 1
    for g in groups.values():
        same = (g.gpus, g.steps, g.words)
        key = same + ((g.code.norm if g.code else None) if buckets[same] > 1 else g.code_sha256,)
        if key in merged:
            m = merged[key]
            m.paths += g.paths
            m.parsed += g.parsed
            versions = [v for v in (m.version, g.version) if v is not None]
            m.version = max(versions) if versions else None
        else:
            merged[key] = g
    for g in merged.values():
        g.dir = _common_dir(folder, g.paths)
    return sorted(merged.values(), key=lambda g: (g.dir, -len(g.paths), g.steps or 0, g.code_sha256 or ""))


def on_hardware(g: Group, track: dict | None) -> bool:
    if track is None:  # no track to hold it to (a folder of logs given to `speedrun diff`)
        return True
    hw = track["hardware"]
    if hw.get("accelerator") == "cpu":
        return g.gpus == "cpu"
    m = re.match(r"(\d+)× (.*)", g.gpus)
    return bool(m) and int(m[1]) == hw["count"] and re.search(rf"\b{re.escape(hw['model'])}\b", m[2]) is not None


def read_folder(path: str | Path, track: dict | None, *, linked: set[str] | None = None,
                parent_code: str | None = None, parent_sources: dict[str, str] | None = None,
                found: tuple | None = None) -> Folder:
    """The folder's cohorts, its submission, its baseline and every cohort's role. `linked`: files or
    directories (relative to the folder, or bare file names) a record table points at; `parent_code` /
    `parent_sources`: the parent record's train_gpt.py / every embedded file; `found`: what run_logs(path)
    returned, when the caller has read the folder already."""
    folder = Path(path)
    date, rest = folder_date(folder.name)
    title = " ".join(re.sub(r"[\x00-\x1f\x7f]+", " ", rest.replace("_", " ")).split())[:100] or "untitled"
    found, skipped = found if found is not None else run_logs(folder)  # `found`: run_logs(folder), read already
    caps = captures(found)
    groups = group(folder, [(p, x) for p, x in found if p not in caps])
    readme = _readme(folder)
    f = Folder(folder, date, title, groups, None, "", skipped, readme=readme,
               readme_runs=readme_runs(readme + "\n" + _text(folder / "statistics.md")))
    _attach_evidence(folder, f, caps)
    if not groups:
        f.how = "no run logs"
        return f
    parent_key = Code(parent_sources) if parent_sources else Code({logs.MAIN_FILE: parent_code}) if parent_code else None
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
    sub, f.how = _choose(folder, pool, readme, linked or set(), parent_key)
    if caveat:
        f.how = f.how.replace(" on the track's hardware", "") + caveat
    f.submission = sub
    sub.role = "submission"
    sub.why = f.how
    for g in pool:
        if g is not sub:
            g.role, g.why = _role(g, sub, pool, readme, parent_key)
    if track is not None:
        _baseline(f, track, parent_key)
    return f


def _is_parent(g: Group, parent_key: Code | None) -> bool:
    if parent_key is None or g.code is None:
        return False
    if set(parent_key.sources) == {logs.MAIN_FILE}:  # only the parent's train_gpt.py is known
        return g.main_code is not None and Code({logs.MAIN_FILE: g.main_code}).same(parent_key)
    return g.code.same(parent_key)


def _baseline(f: Folder, track: dict, parent_key: "Code | None") -> None:
    """The cohort the speedup is measured against: a baseline on the track's hardware that meets the
    target, the parent's code first, then the most runs."""
    cands = [g for g in f.groups if g.role == "baseline"]
    ok = [g for g in cands if g.meets(track["target"])]
    f.baseline_missed = [g for g in cands if g not in ok]
    if not ok:
        return
    best = max(ok, key=lambda g: (_is_parent(g, parent_key), len(g.final_times_ms), g.date or ""))
    f.baseline = best
    f.baseline_how = ("it runs the parent's code and meets the target" if _is_parent(best, parent_key)
                      else "its names say it is a baseline, and it meets the target")


def _readme(folder: Path) -> str:
    for name in ("README.md", "readme.md", "README.txt", "README"):
        if (folder / name).is_file():
            return _text(folder / name)
    return ""


def _text(p: Path) -> str:
    if not p.is_file() or p.is_symlink():
        return ""
    try:
        return p.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


_LIST = re.compile(r"\b(losses|loss|val_losses|times|time|train_times)\s*=\s*\[([^\]]*)\]", re.IGNORECASE)


_ROW = re.compile(r"^\|[^|\n]*\|\s*(3\.\d{3,6})\s*\|\s*(\d{1,4}\.\d{1,4})\s*(?:s\s*)?\|", re.M)


def readme_runs(readme: str) -> dict:
    """Per-run losses and times a README or statistics.md lists: `losses = [3.279, …]`, `times = [114.5, …]`,
    or table rows `| run | 3.2790 | 114.508 |`."""
    out = {}
    rows = _ROW.findall(readme)
    if rows:
        out = {"losses": [float(a) for a, _ in rows], "times": [float(b) for _, b in rows]}
    for m in _LIST.finditer(readme):
        try:
            vals = [float(x) for x in m[2].replace("\n", " ").split(",") if x.strip()]
        except ValueError:
            continue
        key = "losses" if "loss" in m[1].lower() else "times"
        out.setdefault(key, vals)
    return out


def _attach_evidence(folder: Path, f: Folder, caps: dict[Path, Path]) -> None:
    """Console captures and result.json files join the cohort of the log they belong to, and are
    checked against it (final val loss, train time)."""
    owner = {p: g for g in f.groups for p in g.paths}
    parsed = {p: x for g in f.groups for p, x in zip(g.paths, g.parsed)}
    for cap, log in caps.items():
        g = owner.get(log)
        if g is not None:
            g.evidence.append(cap)
    for log, g in owner.items():
        for name in EVIDENCE_FILES:
            rj = log.parent / name
            if not rj.is_file() or rj.is_symlink():
                continue
            if sum(1 for p in owner if p.parent == log.parent) > 1:
                continue  # one result.json for several logs: whose it is is not said
            g.evidence.append(rj)
            msg = check_result(rj, parsed[log], folder)
            if msg:
                g.problems.append(msg)
                f.problems.append(msg)


def _numbers(obj, prefix: str = "") -> dict[str, float]:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_numbers(v, f"{prefix}{k}.".lower()))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out


def check_result(path: Path, p: logs.ParsedLog, folder: Path) -> str | None:
    """What a result.json says that its log does not (final val loss, train time), or None."""
    rel = shown(str(path.relative_to(folder)))
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as e:
        return f"{rel}: unreadable ({e})"
    nums = _numbers(data)
    t = p.trials[-1] if p.trials else None
    v = t.final_val if t else None
    if v is None:
        return None
    problems = []
    loss_key = next((k for k in nums if k.rsplit(".", 1)[-1] in ("val_loss", "final_val_loss", "loss")), None)
    if loss_key is not None and v.loss is not None and abs(nums[loss_key] - v.loss) > 5.01e-5:
        problems.append(f"{loss_key} {nums[loss_key]:g} ≠ the log's final val loss {v.loss:g}")
    for k, scale in (("train_time_ms", 1.0), ("time_ms", 1.0), ("train_time_s", 1000.0), ("time_s", 1000.0),
                     ("train_time", None)):
        key = next((x for x in nums if x.rsplit(".", 1)[-1] == k), None)
        if key is None or v.time_ms is None:
            continue
        got = nums[key] * (scale or (1.0 if nums[key] > 10_000 else 1000.0))
        if abs(got - v.time_ms) > max(1.0, 5e-4 * v.time_ms):
            problems.append(f"{key} {nums[key]:g} ≠ the log's train time {v.time_ms:g} ms")
        break
    return f"{rel}: " + "; ".join(problems) + f" ({shown(Path(p.file).name)})" if problems else None


def _pick(hits: list[Group], how: str) -> tuple[Group, str]:
    """Among the groups the evidence leaves tied: the highest version, then more runs, then the newest."""
    best = max(hits, key=lambda g: (g.version if g.version is not None else -1, len(g.paths), g.date or ""))
    if len(hits) > 1:
        tie = "the highest version" if best.version is not None and \
            sum(g.version == best.version for g in hits) == 1 else "the most runs"
        how += f" ({len(hits)} groups match; {tie})"
    return best, how


def _under(g: Group, folder: Path, names: set[str]) -> bool:
    """Whether a link (a file, bare file name or directory) points at one of the group's logs."""
    for p in g.paths:
        rel = p.relative_to(folder).as_posix()
        if p.name in names or rel in names or any(rel.startswith(n.rstrip("/") + "/") for n in names if n):
            return True
    return False


def _submitted_lines(readme: str) -> list[str]:
    """The sentences of a README that say what was submitted or claimed ("v3 came later" in the next
    clause does not count)."""
    return [x for line in readme.splitlines() for x in re.split(r"(?<=[.;!?])\s+", line)
            if words(x) & SAYS_SUBMITTED]


def _named_in(line: str, g: Group, folder: Path) -> bool:
    """A README line names the group: one of its directories (as a whole name), or its version."""
    low = line.lower()
    for p in g.paths:
        parts = p.relative_to(folder).parts[:-1]
        for d in parts:
            if re.search(rf"(?<![\w-]){re.escape(d.lower())}(?![\w-])", low):
                return True
        if p.stem.lower() in low:
            return True
    return g.version is not None and re.search(rf"(?<![a-z0-9])v{g.version}(?![0-9])", low) is not None


def _choose(folder: Path, pool: list[Group], readme: str, linked: set[str], parent_key: "Code | None"):
    if len(pool) == 1:
        return pool[0], "the only group of runs on the track's hardware"
    rules = []
    if linked:
        rules.append(([g for g in pool if _under(g, folder, linked)], "the record table links its logs"))
    scripts = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted(folder.glob("*.py"))
               if p.is_file() and not p.is_symlink()}
    if scripts:
        keys = {code_key({logs.MAIN_FILE: t}) for t in scripts.values()}
        rules.append(([g for g in pool if g.main_code is not None and code_key({logs.MAIN_FILE: g.main_code}) in keys],
                      f"its code is the folder's own {', '.join(scripts)}"))
    if readme:
        said = _submitted_lines(readme)
        rules.append(([g for g in pool if any(_named_in(line, g, folder) for line in said)
                       and not (g.words & BASELINE_WORDS)],
                      "the folder's README says it is what was submitted"))
        rules.append(([g for g in pool if any(p.name in readme or p.stem in readme for p in g.paths)],
                      "the folder's README names one of its logs"))
        steps_said = _readme_steps(readme)
        rules.append(([g for g in pool if steps_said.get(g.steps) == "change"],
                      "the folder's README calls its step count the change"))
        not_control = [g for g in pool if steps_said.get(g.steps) != "control"]
        if len(not_control) < len(pool):
            rules.append((not_control, "the folder's README calls the other step counts the control"))
    rules.append(([g for g in pool if g.words & SUBMISSION_WORDS and not g.words & BASELINE_WORDS],
                  "its names say it is the change"))
    not_base = [g for g in pool if not (g.words & (BASELINE_WORDS | ABLATION_WORDS))]
    if len(not_base) < len(pool):
        rules.append((not_base, "the other groups' names say they are baselines or ablations"))
    if parent_key is not None:
        not_parent = [g for g in pool if not _is_parent(g, parent_key)]
        if len(not_parent) < len(pool):
            rules.append((not_parent, "the other groups run the parent record's code"))
    for hits, how in rules:
        if hits and len(hits) < len(pool):  # evidence that singles out some groups, not all
            return _pick(hits, how)
    newest = max(g.date or "" for g in pool)
    latest = [g for g in pool if (g.date or "") == newest]
    if newest and len(latest) < len(pool):
        return _pick(latest, "the newest code (its runs ran last)")
    return _pick(pool, "no evidence in the folder names it")


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


def _role(g: Group, sub: Group, pool: list[Group], readme: str, parent_key: "Code | None") -> tuple[str, str]:
    same_code = g.code is not None and g.code.same(sub.code)
    if same_code and g.steps == sub.steps:
        return "re-time", "the submission's code and steps" + (f" ({', '.join(sorted(g.words))})" if g.words else "")
    if same_code:
        return "ablation", f"the submission's code at {g.steps} steps (it ran {sub.steps})"
    if _is_parent(g, parent_key):
        return "baseline", "it runs the parent record's code"
    if g.words & BASELINE_WORDS:
        return "baseline", f"its names say it is a baseline ({', '.join(sorted(g.words & BASELINE_WORDS))})"
    if readme and _readme_steps(readme).get(g.steps) == "control":
        return "baseline", f"the folder's README calls {g.steps} steps the control"
    if g.words & SUBMISSION_WORDS:
        v = f" (v{g.version})" if g.version is not None else ""
        return "ablation", f"another version of the change{v}"
    if g.words & ABLATION_WORDS:
        return "ablation", f"its names say so ({', '.join(sorted(g.words & ABLATION_WORDS))})"
    others = [x for x in pool if x is not sub and not (x.code is not None and x.code.same(sub.code))]
    if len(others) == 1:
        return "baseline", "the folder's only other code: taken as what the submission was timed against"
    return "ablation", "other code than the submission's"
