"""`speedrun record add|import`, `speedrun ledger check|board`: the ledger is the source of truth (old
spellings: `import`, `leaderboard`)."""
from __future__ import annotations

import sys

from harness.cli import add, contributors, emit, track
from harness.core.errors import EXIT_FAIL, EXIT_OK, InputError


def cmd_add(args) -> int:
    from harness import ledger
    from harness.judge import submission
    from harness.ledger import leaderboard
    from harness.public import submit
    from harness.runs import attempt

    readme = None
    if args.readme:
        try:
            readme = open(args.readme, encoding="utf-8").read()
        except OSError as e:
            raise InputError(f"--readme {args.readme}: cannot read ({e.strerror})") from None
    if args.attempt:
        if args.logs:
            raise InputError("record add: give LOG(s) or --attempt DIR, not both (an attempt's record takes all its runs)")
        out = attempt.record_attempt(args.attempt, args.title, contributors=contributors(args.contributors),
                                     unofficial=args.unofficial, parent=args.parent, date=args.date, readme=readme)
        source = f" from attempt {args.attempt}"
    else:
        if not args.logs:
            raise InputError("record add needs LOG(s) and --track, or --attempt DIR (every candidate run of an attempt)")
        name = track(args, required="record add LOG…", hint=" (or --attempt DIR: every candidate run of an attempt)")
        try:
            added = submit.add(args.logs, name, args.title, contributors=contributors(args.contributors),
                               parent=args.parent, date=args.date, unofficial=args.unofficial, readme=readme)
            leaderboard.write()
            out = {"recorded": True, "record": added.record.to_json(), "ledger_line": added.line, "notes": added.notes}
        except submission.Refused as e:
            out = {"recorded": False, "reason": str(e), "verdict": e.verdict.to_json()}
        source = ""

    def render(out, console):
        if out["recorded"]:
            ledger.render_added(out["record"], out["ledger_line"], out["notes"], console, source)
        else:
            print(f"speedrun: {out['reason']}", file=sys.stderr)
    return emit(args, out, render, EXIT_OK if out["recorded"] else EXIT_FAIL)


def cmd_import(args) -> int:
    from harness.public import importer

    name = track(args, required="record import")
    return emit(args, importer.import_tree(args.dir, name, dry_run=args.dry_run, readme=args.readme), importer.render)


def cmd_check(args) -> int:
    from harness import ledger

    rep = ledger.check()
    return emit(args, rep, ledger.render_check, EXIT_OK if rep.ok else EXIT_FAIL)


def cmd_board(args) -> int:
    from pathlib import Path

    from harness.ledger import leaderboard

    info = leaderboard.write(include_unofficial=args.all, plot=not args.no_plot, out=Path(args.out) if args.out else None)
    return emit(args, info, leaderboard.render)


def _add(p):
    p.add_argument("logs", nargs="*", metavar="LOG", help="run log(s); the first one's embedded source is stored")
    p.add_argument("--attempt", metavar="DIR", help="instead of LOGs: every candidate run of an attempt "
                                                    "(logs/attempts/<id>), checked against its manifest")
    p.add_argument("--title", required=True, help="one line: what the record does (also its folder slug)")
    p.add_argument("--contributors", action="append", metavar="A,B", help="names, comma-separated (repeatable)")
    p.add_argument("--parent", help="id of the record this one improves on (default: the track's latest official)")
    p.add_argument("--date", help="YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--readme", metavar="FILE", help="the 'what changed and why' text for the record's README.md")
    p.add_argument("--unofficial", action="store_true", help="record it even if verification fails, marked unofficial")


def _import(p):
    p.add_argument("dir", metavar="DIR", help="e.g. modded-nanogpt/records/track_1_short")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--readme", metavar="README", help="the public README: each record keeps its row's number, "
                                                      "title, contributors, PR and official time; folders it "
                                                      "does not link are imported unofficial")


def _board(p):
    p.add_argument("--all", action="store_true", help="include unofficial records")
    p.add_argument("--out", metavar="FILE", help="write the markdown here instead of leaderboard.md")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots (no matplotlib needed)")


def register(sub, parents) -> None:
    shared = (parents["track"], parents["json"])
    importing = "import a public records tree (<date>_<name>/ folders of logs) into the ledger"
    board = "regenerate leaderboard.md and the progression plots from the ledger"

    rc = sub.add_parser("record", help="store verified runs as records in the ledger")
    rsub = rc.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(rsub, "add", cmd_add, _add, parents=shared,
        help="verify logs, store them with their script, append the ledger, regenerate leaderboard.md; exit 1 "
             "(nothing written) if verification fails")
    add(rsub, "import", cmd_import, _import, parents=shared, help=importing)

    lc = sub.add_parser("ledger", help="check the records ledger, or draw the leaderboard from it")
    lsub = lc.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(lsub, "check", cmd_check, parents=(parents["json"],),
        help="re-derive every hash and file sha256; exit 1 naming the first break")
    add(lsub, "board", cmd_board, _board, parents=(parents["json"],), help=board)

    add(sub, "import", cmd_import, _import, parents=shared, help=importing, hidden=True)
    add(sub, "leaderboard", cmd_board, _board, parents=(parents["json"],), help=board, hidden=True)
