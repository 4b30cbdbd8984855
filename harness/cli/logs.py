"""`speedrun parse|verify|diff`: read run logs of any era, judge them under a track's rules, compare them."""
from __future__ import annotations

import argparse
import sys

from harness.cli import add, emit, track
from harness.core.errors import EXIT_FAIL, EXIT_OK


def _date(text: str) -> str:
    import datetime as dt

    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def cmd_parse(args) -> int:
    from harness.judge import logs

    parsed = [logs.parse_file(f) for f in args.files]
    if args.csv or args.parquet:
        from harness.judge import tidy  # pandas, lazily

        df = tidy.frame(args.files)
        for path in tidy.write(df, csv=args.csv, parquet=args.parquet):
            print(f"{path}: {len(df):,} rows × {len(df.columns)} columns ({', '.join(df.columns)})", file=sys.stderr)
    return emit(args, [p.to_json() for p in parsed] if args.json else parsed, logs.render)


def cmd_verify(args) -> int:
    from harness.judge import verify
    from harness.public import submit

    name = track(args, required="verify")
    parent = submit.parent_reference(name, args.parent)
    verdict = verify.verify_files(args.files, name, script=args.script, date=args.date, parent=parent)
    return emit(args, verdict, verify.render, EXIT_OK if verdict.ok else EXIT_FAIL)


def cmd_diff(args) -> int:
    from harness.public import diff

    d = diff.diff(args.a, args.b, context=args.context)
    if args.plot:
        diff.plot(d, args.plot)
    code = emit(args, d, diff.render)  # a diff is not a check: exit 0
    if args.plot and not args.json:
        print(f"plot: {args.plot}")
    return code


def _parse(p):
    p.add_argument("files", nargs="+", metavar="FILE", help="run log(s)")
    p.add_argument("--csv", metavar="FILE", help="also write every step line as a tidy table (one row each) to FILE")
    p.add_argument("--parquet", metavar="FILE", help="the same table as Parquet (needs pyarrow)")


def _verify(p):
    p.add_argument("files", nargs="+", metavar="FILE", help="run log(s); every trial in a file is a run")
    p.add_argument("--script", help="the train_gpt.py every run must have embedded, byte for byte")
    p.add_argument("--parent", metavar="ID|DIR|LOG", help="the record these runs improve on, for rule 3 (no flag it "
                                                          "did not set): a record id, a record folder or a log "
                                                          "(default: the track's latest official record)")
    p.add_argument("--date", type=_date, help="judge under the rules in force on YYYY-MM-DD (default: the date the "
                                              "runs ran, from their nvidia-smi header, else today)")


def _diff(p):
    p.add_argument("a", metavar="A", help="a log file, a record folder, or a record id like tiny-cpu/0001")
    p.add_argument("b", metavar="B", help="the same kinds as A")
    p.add_argument("--context", type=int, default=3, metavar="N", help="lines of context in code diffs (default 3)")
    p.add_argument("--plot", metavar="FILE", help="write a PNG of the val-loss curves (vs step and vs time)")


def register(sub, parents) -> None:
    add(sub, "parse", cmd_parse, _parse, parents=(parents["json"],),
        help="read run logs of any speedrun era: source, environment, trials (--json: one object per file)")
    add(sub, "verify", cmd_verify, _verify, parents=(parents["track"], parents["json"]),
        help="judge run logs against a track's rules; exit 0 pass, 1 fail, 2 bad input")
    add(sub, "diff", cmd_diff, _diff, parents=(parents["json"],),
        help="code, hyperparameter, environment and metric changes from A to B")
