"""The rules in force on a date, and the rule-3 facts of a script: its compiler flags.

A track's rules changed over its history. `track.toml` holds them as data: the top-level tables are
the base, and `[[rules.epochs]]` lists each change with the date (and, where known, the record) from
which it applies; an epoch names only what it changes. `at(track, date)` resolves the rules a record
of that date is judged by, and says which epoch that is.

Rule 3 of the public speedrun: no torch._inductor.config or torch.compile flag that the parent record
did not set. `flags(source)` reads them from the live code (comments do not count; nothing is run):
assignments to `torch._inductor.config.<name>` (through any alias), `torch._inductor.config.patch(...)`,
`TORCHINDUCTOR_*` environment variables set in the code, and `torch.compile(mode=…, options=…)`.
`dynamic`, `fullgraph` and `backend` are arguments, not flags: they change what is compiled, not how
long inductor searches.
"""
from __future__ import annotations

import ast
import datetime as dt
import functools
import re
import warnings

SIGNIFICANCE = ("single-run", "t-test", "margin")
TIMING = ("reset-after-10", "from-step-0")
FLAGS = ("any", "parent")
SPEED = ("interval", "logged-time", "none")  # rule 4: harness/judge.py
EPOCH_KEYS = {"name", "since", "since_record", "significance", "timing", "flags", "speed", "systems_only"}


def epochs(track: dict) -> list[dict]:
    """The track's epochs in order, each resolved to every rule (what an epoch leaves out, it inherits)."""
    sig = track["significance"]
    rules = track.get("rules", {})
    base = {"name": "current", "since": None, "since_record": None, "significance": sig.get("test", "t-test"),
            "alpha": sig.get("alpha", 0.01), "c": sig.get("c"), "dedupe": sig.get("dedupe", True),
            "timing": rules.get("timing", "from-step-0"), "flags": rules.get("flags", "parent"),
            "allowed_flags": list(rules.get("allowed_flags", [])), "systems_only": rules.get("systems_only"),
            "speed": track.get("speed", {}).get("test", "interval"),
            "speed_level": track.get("speed", {}).get("level", 0.95)}
    out, cur = [], dict(base)
    for e in rules.get("epochs", []):
        cur = {**cur, "since_record": None, **e}  # a record number bounds only its own epoch
        if "systems_only" in e:  # an epoch says whether rule 2's exception exists; its thresholds are the track's
            cur["systems_only"] = base["systems_only"] if e["systems_only"] else None
        out.append(dict(cur))
    return out or [base]


def at(track: dict, date: str | None = None, record: int | None = None) -> dict:
    """The rules in force for a record of `date` (YYYY-MM-DD; None: today) or of public record number
    `record` (used where the epoch states `since_record` and the number is known)."""
    eps = epochs(track)
    today = dt.date.today().isoformat()
    chosen = eps[0]
    for e in eps:
        if record is not None and e.get("since_record") is not None:
            if record >= e["since_record"]:
                chosen = e
        elif e.get("since") is None or (date or today) >= e["since"]:
            chosen = e
    return chosen


def validate(track: dict, where: str) -> str | None:
    """What is wrong with the track's rule history, or None."""
    rules = track.get("rules", {})
    for k, v in (("timing", rules.get("timing")), ("flags", rules.get("flags"))):
        if v is not None and v not in (TIMING if k == "timing" else FLAGS):
            return f"rules.{k} = {v!r}; known: {', '.join(TIMING if k == 'timing' else FLAGS)}"
    test = track.get("speed", {}).get("test", "interval")
    if test not in SPEED:
        return f"speed.test = {test!r}; known: {', '.join(SPEED)}"
    prev = ""
    for i, e in enumerate(rules.get("epochs", [])):
        bad = set(e) - EPOCH_KEYS
        if bad:
            return f"rules.epochs[{i}] has unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(EPOCH_KEYS))})"
        for key, known in (("significance", SIGNIFICANCE), ("timing", TIMING), ("flags", FLAGS), ("speed", SPEED)):
            if key in e and e[key] not in known:
                return f"rules.epochs[{i}].{key} = {e[key]!r}; known: {', '.join(known)}"
        if "systems_only" in e and not isinstance(e["systems_only"], bool):
            return f"rules.epochs[{i}].systems_only must be true or false (whether rule 2's exception applies)"
        since = e.get("since")
        if not isinstance(since, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", since):
            return f"rules.epochs[{i}].since must be a YYYY-MM-DD string (the date it applies from)"
        if since < prev:
            return f"rules.epochs[{i}].since {since} is before the epoch above it: list epochs in order"
        prev = since
    return None


# ---- live code: comments are not code ---------------------------------------------------------------------

# One pass in C over string literals (kept: a '#' inside one is no comment) and comments (blanked).
_STRING = (r"(?:[rRbBuUfF]{1,2})?(?:" + r'"""(?:\\.|[^\\])*?"""' + "|" + r"'''(?:\\.|[^\\])*?'''" + "|"
           + r'"(?:\\.|[^"\\\n])*"' + "|" + r"'(?:\\.|[^'\\\n])*'" + ")")
_LEXEMES = re.compile(f"(?P<s>{_STRING})|(?P<c>#[^\\n]*)", re.S)


@functools.lru_cache(maxsize=512)  # once per distinct source: a folder of 20 runs of one script is read once
def live_code(text: str) -> str:
    """`text` with every comment blanked, line for line (strings, docstrings included, stay)."""
    return _LEXEMES.sub(lambda m: "" if m.group("c") is not None else m.group(0), text)


# ---- rule 3: compiler flags in the live code -----------------------------------------------------------

# Cheap test first: only live code that mentions inductor or passes mode=/options= to torch.compile is parsed.
_MAYBE = re.compile(r"_inductor|TORCHINDUCTOR_|torch\.compile\((?:[^()]|\([^()]*\))*\b(?:mode|options)\s*=")

INDUCTOR = "torch._inductor.config"
COMPILE_FLAG_ARGS = ("mode", "options")


@functools.lru_cache(maxsize=512)  # once per distinct source (do not mutate the result)
def flags(source: str) -> dict[str, str]:
    """Flag name → where it is set (`line N`), for every inductor config / torch.compile flag in `source`."""
    if not _MAYBE.search(live_code(source)):
        return {}
    try:
        with warnings.catch_warnings():  # a log's code is not ours to lint ("invalid escape sequence")
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except SyntaxError:
        return {}
    aliases = {INDUCTOR: INDUCTOR}  # local name → the dotted module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("torch"):
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torch"):
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found: dict[str, str] = {}

    def dotted(n) -> str | None:
        parts = []
        while isinstance(n, ast.Attribute):
            parts.append(n.attr)
            n = n.value
        if not isinstance(n, ast.Name):
            return None
        head = aliases.get(n.id, n.id)
        return ".".join([head, *reversed(parts)])

    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            name = dotted(t)
            if name and name.startswith(INDUCTOR + "."):
                found.setdefault(name, f"line {node.lineno}")
            if isinstance(t, ast.Subscript) and dotted(t.value) in ("os.environ",):
                key = t.slice.value if isinstance(t.slice, ast.Constant) else None
                if isinstance(key, str) and key.startswith("TORCHINDUCTOR_"):
                    found.setdefault(f"env {key}", f"line {node.lineno}")
        if isinstance(node, ast.Call):
            fn = dotted(node.func) or ""
            if fn == INDUCTOR + ".patch":
                for kw in node.keywords:
                    if kw.arg:
                        found.setdefault(f"{INDUCTOR}.{kw.arg}", f"line {node.lineno}")
                for a in node.args:
                    if isinstance(a, ast.Dict):
                        for k in a.keys:
                            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                                found.setdefault(f"{INDUCTOR}.{k.value}", f"line {node.lineno}")
            elif fn == "torch.compile":
                for kw in node.keywords:
                    if kw.arg in COMPILE_FLAG_ARGS:
                        found.setdefault(f"torch.compile({kw.arg}=)", f"line {node.lineno}")
            elif fn in ("os.environ.setdefault", "os.environ.update", "os.putenv"):
                for a in node.args[:1]:
                    if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("TORCHINDUCTOR_"):
                        found.setdefault(f"env {a.value}", f"line {node.lineno}")
    return found


def extra_flags(sources: dict[str, str], parent: dict[str, str] | None, allowed=()) -> dict[str, str]:
    """Flags set anywhere in `sources` (file → text) that the parent's sources do not set, less `allowed`
    (names, or their last dotted part), each as "file: line N"."""
    mine = {k: f"{name}: {where}" for name, text in sources.items() for k, where in flags(text).items()}
    theirs = {k for text in (parent or {}).values() for k in flags(text)}
    ok = set(allowed)
    return {k: v for k, v in sorted(mine.items()) if k not in theirs and k not in ok and k.rsplit(".", 1)[-1] not in ok}
