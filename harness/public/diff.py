"""Diffs between two runs or records: code, hyperparameters, environment, metrics (`speedrun diff A B`).

A side is a log file, a record folder, or a record id (`<track>/<NNNN>[_<slug>]` under records/).
Hyperparameters are read from the source with `ast` and a tiny constant evaluator: code found in a
log or a record is never executed (a reviewer diffs untrusted logs). Standard library only; the
plot imports matplotlib inside `plot()`.
"""
from __future__ import annotations

import ast
import difflib
import json
import math
import re
import operator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from harness.judge import logs
from harness.core import stats
from harness.core.errors import InputError
from harness.core.track import REF, records_dir

LOG_GLOBS = ("*.txt", "*.log")
LEVEL = 0.95


class Unreadable:
    """A hyperparameter value that is not a constant (a call, a name, an f-string): shown, never run."""
    __slots__ = ("source",)

    def __init__(self, source: str):
        self.source = source

    def __eq__(self, other):
        return isinstance(other, Unreadable) and other.source == self.source

    def __hash__(self):
        return hash(self.source)

    def __repr__(self):
        return f"<unreadable: {self.source}>"


ABSENT = object()  # a name one side defines and the other does not


# ---- sides -------------------------------------------------------------------------------------------

@dataclass
class Side:
    spec: str                      # what the user typed
    kind: str                      # "log" or "record"
    path: Path
    logs: list[logs.ParsedLog]
    sources: dict[str, str]        # path → text: the record's snapshot, else the (first) log's embedded files
    record_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    record: dict | None = None     # the record.json of a record side (its track version, speedup, parent)

    def runs(self) -> list[tuple[str, int, logs.Trial]]:
        """Every trial of every log: (log file, trial index, trial)."""
        return [(p.file, k, t) for p in self.logs for k, t in enumerate(p.trials)]


def resolve(spec: str) -> Side:
    """A log file, a record folder (ours, or a public one: its submission's runs), a folder of logs, or a
    record id; anything else is an InputError naming what was tried."""
    p = Path(spec)
    if p.is_file():
        return _log_side(spec, p)
    if p.is_dir():
        if not (p / "record.json").is_file() and not (p / "logs").is_dir() or _public(p):
            return _folder_side(spec, p)
        return _record_side(spec, p)
    tried = [f"{p}: no such file or folder"]
    m = REF.match(spec)
    if m:
        track_dir = records_dir() / m["track"]
        if m["slug"]:
            folder = track_dir / f"{m['num']}_{m['slug']}"
            if folder.is_dir():
                return _record_side(spec, folder)
            tried.append(f"record {folder}: no such folder")
        else:
            hits = sorted(d for d in track_dir.glob(f"{m['num']}_*") if d.is_dir())
            if len(hits) == 1:
                return _record_side(spec, hits[0])
            tried.append(f"record {track_dir}/{m.group(2)}_*: " +
                         ("no such folder" if not hits else f"ambiguous ({', '.join(h.name for h in hits)})"))
    else:
        tried.append(f"not a record id like tiny-cpu/0001 or tiny-cpu/0001_slug (records live in {records_dir()})")
    raise InputError(f"cannot resolve {spec!r}: " + "; ".join(tried) +
                     f". Give a log file, a record folder, or a record id (ls {records_dir()}/<track>/)")


def _public(folder: Path) -> bool:
    """A folder without our record.json whose logs/ (if any) is not the only place its logs sit."""
    return not (folder / "record.json").is_file() and not (folder / logs.MAIN_FILE).is_file()


def _folder_side(spec: str, folder: Path) -> Side:
    """A public record folder or a folder of logs: the runs of its submission cohort (harness/layout.py)."""
    from harness.public import layout

    f = layout.read_folder(folder, None)
    if f.submission is None:
        raise InputError(f"{folder}: not a record folder: no run logs in it (.txt/.log files with step lines); give a log file, a "
                         "record folder or a record id")
    side = Side(spec, "record", folder, list(f.submission.parsed), dict(f.submission.sources))
    if len(f.groups) > 1:
        side.warnings.append(f"{folder}: {len(f.groups)} cohorts; using the submission "
                             f"{f.submission.dir or '.'} ({f.how})")
    return side


def _log_side(spec: str, path: Path) -> Side:
    parsed = logs.parse_file(path)
    return Side(spec, "log", path, [parsed], dict(parsed.sources))


def _record_side(spec: str, folder: Path) -> Side:
    log_files = sorted({f for g in LOG_GLOBS for f in (folder / "logs").glob(g) if f.is_file()})
    parsed = [logs.parse_file(f) for f in log_files]
    # The snapshot is every embedded file as `record add` stored it, at its embedded path (train_gpt.py,
    # kernels/…, or a public log's triton_kernels.py): the .py files outside logs/, and any other name a log embeds.
    names = {f.relative_to(folder).as_posix() for f in folder.rglob("*.py") if f.is_file()}
    inside = folder.resolve()
    names |= {n for p in parsed for n in p.sources  # a name like ../x must not read outside the record
              if (folder / n).is_file() and (folder / n).resolve().is_relative_to(inside)}
    snapshot = {n: (folder / n).read_text(encoding="utf-8", errors="replace")
                for n in sorted(names) if not n.startswith(("logs/", "evidence/"))}
    if not snapshot and not log_files:
        raise InputError(f"{folder}: not a record folder (no {logs.MAIN_FILE} and no logs/*.txt); "
                         "give a log file or a folder made by `speedrun record add`")
    try:
        rid = folder.resolve().relative_to(records_dir().resolve()).as_posix()
    except ValueError:
        rid = f"{folder.resolve().parent.name}/{folder.resolve().name}"
    side = Side(spec, "record", folder, parsed, snapshot or _first_sources(parsed), record_id=rid)
    try:
        side.record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        side.record = None
    if not snapshot:
        side.warnings.append(f"{folder}: no {logs.MAIN_FILE} snapshot; using the code embedded in the logs")
    # The snapshot is what the record claims was run; each log's embedded code should be that, byte for byte.
    for p in parsed:
        for name, text in p.sources.items():
            if name not in side.sources:
                side.warnings.append(f"{p.file}: embeds {name}, which the record's snapshot lacks")
            elif text != side.sources[name]:
                side.warnings.append(f"{p.file}: embedded {name} differs from the record's snapshot")
    return side


def _first_sources(parsed: list[logs.ParsedLog]) -> dict[str, str]:
    return dict(next((p.sources for p in parsed if p.sources), {}))


# ---- hyperparameters: read from the source, never executed ------------------------------------------

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def constant(node: ast.AST):
    """The value of a literal, or of simple arithmetic on numeric literals (`48 * 1024`, `-3e-4`, tuples
    of those); anything else is an Unreadable carrying its source text. Nothing is executed."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return _arith(node)
    except (ValueError, TypeError, ArithmeticError, RecursionError):
        return Unreadable(ast.unparse(node))


def _arith(node: ast.AST):
    if isinstance(node, ast.Constant) and _is_number(node.value):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_arith(e) if not isinstance(e, ast.Constant) else e.value for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _arith(node.operand)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _arith(node.left), _arith(node.right)
        if not (_is_number(a) and _is_number(b)):
            raise TypeError("arithmetic on numbers only")
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 2 ** 64):
            raise ValueError("power too large to evaluate safely")  # 10**10**10 would hang
        return _BINOPS[type(node.op)](a, b)
    raise ValueError(f"not a constant: {type(node).__name__}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class HyperSource:
    """What the source says: the class defaults, each preset's overrides, and what could not be found."""
    defaults: dict[str, object]
    presets: dict[str, dict[str, object]]
    module_args: dict[str, object] | None  # keyword overrides of a module-level `args = Hyperparameters(...)`
    note: str | None = None                # why nothing was found


def read_source(source: str) -> HyperSource:
    """`class Hyperparameters` field defaults and `PRESETS = {name: Hyperparameters(...)}` overrides."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return HyperSource({}, {}, None, f"the source does not parse (line {e.lineno}: {e.msg})")
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Hyperparameters"), None)
    defaults = {}
    if cls is not None:
        for st in cls.body:
            if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) and st.value is not None:
                defaults[st.target.id] = _default(st.value)
            elif isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
                defaults[st.targets[0].id] = _default(st.value)  # the older, un-annotated class attributes
    presets, module_args = {}, None
    for st in tree.body:
        target, value = _assignment(st)
        if target == "PRESETS" and isinstance(value, ast.Dict):
            for k, v in zip(value.keys, value.values):
                if isinstance(k, ast.Constant) and isinstance(k.value, str) and _is_hyper_call(v):
                    presets[k.value] = {kw.arg: constant(kw.value) for kw in v.keywords if kw.arg}
        elif target == "args" and _is_hyper_call(value):
            module_args = {kw.arg: constant(kw.value) for kw in value.keywords if kw.arg}
    note = None if cls is not None or presets else "no class Hyperparameters and no PRESETS in the source"
    return HyperSource(defaults, presets, module_args, note)


def _default(node: ast.AST):
    # `x: tuple = field(default=(1, 2))`: read the default keyword; default_factory stays unreadable.
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "field":
        kw = next((k for k in node.keywords if k.arg == "default"), None)
        if kw is not None:
            return constant(kw.value)
    return constant(node)


def _assignment(st: ast.stmt) -> tuple[str | None, ast.AST | None]:
    if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
        return st.targets[0].id, st.value
    if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
        return st.target.id, st.value
    return None, None


def _is_hyper_call(node) -> bool:
    f = getattr(node, "func", None) if isinstance(node, ast.Call) else None
    return (isinstance(f, ast.Name) and f.id == "Hyperparameters") or \
        (isinstance(f, ast.Attribute) and f.attr == "Hyperparameters")


def hyperparameters(side: Side) -> tuple[dict[str, object], str]:
    """The side's hyperparameters and where they came from: the preset its logs name, else the source's
    only preset, else the class defaults (or, for public logs, a module-level `args = Hyperparameters(...)`)."""
    main = side.sources.get(logs.MAIN_FILE)
    name = logs.MAIN_FILE
    if main is None or "Hyperparameters" not in main:
        name, main = next(((n, s) for n, s in side.sources.items() if "class Hyperparameters" in s), (name, main))
    if main is None:
        return {}, "nothing found: no source code on this side"
    hs = read_source(main)
    if hs.note:
        return {}, f"nothing found in {name}: {hs.note}"
    named = sorted({p.env.speedrun["preset"] for p in side.logs if "preset" in p.env.speedrun})
    if len(named) > 1:
        side.warnings.append(f"the logs name several presets ({', '.join(named)}); using {named[0]!r}")
    if named and named[0] in hs.presets:
        return {**hs.defaults, **hs.presets[named[0]]}, f"preset {named[0]!r} (named in the log's env line)"
    if named:
        side.warnings.append(f"the logs name preset {named[0]!r}, which {name} does not define")
    if len(hs.presets) == 1:
        (only, over), = hs.presets.items()
        return {**hs.defaults, **over}, f"preset {only!r} (the only one in {name})"
    if hs.module_args:
        return {**hs.defaults, **hs.module_args}, f"module-level args = Hyperparameters(...) in {name}"
    why = f"{len(hs.presets)} presets, none named" if hs.presets else "no PRESETS"
    return dict(hs.defaults), f"class Hyperparameters defaults in {name} ({why})"


# ---- environment -------------------------------------------------------------------------------------

def environment(side: Side) -> dict[str, str | None]:
    """Versions, hardware and run settings as one string each; several logs that disagree are joined."""
    def one(p: logs.ParsedLog) -> dict[str, str | None]:
        e, g = p.env, p.env.gpus
        return {"python": e.python, "torch": e.torch, "cuda": e.cuda, "triton": e.triton,
                "gpus": None if g is None else f"{g.count}× {g.model or '?'}", "cpu": e.cpu,
                "track": e.speedrun.get("track"), "preset": e.speedrun.get("preset"),
                "world_size": e.speedrun.get("world_size"), "device": e.speedrun.get("device"),
                "data_sha256": e.data_sha256}
    rows = [one(p) for p in side.logs]
    keys = list(rows[0]) if rows else []
    out = {}
    for k in keys:
        vals = sorted({r[k] for r in rows if r[k] is not None})
        out[k] = " | ".join(vals) if vals else None
    return out


# ---- metrics -----------------------------------------------------------------------------------------

def run_metrics(side: Side) -> list[dict]:
    """Per run: final val loss, train time at the final val point, final step (None where the log lacks it)."""
    out = []
    for file, k, t in side.runs():
        v = t.final_val
        loss = v.loss if v is not None and v.loss is not None and math.isfinite(v.loss) else None
        out.append({"file": file, "trial": k, "val_loss": loss, "train_time_ms": v.time_ms if v else None,
                    "steps": t.final_step})
    return out


def compare(a: list[float], b: list[float], level: float = LEVEL) -> dict:
    """mean(B) − mean(A) with a Welch t interval (unequal variances); no interval with one run on a side."""
    r = {"a_mean": fmean(a) if a else None, "b_mean": fmean(b) if b else None, "delta": None,
         "ci95": None, "n_a": len(a), "n_b": len(b), "relative": None}
    if not a or not b:
        r["note"] = f"no runs with this metric on side {'A' if not a else 'B'}"
        return r
    r["delta"] = r["b_mean"] - r["a_mean"]
    r["relative"] = r["delta"] / r["a_mean"] if r["a_mean"] else None
    if len(a) < 2 or len(b) < 2:
        one = " and ".join(t for t, xs in (("A", a), ("B", b)) if len(xs) < 2)
        r["note"] = f"CI unavailable: one run on {'sides' if ' and ' in one else 'side'} {one}"
        return r
    r["ci95"] = list(stats.welch_interval(a, b, level))
    return r


def comparability(a: Side, b: Side, env_a: dict, env_b: dict) -> list[str]:
    """Why the two sides' times or losses are not like for like: track version, data, hardware, torch."""
    out = []
    va, vb = ((s.record or {}).get("track_version") for s in (a, b))
    if va is not None and vb is not None and va != vb:
        out.append(f"track version differs (A v{va}, B v{vb}): the rules or data changed, losses are not comparable")
    for key, what in (("data_sha256", "data"), ("gpus", "hardware (GPUs)"), ("cpu", "hardware (CPU)"),
                      ("torch", "torch")):
        x, y = env_a.get(key), env_b.get(key)
        if key == "cpu":  # the model and cores, not the kernel build or the thread count
            x, y = (re.sub(r" (torch_threads|platform):\S*", "", v) if v else v for v in (x, y))
        if x and y and x != y:
            out.append(f"{what} differs (A {x}, B {y})")
    return out


def side_by_side(a: Side, b: Side) -> dict | None:
    """A speedup of B over A measured side by side and stored with B's record (its baseline is A)."""
    sp = (b.record or {}).get("speedup")
    if sp and a.record_id and sp.get("baseline") in (a.record_id, (a.record or {}).get("id")):
        return sp
    sp = (a.record or {}).get("speedup")  # B is A's baseline: invert
    if sp and b.record_id and sp.get("baseline") in (b.record_id, (b.record or {}).get("id")):
        lo, hi = sp.get("ci95") or (None, None)
        return {**sp, "speedup": 1 / sp["speedup"], "ci95": [None if hi is None else 1 / hi,
                                                             None if lo is None else 1 / lo], "inverted": True}
    return None


def metrics(a: Side, b: Side, warnings: list[str] = ()) -> dict:
    """Per metric B − A with a Welch interval. `speedup` (> 1: B is faster) is the side-by-side one stored
    with a record when there is one; a ratio of the two sides' means only when they ran on the same
    hardware, track version and torch (else None, and `ratio_of_means` says what it would have been)."""
    ra, rb = run_metrics(a), run_metrics(b)
    col = (lambda rows, k: [r[k] for r in rows if r[k] is not None])
    out = {k: compare(col(ra, k), col(rb, k)) for k in ("val_loss", "train_time_ms", "steps")}
    t = out["train_time_ms"]
    ratio = t["a_mean"] / t["b_mean"] if t["a_mean"] and t["b_mean"] else None
    stored = side_by_side(a, b)
    t["ratio_of_means"] = ratio
    t["side_by_side"] = stored
    t["comparable"] = not warnings
    t["speedup"] = stored["speedup"] if stored else ratio if not warnings else None
    return out


# ---- code --------------------------------------------------------------------------------------------

def code_diff(a: dict[str, str], b: dict[str, str], context: int = 3) -> list[dict]:
    """One entry per embedded file on either side: same, changed, added (only in B) or removed (only in A)."""
    out = []
    for name in sorted(set(a) | set(b), key=lambda n: (n != logs.MAIN_FILE, n)):
        ta, tb = a.get(name), b.get(name)
        status = "added" if ta is None else "removed" if tb is None else "same" if ta == tb else "changed"
        text = "" if status == "same" else "".join(difflib.unified_diff(
            _lines(ta), _lines(tb), "/dev/null" if ta is None else f"a/{name}",
            "/dev/null" if tb is None else f"b/{name}", n=context))
        out.append({"file": name, "status": status, "diff": text})
    return out


def _lines(text: str | None) -> list[str]:
    if text is None:
        return []
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


# ---- the whole diff ----------------------------------------------------------------------------------

@dataclass
class Diff:
    a: Side
    b: Side
    code: list[dict]
    hyper_a: dict[str, object]
    hyper_b: dict[str, object]
    hyper_from: tuple[str, str]
    env_a: dict
    env_b: dict
    metrics: dict
    comparability: list = field(default_factory=list)  # why A and B are not like for like

    @property
    def hyperparameters(self) -> list[dict]:
        """Only the names whose values differ (absent on one side counts as different)."""
        names = list(self.hyper_a) + [n for n in self.hyper_b if n not in self.hyper_a]
        return [{"name": n, "a": self.hyper_a.get(n, ABSENT), "b": self.hyper_b.get(n, ABSENT)}
                for n in names if self.hyper_a.get(n, ABSENT) != self.hyper_b.get(n, ABSENT)]

    @property
    def environment(self) -> list[dict]:
        return [{"name": k, "a": self.env_a.get(k), "b": self.env_b.get(k)}
                for k in dict.fromkeys([*self.env_a, *self.env_b]) if self.env_a.get(k) != self.env_b.get(k)]

    def to_json(self) -> dict:
        """The `speedrun diff --json` contract (add keys, never rename)."""
        return {"a": _describe(self.a, self.hyper_from[0], self.hyper_a, self.env_a),
                "b": _describe(self.b, self.hyper_from[1], self.hyper_b, self.env_b),
                "code": self.code,
                "hyperparameters": [{"name": h["name"], "a": _jsonable(h["a"]), "b": _jsonable(h["b"])}
                                    for h in self.hyperparameters],
                "environment": self.environment,
                "metrics": self.metrics,
                "comparability": self.comparability}


def _describe(s: Side, hyper_from: str, hyper: dict, env: dict) -> dict:
    return {"spec": s.spec, "kind": s.kind, "path": str(s.path), "record_id": s.record_id,
            "logs": [p.file for p in s.logs], "runs": run_metrics(s), "files": sorted(s.sources),
            "hyperparameters_from": hyper_from, "hyperparameters": {k: _jsonable(v) for k, v in hyper.items()},
            "environment": env, "warnings": s.warnings + [f"{p.file}: {w}" for p in s.logs for w in p.warnings]}


def _jsonable(v):
    if v is ABSENT:
        return None
    if isinstance(v, Unreadable):
        return {"unreadable": v.source}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # a hyperparameter written as inf or nan is shown, not dropped
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)  # sets, complex numbers, bytes: shown as Python writes them


def diff(a_spec: str, b_spec: str, context: int = 3) -> Diff:
    if context < 0:
        raise InputError(f"--context {context}: must be ≥ 0")
    a, b = resolve(a_spec), resolve(b_spec)
    (ha, fa), (hb, fb) = hyperparameters(a), hyperparameters(b)
    ea, eb = environment(a), environment(b)
    warn = comparability(a, b, ea, eb)
    d = Diff(a, b, code_diff(a.sources, b.sources, context), ha, hb, (fa, fb), ea, eb, metrics(a, b, warn))
    d.comparability = warn
    return d


# ---- output ------------------------------------------------------------------------------------------

def _show(v) -> str:
    return "(absent)" if v is ABSENT else "-" if v is None else repr(v) if isinstance(v, str) else str(v)


def _side_line(s: Side) -> str:
    what = f"record {s.record_id}" if s.kind == "record" else "log"
    return f"{s.spec}  ({what}, {len(s.logs)} log(s), {len(s.runs())} run(s))"


def render(d: Diff, console) -> None:
    """Human output with rich: sides, colored unified diffs, then tables of what changed."""
    from rich.table import Table
    from rich.text import Text

    c = console
    c.print(Text.assemble(("A: ", "bold"), _side_line(d.a)))
    c.print(Text.assemble(("B: ", "bold"), _side_line(d.b)))

    c.rule("code")
    for f in d.code:
        plus = sum(1 for ln in f["diff"].splitlines() if ln.startswith("+") and not ln.startswith("+++"))
        minus = sum(1 for ln in f["diff"].splitlines() if ln.startswith("-") and not ln.startswith("---"))
        style = {"same": "dim", "changed": "yellow", "added": "green", "removed": "red"}[f["status"]]
        c.print(Text.assemble((f["file"], "bold"), "  ", (f["status"], style),
                              "" if f["status"] == "same" else f" (+{plus} −{minus})"))
        for ln in f["diff"].splitlines():
            st = ("bold" if ln.startswith(("+++", "---")) else "green" if ln.startswith("+")
                  else "red" if ln.startswith("-") else "cyan" if ln.startswith("@@") else "")
            c.print(Text(ln, style=st), soft_wrap=True)  # Text, not markup: code is full of [brackets]

    c.rule("hyperparameters")
    c.print(Text(f"A: {d.hyper_from[0]}\nB: {d.hyper_from[1]}", style="dim"))
    hp = d.hyperparameters
    if hp:
        t = Table(show_edge=False)
        for col in ("name", "A", "B"):
            t.add_column(col, overflow="fold")
        for h in hp:
            t.add_row(h["name"], _show(h["a"]), _show(h["b"]))
        c.print(t)
    else:
        c.print(f"no changes ({len(d.hyper_a)} read)" if d.hyper_a or d.hyper_b else "nothing to compare")

    c.rule("environment")
    if d.environment:
        t = Table(show_edge=False)
        for col in ("name", "A", "B"):
            t.add_column(col, overflow="fold")
        for e in d.environment:
            t.add_row(e["name"], _show(e["a"]), _show(e["b"]))
        c.print(t)
    same = [f"{k} {v}" for k, v in d.env_a.items() if v is not None and d.env_b.get(k) == v]
    c.print(Text("same: " + ("; ".join(same) or "nothing known on both sides"), style="dim"))

    c.rule("metrics (B − A, Welch 95% CI)")
    t = Table(show_edge=False)
    for col in ("metric", "A mean", "B mean", "Δ", "95% CI", "relative"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    fmts = {"val_loss": ".4f", "train_time_ms": ",.0f", "steps": ",.1f"}
    for name, m in d.metrics.items():
        f = fmts[name]
        num = (lambda v, f=f: "-" if v is None else format(v, f))
        ci = m["ci95"]
        t.add_row(name, f"{num(m['a_mean'])} (n={m['n_a']})", f"{num(m['b_mean'])} (n={m['n_b']})",
                  "-" if m["delta"] is None else format(m["delta"], "+" + f),
                  f"[{num(ci[0])}, {num(ci[1])}]" if ci else m.get("note", "-"),
                  "-" if m["relative"] is None else f"{m['relative']:+.2%}")
    c.print(t)
    t = d.metrics["train_time_ms"]
    for w in d.comparability:
        c.print(Text(f"not like for like: {w}", style="bold yellow"))
    stored = t.get("side_by_side")
    if stored:
        lo, hi = stored.get("ci95") or (None, None)
        c.print(f"speedup of B over A, measured side by side: [bold]{stored['speedup']:.3f}×[/]"
                + (f" (95% CI {lo:.3f}–{hi:.3f})" if lo is not None else "")
                + (f"; the ratio of the two sides' mean times ({t['ratio_of_means']:.3f}×) compares different "
                   "nodes" if d.comparability and t.get("ratio_of_means") else ""), highlight=False)
    elif t.get("speedup"):
        c.print(f"speedup of B over A (mean train time A / B, same hardware): [bold]{t['speedup']:.3f}×[/]")
    elif t.get("ratio_of_means"):
        c.print(Text(f"no speedup shown: A and B were not timed side by side on the same hardware (their mean "
                     f"times' ratio, {t['ratio_of_means']:.3f}×, compares different nodes or versions)",
                     style="yellow"))
    for s, tag in ((d.a, "A"), (d.b, "B")):
        for w in s.warnings + [f"{p.file}: {w}" for p in s.logs for w in p.warnings]:
            c.print(Text(f"{tag}: {w}", style="yellow"))


def plot(d: Diff, path: str) -> str:
    """Val loss vs step and vs train time, every run of A in one color and of B in another; a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install matplotlib (or drop --plot)") from None
    fig, (ax_step, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    tops, lows = [], []
    for s, tag, color in ((d.a, "A", "tab:blue"), (d.b, "B", "tab:orange")):
        for k, (file, trial, t) in enumerate(s.runs()):
            pts = [p for p in t.val if p.loss is not None and math.isfinite(p.loss)]
            if not pts:
                continue
            name = s.record_id or Path(s.spec).name
            label = f"{tag}: {name if len(name) <= 40 else name[:39] + '…'}" if k == 0 else None
            ax_step.plot([p.step for p in pts], [p.loss for p in pts], color=color, alpha=0.7, lw=1, label=label)
            timed = [p for p in pts if p.time_ms is not None]
            ax_time.plot([p.time_ms / 1000 for p in timed], [p.loss for p in timed], color=color, alpha=0.7, lw=1,
                         label=label)
            lows.append(min(p.loss for p in pts))
            tops.append(max(p.loss for p in pts[1:]) if len(pts) > 1 else pts[0].loss)
    for ax, xlabel in ((ax_step, "step"), (ax_time, "train time (s)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("val loss")
        ax.grid(alpha=0.3)
        if lows:  # the step-0 loss (≈ log vocab) would flatten the part of the curves that matters
            span = max(tops) - min(lows)
            ax.set_ylim(min(lows) - 0.05 * span - 1e-3, max(tops) + 0.05 * span + 1e-3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle("speedrun diff: val loss")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise InputError(f"--plot {path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    return path
