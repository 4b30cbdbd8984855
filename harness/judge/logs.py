"""Run logs: read every speedrun log format into per-file facts (source, environment, trials).

Formats read (see ../shared/fixtures/README.md for real examples):

- ours (`train_gpt.py`): `# ==== file: <path> ====` banners | 100 `=` | env | 100 `=` | run | `RESULT {json}`;
- modded-nanogpt since Oct 2024: code first (or after a leading separator), later files after a
  `----` / `# name.py` / `----` banner, 2–4 separators, an optional dataloader block, step lines with
  or without `train_loss`, `train_time` in ms or s, `step_avg:nanms`, extra `key:value` fields;
  several trials in one file (each `step:0/… val_loss` line starts one);
- llm.c (`s:N trl:X …` / `s:N tel:X`): no code, no environment, no train time.

What cannot be read is reported as a warning with its line number; nothing is guessed silently.
Standard library only: `speedrun parse` must start without torch or numpy.
"""
from __future__ import annotations

import bisect
import gc
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from operator import itemgetter

from harness.core.errors import InputError
from harness.core.files import number, sha256_text

SEPARATOR = "=" * 100
MAIN_FILE = "train_gpt.py"  # the name given to a leading file that has no banner of its own

# Eras decide the timing rule `verify` applies.
ERA_OURS = "speedrun"        # this project's trainer
ERA_MODDED = "modded"        # modded-nanogpt: train_time monotonic from step 0
ERA_RESET10 = "modded-reset10"  # Oct 2024–early 2025: steps 1–10 include compilation, the clock resets after step 10
ERA_LLMC = "llm.c"           # no train time at all

OUR_BANNER = re.compile(r"# ==== file: (.+?) ====\r?$")
DASHES = re.compile(r"-{10,}\r?$")
MODDED_BANNER = re.compile(r"# (\S+\.py)\r?$")

# The common step-line shapes in one regex (the fast path); anything else goes through _slow_step().
# It runs over the whole run section at once (findall, MULTILINE), so nothing in it may cross a newline.
FAST_STEP = re.compile(r"^step:(\d+)/(\d+) (?:(val_loss|train_loss):(\d+\.\d+|nan) )?train_time:(\d+(?:\.\d*)?)(ms|s) "
                       r"step_avg:(nan|\d+(?:\.\d*)?)ms[ \t\r]*$", re.MULTILINE)
RUN_PREFIXES = ("step:", "s:", "peak memory", "RESULT ")
STEP_HEAD = re.compile(r"step:(\d+)(?:/(\d+))?((?:\s+\S+)*)\s*$")
LLMC = re.compile(r"s:(\d+) (trl|tel):(\S+)")
PEAK = re.compile(r"peak memory (?:allocated|consumption): (\d+) MiB(?: reserved: (\d+) MiB)?")
TIME = re.compile(r"(\d+(?:\.\d*)?)(ms|s)$")

PYTHON = re.compile(r"Running Python (\S+)")
TORCH = re.compile(r"Running [Pp]y[Tt]orch (\S+) compiled for CUDA (\S+)(?: on (.+?) with world_size (\d+))?")
TRITON = re.compile(r"Running Triton version (\S+)")
SMI_GPU = re.compile(r"\|\s+(\d+)\s+(.+?)\s+(?:On|Off)\s+\|")
SMI_SUBSTITUTE = re.compile(r"nvidia-smi: unavailable .*; torch sees (\d+)× (.+?)\s*$")
OURS = re.compile(r"speedrun ((?:\S+:\S+ ?)+)\s*$")
CODE_SHA = re.compile(r"code_sha256 (\S+): ([0-9a-f]{64})")
DATA_SHA = re.compile(r"data_sha256: ([0-9a-f]*)")
VAL_SHA = re.compile(r"val_shard_sha256 (.+?): ([0-9a-f]{64})\s*$")
CPU = re.compile(r"CPU: (.*)")
SMI_DATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(\d{1,2}) "
                      r"(\d\d:\d\d:\d\d) (\d{4})\s*$")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Point(tuple):
    """One step line: (step, total, loss, time_ms, step_avg_ms, line). `loss` is the val loss of a val
    point, the train loss (or None) of a train point; step_avg_ms is None where the log says nan; line
    is 1-based. A tuple subclass without a Python __new__: `Point(iterable)` builds in C, which is
    what makes hundreds of thousands of step lines cheap (a NamedTuple costs a Python call each)."""
    __slots__ = ()
    step = property(itemgetter(0))
    total = property(itemgetter(1))
    loss = property(itemgetter(2))
    time_ms = property(itemgetter(3))
    step_avg_ms = property(itemgetter(4))
    line = property(itemgetter(5))


@dataclass
class Trial:
    """One training run: from a `step:0` val line (or the first step line) to the next one."""
    start_line: int
    val: list[Point] = field(default_factory=list)
    train: list[Point] = field(default_factory=list)
    total_steps: int | None = None
    peak_memory_mib: int | None = None
    peak_reserved_mib: int | None = None
    result: dict | None = None  # our `RESULT {json}` line
    result_line: int | None = None

    @property
    def final_step(self) -> int | None:
        steps = [p.step for p in (self.val[-1:] + self.train[-1:])]
        return max(steps) if steps else None

    @property
    def final_val(self) -> Point | None:
        return self.val[-1] if self.val else None

    @property
    def complete(self) -> bool:
        """Reached its last step and validated there."""
        v = self.final_val
        return v is not None and self.total_steps is not None and v.step == self.total_steps \
            and self.final_step == self.total_steps


@dataclass
class Gpus:
    count: int
    model: str | None
    source: str  # "nvidia-smi", "torch line", "substitute"


@dataclass
class Environment:
    python: str | None = None
    torch: str | None = None
    cuda: str | None = None
    triton: str | None = None
    gpus: Gpus | None = None
    cpu: str | None = None
    speedrun: dict = field(default_factory=dict)     # our `speedrun track:… preset:…` line
    code_sha256: dict = field(default_factory=dict)  # path → hex, as the env block states it
    data_sha256: str | None = None
    val_shard_sha256: dict = field(default_factory=dict)  # val shard file name → hex (vs the track's [data.pin])
    date: str | None = None  # when the run started, from nvidia-smi's header (YYYY-MM-DDTHH:MM:SS)
    node: dict = field(default_factory=dict)  # our `node: {json}` line: matmul TFLOP/s, all-reduce GB/s, GPUs


@dataclass
class ParsedLog:
    file: str
    era: str
    sources: dict[str, str]        # embedded path → exact text (empty for llm.c)
    env: Environment
    trials: list[Trial]
    warnings: list[str]
    separators: int
    ends_with_newline: bool
    size: int
    last_line_whole: bool = True  # without a final newline: is the last line still a whole line (not cut)?

    @property
    def cut(self) -> bool:
        """Truncated mid-line: no final newline and the last line is not whole. A last line that lacks
        only its newline is complete."""
        return not self.ends_with_newline and not self.last_line_whole

    @property
    def code_sha256(self) -> str | None:
        """sha256 of the main file's embedded text (what our RESULT and env block state)."""
        src = self.sources.get(MAIN_FILE)
        return sha256_text(src) if src is not None else None

    @property
    def code_sha256s(self) -> dict[str, str]:
        return {name: sha256_text(text) for name, text in self.sources.items()}

    def to_json(self) -> dict:
        """The `speedrun parse --json` contract (relied on by outside scripts: add, never rename)."""
        g = self.env.gpus
        return {"file": self.file, "era": self.era, "code_sha256": self.code_sha256,
                "gpus": None if g is None else {"count": g.count, "model": g.model},
                "torch": self.env.torch,
                "trials": [{"val": [[p.step, number(p.loss), p.time_ms] for p in t.val],
                            "total_steps": t.total_steps, "final_step": t.final_step} for t in self.trials],
                "warnings": list(self.warnings)}


# ---- reading ---------------------------------------------------------------------------------------

def parse_file(path: str | Path) -> ParsedLog:
    """Parse one log file; a missing or unreadable file is an InputError (exit 2)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e.strerror})") from None
    warnings = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        warnings.append(f"byte {e.start}: not UTF-8; undecodable bytes replaced (code hashes will not match)")
        text = data.decode("utf-8", errors="replace")
    return parse_text(text, file=str(path), warnings=warnings, size=len(data))


def parse_text(text: str, file: str = "<text>", warnings: list[str] | None = None,
               size: int | None = None) -> ParsedLog:
    # Parsing allocates a tuple per step line and no cycles: with the cyclic GC rescanning the growing
    # lists every few hundred allocations, it runs 1.5× slower (13 vs 20 MB/s).
    paused = gc.isenabled()
    gc.disable()
    try:
        return _parse_text(text, file, [] if warnings is None else warnings, size)
    finally:
        if paused:
            gc.enable()


def _parse_text(text: str, file: str, warnings: list[str], size: int | None) -> ParsedLog:
    lines = text.split("\n")
    ends_nl = text.endswith("\n")
    if ends_nl:
        lines.pop()  # the empty string after the final newline
    seps = [i for i, line in enumerate(lines) if line == SEPARATOR or line == SEPARATOR + "\r"]

    # Sections: code | env | run. The env block is the first block whose first line says "Running …".
    bounds = [-1, *seps, len(lines)]
    env_block = None
    for k in range(len(bounds) - 1):
        a, b = bounds[k] + 1, bounds[k + 1]
        first = next((lines[i] for i in range(a, b) if lines[i].strip()), "")
        if first.startswith("Running "):
            env_block = (a, b, k)
            break
    if env_block is not None:
        a, b, k = env_block
        code_end = bounds[k]  # the separator that opens the env block
        code_start = 1 if seps and seps[0] == 0 else 0
        env_lines = range(a, b)
        # No closing separator (a file with one separator, or truncated in the env): the run follows inline.
        run_start = b + 1 if b < len(lines) else a
    elif seps:
        code_start = 1 if seps[0] == 0 else 0
        code_end = next((s for s in seps if s >= code_start), len(lines))
        env_lines, run_start = range(0), code_end + 1
        warnings.append(f"line {code_end + 1}: no environment block (no 'Running …' line after a separator)")
    else:  # llm.c, or a file cut before its first separator
        code_start = code_end = 0
        env_lines, run_start = range(0), 0

    sources = _split_sources(lines, code_start, code_end, warnings)
    env = _parse_env(lines, env_lines)
    trials, era_hint = _parse_run(lines, run_start, warnings)

    whole = ends_nl or not lines or _whole(lines[-1])
    if not trials:
        warnings.append("no step lines found: nothing to read about training")
    elif not whole:
        warnings.append(f"line {len(lines)}: the file does not end with a newline and its last line is cut (truncated?)")
    for t in trials:
        if t.total_steps is not None and t.final_step is not None and t.final_step < t.total_steps:
            warnings.append(f"line {t.start_line}: trial stops at step {t.final_step} of {t.total_steps} "
                            "(truncated, or stopped early)")

    ours = code_end > code_start and lines[code_start].startswith("# ==== file: ")
    era = ERA_OURS if ours or env.speedrun else era_hint
    return ParsedLog(file=file, era=era, sources=sources, env=env, trials=trials, warnings=warnings,
                     separators=len(seps), ends_with_newline=ends_nl, last_line_whole=whole,
                     size=len(text.encode()) if size is None else size)


WHOLE_PEAK = re.compile(PEAK.pattern + r"\s*$")


def _whole(line: str) -> bool:
    """A last line without its newline that is still whole: a full step line, peak-memory line or RESULT."""
    line = line.rstrip("\r")
    if line.startswith("step:"):
        return FAST_STEP.fullmatch(line) is not None or _slow_step(line, 0, []) is not None and \
            line.rstrip().endswith("ms")
    if line.startswith("peak memory"):
        return WHOLE_PEAK.match(line) is not None and line.rstrip().endswith("MiB")
    if line.startswith("RESULT "):
        try:
            return isinstance(json.loads(line[7:]), dict)
        except ValueError:
            return False
    return not line.strip()


def _split_sources(lines: list[str], start: int, end: int, warnings: list[str]) -> dict[str, str]:
    """The embedded files, split at our banners or at modded-nanogpt's `----` / `# name.py` / `----`."""
    if end <= start:
        return {}
    cuts = []  # (first line of the banner, first line of the text, name)
    for i in range(start, end):
        line = lines[i]
        if line.startswith("# ==== file: "):
            m = OUR_BANNER.match(line)
            if m:
                cuts.append((i, i + 1, m.group(1)))
        elif line.startswith("---") and i + 2 < end and DASHES.match(line) and lines[i + 2] == line:
            m = MODDED_BANNER.match(lines[i + 1])
            if m:
                cuts.append((i, i + 3, m.group(1)))
    sources = {}
    if not cuts or cuts[0][0] > start:
        first_end = cuts[0][0] if cuts else end
        if cuts and OUR_BANNER.match(lines[cuts[0][0]]):
            if any(lines[i].strip() for i in range(start, first_end)):
                warnings.append(f"line {start + 1}: text before the first file banner (not part of any file)")
        else:
            sources[MAIN_FILE] = _join(lines, start, first_end)
    for j, (_, text_start, name) in enumerate(cuts):
        text_end = cuts[j + 1][0] if j + 1 < len(cuts) else end
        if name in sources:
            warnings.append(f"line {text_start}: file {name} embedded twice; the later copy is kept")
        sources[name] = _join(lines, text_start, text_end)
    return sources


def _join(lines: list[str], a: int, b: int) -> str:
    return "\n".join(lines[a:b]) + "\n" if b > a else ""


def _parse_env(lines: list[str], rows: range) -> Environment:
    env = Environment()
    smi = {}
    for i in rows:
        line = lines[i].rstrip("\r")
        if line.startswith("Running "):
            if m := PYTHON.match(line):
                env.python = m.group(1)
            elif m := TORCH.match(line):
                env.torch, env.cuda = m.group(1), m.group(2)
                if m.group(3):
                    env.gpus = Gpus(int(m.group(4)), m.group(3), "torch line")
            elif m := TRITON.match(line):
                env.triton = m.group(1)
        elif line.startswith("|"):
            if m := SMI_GPU.match(line):
                smi[int(m.group(1))] = m.group(2)
        elif line.startswith("speedrun "):
            if m := OURS.match(line):
                env.speedrun = dict(tok.split(":", 1) for tok in m.group(1).split())
        elif line.startswith("code_sha256 "):
            if m := CODE_SHA.match(line):
                env.code_sha256[m.group(1)] = m.group(2)
        elif line.startswith("data_sha256: "):
            env.data_sha256 = DATA_SHA.match(line).group(1)
        elif line.startswith("val_shard_sha256 "):
            if m := VAL_SHA.match(line):
                env.val_shard_sha256[m.group(1)] = m.group(2)
        elif line.startswith("CPU: "):
            env.cpu = line[5:]
        elif line.startswith("node: {"):
            try:
                env.node = json.loads(line[6:])
            except ValueError:
                pass
        elif env.date is None and line[:3] in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun") and \
                (m := SMI_DATE.match(line)):
            env.date = f"{m[4]}-{MONTHS.index(m[1]) + 1:02d}-{int(m[2]):02d}T{m[3]}"
        elif line.startswith("nvidia-smi: unavailable"):
            if m := SMI_SUBSTITUTE.match(line):
                env.gpus = Gpus(int(m.group(1)), m.group(2), "substitute")
    if smi:
        models = sorted(set(smi.values()))
        env.gpus = Gpus(len(smi), models[0] if len(models) == 1 else " + ".join(models), "nvidia-smi")
    return env


def _parse_run(lines: list[str], start: int, warnings: list[str]) -> tuple[list[Trial], str]:
    # Speed: only lines that can matter are visited, and when every step line has the common shape one
    # C-level findall reads them all and one comprehension converts them (hundreds of MB in seconds).
    idx = [i for i in range(start, len(lines)) if lines[i].startswith(RUN_PREFIXES) or "val_loss:" in lines[i]]
    step_idx = [i for i in idx if lines[i].startswith("step:")]
    rows = FAST_STEP.findall("\n".join([lines[i] for i in step_idx]))
    if len(rows) == len(step_idx):
        # Column by column with map(), and Points built in C: no Python frame per line.
        steps, totals, keys, losses, times, units, avgs = zip(*rows) if rows else ((),) * 7
        losses = [float(x) if k else None for k, x in zip(keys, losses)]
        if "s" in units:  # train_time in seconds somewhere (track 3): convert those rows
            times = [float(t) if u == "ms" else round(float(t) * 1000.0, 3) for t, u in zip(times, units)]
        else:
            times = map(float, times)
        avgs = [None if a == "nan" else float(a) for a in avgs] if "nan" in avgs else map(float, avgs)
        points = list(map(Point, zip(map(int, steps), map(int, totals), losses, times, avgs,
                                     [i + 1 for i in step_idx])))
        is_val = [k == "val_loss" for k in keys]
    else:  # some line is off the common shape: read them one by one, reporting what cannot be read
        points, is_val = [], []
        for i in step_idx:
            parsed = _slow_step(lines[i], i + 1, warnings)
            if parsed is not None:
                step, total, loss, t, avg, val = parsed
                points.append(Point((step, total, loss, t, avg, i + 1)))
                is_val.append(val)

    llmc_points, llmc_val, other = [], [], []
    for i in idx:
        line = lines[i]
        if line.startswith("step:"):
            continue
        if line.startswith("s:"):
            m = LLMC.match(line)
            if m:
                llmc_points.append(Point((int(m.group(1)), None, _float(m.group(3)), None, None, i + 1)))
                llmc_val.append(m.group(2) == "tel")
            else:
                warnings.append(f"line {i + 1}: unreadable llm.c line: {line[:80]!r}")
        else:
            other.append(i)
    if llmc_points and not points:
        era, points, is_val = ERA_LLMC, llmc_points, llmc_val
    else:
        nan_avg_late = any(p.step_avg_ms is None and p.step > 1 for p in points)
        era = ERA_RESET10 if nan_avg_late else ERA_MODDED  # steps 1–10 untimed: step_avg is nan past step 1
        if llmc_points:
            warnings.append(f"{len(llmc_points)} llm.c lines mixed with {len(points)} step lines: llm.c lines ignored")

    trials = _split_trials(points, is_val, warnings)
    starts = [t.start_line for t in trials]
    for i in other:
        line, n = lines[i], i + 1
        k = bisect.bisect_right(starts, n) - 1
        cur = trials[k] if k >= 0 else None
        if line.startswith("peak memory"):
            m = PEAK.match(line)
            if m and cur is not None:
                cur.peak_memory_mib = int(m.group(1))
                cur.peak_reserved_mib = int(m.group(2)) if m.group(2) else None
            else:
                warnings.append(f"line {n}: unreadable peak memory line: {line[:80]!r}")
        elif line.startswith("RESULT "):
            try:
                res = json.loads(line[7:])
                if not isinstance(res, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                warnings.append(f"line {n}: unreadable RESULT line ({e})")
                continue
            if cur is None:
                warnings.append(f"line {n}: RESULT line before any step line")
            else:
                cur.result, cur.result_line = res, n
        elif "step:" in line:
            warnings.append(f"line {n}: looks like a step line but does not start with 'step:': {line[:80]!r}")
    return trials, era


def _split_trials(points: list[Point], is_val: list[bool], warnings: list[str]) -> list[Trial]:
    """Each val point at step 0 starts a trial (so does the first point, whatever it is)."""
    cuts = [j for j, (p, v) in enumerate(zip(points, is_val)) if v and p.step == 0]
    if points and (not cuts or cuts[0] != 0):
        cuts.insert(0, 0)
    trials = []
    for a, b in zip(cuts, cuts[1:] + [len(points)]):
        seg, val = points[a:b], is_val[a:b]
        t = Trial(start_line=seg[0].line, val=[p for p, v in zip(seg, val) if v],
                  train=[p for p, v in zip(seg, val) if not v])
        totals = [p for p in seg if p.total is not None]
        if totals:
            t.total_steps = totals[-1].total
            odd = next((p for p in totals if p.total != totals[0].total), None)
            if odd is not None:
                warnings.append(f"line {odd.line}: total steps {odd.total} differs from {totals[0].total} "
                                f"earlier in the trial")
        trials.append(t)
    return trials


def _float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def read_step(line: str):
    """One step line as (step, total, loss, time_ms, step_avg_ms, is_val), or None when it is not one."""
    m = FAST_STEP.match(line)
    if m:
        step, total, key, loss, t, unit, avg = m.groups()
        return (int(step), int(total), float(loss) if key else None,
                round(float(t) * 1000.0, 3) if unit == "s" else float(t), None if avg == "nan" else float(avg),
                key == "val_loss")
    return _slow_step(line, 0, [])


def _slow_step(line: str, n: int, warnings: list[str]):
    """A step line off the fast path: `step:N[/M]` then `key:value` fields in any order."""
    m = STEP_HEAD.match(line)
    if not m:
        warnings.append(f"line {n}: unreadable step line: {line[:100]!r}")
        return None
    step, total = int(m.group(1)), (int(m.group(2)) if m.group(2) else None)
    fields = {}
    for tok in m.group(3).split():
        k, sep, v = tok.partition(":")
        if not sep:
            warnings.append(f"line {n}: unreadable field {tok!r} in step line")
            return None
        fields[k] = v
    bad = []
    loss = None
    is_val = "val_loss" in fields
    if is_val or "train_loss" in fields:
        loss = _float(fields["val_loss" if is_val else "train_loss"])
        if loss is None:
            bad.append("loss")
    t = None
    if "train_time" in fields:
        mt = TIME.match(fields["train_time"])
        if mt:
            t = round(float(mt.group(1)) * 1000.0, 3) if mt.group(2) == "s" else float(mt.group(1))
        else:
            bad.append("train_time")
    avg = None
    if "step_avg" in fields:
        v = fields["step_avg"].removesuffix("ms")
        avg = None if v == "nan" else _float(v)
        if v != "nan" and avg is None:
            bad.append("step_avg")
    if bad:
        warnings.append(f"line {n}: unreadable {', '.join(bad)} in step line: {line[:100]!r}")
        return None
    if not fields:
        warnings.append(f"line {n}: step line without any field: {line[:100]!r}")
        return None
    return step, total, loss, t, avg, is_val


# ---- for people ------------------------------------------------------------------------------------

def render(parsed: list[ParsedLog], console) -> None:
    """`speedrun parse` for people: one row per file, then its warnings."""
    from rich.table import Table

    t = Table(title="speedrun parse")
    for col in ("file", "era", "trials", "final step", "val loss", "train time", "GPUs", "torch", "code", "warnings"):
        t.add_column(col, overflow="fold")
    for p in parsed:
        last = p.trials[-1] if p.trials else None
        v = last.final_val if last else None
        g = p.env.gpus
        t.add_row(Path(p.file).name, p.era, str(len(p.trials)),
                  "-" if last is None else f"{last.final_step}/{last.total_steps or '?'}",
                  "-" if v is None or v.loss is None else f"{v.loss:.4f}",
                  "-" if v is None or v.time_ms is None else f"{v.time_ms / 1000:.1f} s",
                  "-" if g is None else f"{g.count}× {(g.model or '?').removeprefix('NVIDIA ')}",
                  p.env.torch or "-", (p.code_sha256 or "-")[:12], str(len(p.warnings)))
    console.print(t)
    for p in parsed:
        for w in p.warnings:
            console.print(f"[yellow]{p.file}[/]: {w}", markup=True, highlight=False)
