"""Run logs as one tidy table for analysis: a row per step line of every trial of every log.

    import harness
    df = harness.frame(["records/track_1_short"])        # folders are searched for .txt/.log run logs
    df[df.kind == "val"].groupby("file").val_loss.last()

Columns: file, trial (0-based, per file), step, total_steps, kind ("val" or "train"), val_loss (val
rows), train_loss (train rows that log one), train_time_ms, step_avg_ms, line, era, code_sha256, gpus,
torch, date (when the run ran, from nvidia-smi). pandas is imported only here. Strings are categoricals
(file, kind, era, code_sha256, gpus, torch, date); missing numbers are NaN.
"""
from __future__ import annotations

from pathlib import Path

from harness.judge import logs

CATEGORICAL = ("file", "kind", "era", "code_sha256", "gpus", "torch", "date")
COLUMNS = ("file", "trial", "step", "total_steps", "kind", "val_loss", "train_loss", "train_time_ms", "step_avg_ms",
           "line", "era", "code_sha256", "gpus", "torch", "date")


def files(paths) -> list[Path]:
    """The log files named, and every .txt/.log under the folders named (sorted, symlinks not followed)."""
    out = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(p)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".log") and f.is_file() and not f.is_symlink())
        else:
            out.append(p)
    return out


def rows(parsed: logs.ParsedLog):
    g = parsed.env.gpus
    common = {"file": parsed.file, "era": parsed.era, "code_sha256": parsed.code_sha256,
              "gpus": None if g is None else f"{g.count}× {g.model}", "torch": parsed.env.torch,
              "date": parsed.env.date}
    for k, t in enumerate(parsed.trials):
        for kind, points in (("val", t.val), ("train", t.train)):
            for p in points:
                yield {**common, "trial": k, "step": p.step, "total_steps": t.total_steps, "kind": kind,
                       "val_loss": p.loss if kind == "val" else None, "train_loss": p.loss if kind == "train" else None,
                       "train_time_ms": p.time_ms, "step_avg_ms": p.step_avg_ms, "line": p.line}


NUMERIC = ("trial", "step", "total_steps", "val_loss", "train_loss", "train_time_ms", "step_avg_ms", "line")
PER_LOG = ("file", "era", "code_sha256", "gpus", "torch", "date")  # one value per log


def _part(parsed: logs.ParsedLog, np) -> dict:
    """One log's rows as arrays (numbers) and its val/train flags; its strings are kept once, per log."""
    cols = {c: [] for c in NUMERIC}
    is_val = []
    for k, t in enumerate(parsed.trials):
        for kind, points in (("val", t.val), ("train", t.train)):
            n = len(points)
            cols["trial"] += [k] * n
            cols["total_steps"] += [np.nan if t.total_steps is None else t.total_steps] * n
            is_val += [kind == "val"] * n
            cols["step"] += [p.step for p in points]
            loss = [np.nan if p.loss is None else p.loss for p in points]
            cols["val_loss"] += loss if kind == "val" else [np.nan] * n
            cols["train_loss"] += loss if kind == "train" else [np.nan] * n
            cols["train_time_ms"] += [np.nan if p.time_ms is None else p.time_ms for p in points]
            cols["step_avg_ms"] += [np.nan if p.step_avg_ms is None else p.step_avg_ms for p in points]
            cols["line"] += [p.line for p in points]
    out = {c: np.asarray(v, dtype=np.int64 if c in ("trial", "step", "line") else np.float64) for c, v in cols.items()}
    out["is_val"] = np.asarray(is_val, dtype=bool)
    return out


def frame(paths):
    """A pandas DataFrame of every step line in `paths` (files or folders), sorted by file, trial, line.
    A folder's files that are not run logs are passed over; a named file that is not one is an error.
    Built log by log into arrays (no row objects: a public history's 2 M rows take ~120 MB); the strings
    repeated on every row of a log are categoricals."""
    from harness.core.errors import InputError

    try:
        import numpy as np
        import pandas as pd
    except ImportError:
        raise InputError("tables of step lines need pandas: pip install -e '.[tables]'") from None

    named = {Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths) if not Path(p).is_dir()}
    parts, per_log = [], {c: [] for c in PER_LOG}
    for f in files(paths):
        parsed = logs.parse_file(f)
        if not parsed.trials and f in named:
            raise InputError(f"{f}: no step lines: not a run log (see `speedrun parse {f}`)")
        if not parsed.trials:
            continue
        parts.append(_part(parsed, np))
        g = parsed.env.gpus
        for c, v in zip(PER_LOG, (parsed.file, parsed.era, parsed.code_sha256,
                                  None if g is None else f"{g.count}× {g.model}", parsed.env.torch, parsed.env.date)):
            per_log[c].append(v)
    if not parts:
        return pd.DataFrame(columns=list(COLUMNS))
    sizes = np.array([len(p["line"]) for p in parts])
    data = {c: np.concatenate([p[c] for p in parts]) for c in NUMERIC}
    is_val = np.concatenate([p["is_val"] for p in parts])
    del parts
    for c in PER_LOG:  # each log's value repeated over its rows, as codes into one set of categories
        cats = sorted({v for v in per_log[c] if v is not None})
        index = {v: i for i, v in enumerate(cats)}
        codes = np.repeat(np.array([index.get(v, -1) for v in per_log[c]], dtype=np.int32), sizes)
        data[c] = pd.Categorical.from_codes(codes, categories=cats)
    data["kind"] = pd.Categorical.from_codes(is_val.astype(np.int8), categories=["train", "val"])
    df = pd.DataFrame({c: data[c] for c in COLUMNS})
    for col in ("trial", "step", "line"):
        df[col] = pd.to_numeric(df[col], downcast="integer")
    return df.sort_values(["file", "trial", "line"], kind="stable").reset_index(drop=True)


def write(df, csv: str | None = None, parquet: str | None = None) -> list[str]:
    """Write the frame as CSV and/or Parquet (Parquet needs pyarrow); returns what was written."""
    from harness.core.errors import InputError

    done = []
    if csv:
        df.to_csv(csv, index=False)
        done.append(csv)
    if parquet:
        try:
            df.to_parquet(parquet, index=False)
        except ImportError as e:
            raise InputError(f"--parquet {parquet}: needs pyarrow ({e}); `pip install pyarrow`, or use --csv") from None
        done.append(parquet)
    return done
