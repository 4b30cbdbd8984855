"""Run logs as one tidy table for analysis: a row per step line of every trial of every log.

    import harness
    df = harness.frame(["records/track_1_short"])        # folders are searched for .txt/.log run logs
    df[df.kind == "val"].groupby("file").val_loss.last()

Columns: file, trial (0-based, per file), step, total_steps, kind ("val" or "train"), val_loss (val
rows), train_loss (train rows that log one), train_time_ms, step_avg_ms, line, era, code_sha256, gpus,
torch, date (when the run ran, from nvidia-smi). pandas is imported only here.
"""
from __future__ import annotations

from pathlib import Path

from harness import logs

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


def frame(paths):
    """A pandas DataFrame of every step line in `paths` (files or folders), sorted by file, trial, line.
    A folder's files that are not run logs are passed over; a named file that is not one is an error."""
    from harness.errors import InputError

    try:
        import pandas as pd
    except ImportError:
        raise InputError("tables of step lines need pandas: pip install -e '.[tables]'") from None

    named = {Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths) if not Path(p).is_dir()}
    out = []
    for f in files(paths):
        parsed = logs.parse_file(f)
        if not parsed.trials and f in named:
            raise InputError(f"{f}: no step lines: not a run log (see `speedrun parse {f}`)")
        out += rows(parsed)
    df = pd.DataFrame(out, columns=list(COLUMNS))
    del out
    # Repeated strings as categoricals: one copy per distinct value, not per row (a tenth of the memory).
    for col in CATEGORICAL:
        df[col] = df[col].astype("category")
    for col in ("trial", "step", "total_steps", "line"):
        df[col] = pd.to_numeric(df[col], downcast="integer")
    return df.sort_values(["file", "trial", "line"], kind="stable").reset_index(drop=True)


def write(df, csv: str | None = None, parquet: str | None = None) -> list[str]:
    """Write the frame as CSV and/or Parquet (Parquet needs pyarrow); returns what was written."""
    from harness.errors import InputError

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
