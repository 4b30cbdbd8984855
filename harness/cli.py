"""`speedrun`: the command line. Verbs are thin wrappers; the work lives in noun modules.

Nothing here imports torch or numpy at module level: `speedrun verify` and friends must start in
well under a second on a reviewer's laptop. Exit codes: 0 ok, 1 a check failed, 2 bad usage/input.
"""
from __future__ import annotations

import argparse
import json
import sys

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


from harness.errors import InputError as UsageError  # noqa: E402  (bad input → exit 2)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


# ---- data ----------------------------------------------------------------------------------------

def cmd_data_synthetic(args) -> int:
    from harness import data  # numpy, lazily
    from harness.track import load_track

    track = load_track(args.track)
    info = data.generate_from_track(track, out=args.out, seed=args.seed)
    if args.json:
        _print_json(info)
    else:
        from rich.console import Console

        c = Console()
        c.print(f"[bold]synthetic corpus[/] seed {info['seed']} → {info['dir']}")
        for name, s in info["shards"].items():
            c.print(f"  {name}  {s['tokens']:>10,} tokens  sha256 {s['sha256'][:16]}…")
        f = info["floor"]
        c.print(f"  Bayes-optimal val loss (the floor): [bold]{f['val_loss']:.4f}[/] nats/token "
                f"over {f['val_tokens']:,} tokens; no-context loss {f['no_context_loss']:.4f}")
    return EXIT_OK


# ---- run: one record-attempt run of the trainer ------------------------------------------------------

def cmd_run(args) -> int:
    from harness import run

    return run.run_track(args.track, seed=args.seed, nproc=args.nproc, max_steps=args.max_steps,
                         data_dir=args.data_dir, as_json=args.json)


def cmd_main(args) -> int:
    """What `./run.sh` runs: the main job for this machine's hardware."""
    from harness import run

    return run.main_job()


# ---- parse / verify: read logs, judge them ----------------------------------------------------------

def _console():
    """A rich console; piped output gets a wide one, so tables stay one line per row in files and tests."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=200)


def cmd_parse(args) -> int:
    from pathlib import Path

    from harness import logs

    parsed = [logs.parse_file(f) for f in args.files]
    if args.json:
        _print_json([p.to_json() for p in parsed])
        return EXIT_OK
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
    c = _console()
    c.print(t)
    for p in parsed:
        for w in p.warnings:
            c.print(f"[yellow]{p.file}[/]: {w}", markup=True, highlight=False)
    return EXIT_OK


def cmd_verify(args) -> int:
    from harness import verify

    verdict = verify.verify_files(args.files, args.track, script=args.script)
    if args.json:
        _print_json(verdict.to_json())
        return EXIT_OK if verdict.ok else EXIT_FAIL
    from rich.table import Table

    t = Table(title=f"speedrun verify --track {verdict.track}")
    for col in ("run", "check", "", "detail"):
        t.add_column(col, overflow="fold")
    for r in verdict.runs:
        for k, c in enumerate(r.checks):
            t.add_row(r.file if k == 0 else "", c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail,
                      end_section=k == len(r.checks) - 1)
    c = _console()
    c.print(t)
    s = verdict.summary
    fmt = (lambda v, f: "-" if v is None else format(v, f))
    c.print(f"{s['n']} distinct run(s): mean val_loss {fmt(s['mean_val_loss'], '.5f')}, p = {fmt(s['p_value'], '.3g')}, "
            f"mean train time {fmt(s['mean_train_time_ms'] and s['mean_train_time_ms'] / 1000, '.3f')} s", highlight=False)
    failed = sorted({c.name for r in verdict.runs for c in r.checks if not c.ok})
    c.print("[bold green]PASS[/]: every check passed" if verdict.ok else f"[bold red]FAIL[/]: {', '.join(failed)}")
    return EXIT_OK if verdict.ok else EXIT_FAIL


# ---- diff: what changed between two runs or records -------------------------------------------------

def cmd_diff(args) -> int:
    from harness import diff

    d = diff.diff(args.a, args.b, context=args.context)
    if args.plot:
        diff.plot(d, args.plot)
    if args.json:
        _print_json(d.to_json())
    else:
        diff.render(d, _console())
        if args.plot:
            print(f"plot: {args.plot}")
    return EXIT_OK  # a diff is not a check


# ---- record / ledger / leaderboard / import: the ledger is the source of truth ------------------------

def _contributors(values) -> list[str]:
    return [c.strip() for v in values or [] for c in v.split(",") if c.strip()]


def cmd_record_add(args) -> int:
    from harness import ledger

    readme = None
    if args.readme:
        try:
            readme = open(args.readme, encoding="utf-8").read()
        except OSError as e:
            raise UsageError(f"--readme {args.readme}: cannot read ({e.strerror})") from None
    try:
        added = ledger.add(args.logs, args.track, args.title, contributors=_contributors(args.contributors),
                           parent=args.parent, date=args.date, unofficial=args.unofficial, readme=readme)
    except ledger.Refused as e:
        if args.json:
            _print_json({"recorded": False, "reason": str(e), "verdict": e.verdict.to_json()})
        else:
            print(f"speedrun: {e}", file=sys.stderr)
        return EXIT_FAIL
    rec = added.record
    if args.json:
        _print_json({"recorded": True, "record": rec.to_json(), "ledger_line": added.line, "notes": added.notes})
        return EXIT_OK
    c = _console()
    kind = "[green]official[/]" if rec.official else "[yellow]unofficial[/] (verification failed)"
    c.print(f"recorded [bold]{rec.id}[/] ({kind}) → records/{rec.id}/; ledger seq {added.line['seq']}, "
            f"hash {added.line['hash'][:16]}…; leaderboard.md regenerated")
    for n in added.notes:
        c.print(f"[yellow]note[/]: {n}", highlight=False)
    return EXIT_OK


def cmd_ledger_check(args) -> int:
    from harness import ledger

    rep = ledger.check()
    if args.json:
        _print_json(rep.to_json())
        return EXIT_OK if rep.ok else EXIT_FAIL
    c = _console()
    if not rep.ok:
        b = rep.broken
        c.print(f"[bold red]BROKEN[/] at ledger seq {b['seq']}" + (f" ({b['id']})" if b["id"] else "")
                + f": {b['file']}: {b['problem']}", highlight=False)
        c.print(f"{len(rep.records)} record(s) before it are intact.")
        return EXIT_FAIL
    if rep.records:
        from rich.table import Table

        t = Table(title="speedrun ledger check")
        for col in ("track", "records", "official", "latest"):
            t.add_column(col)
        for name in sorted({r.track for r in rep.records}):
            rs = [r for r in rep.records if r.track == name]
            t.add_row(name, str(len(rs)), str(sum(r.official for r in rs)), rs[-1].id)
        c.print(t)
    c.print(f"[bold green]INTACT[/]: {len(rep.records)} record(s), {rep.files} file(s) re-hashed; "
            f"head {rep.head[:16]}…", highlight=False)
    return EXIT_OK


def cmd_leaderboard(args) -> int:
    from pathlib import Path

    from harness import leaderboard

    info = leaderboard.write(include_unofficial=args.all, plot=not args.no_plot,
                             out=Path(args.out) if args.out else None)
    if args.json:
        _print_json(info)
    else:
        n = sum(len(v) for v in info["tracks"].values())
        _console().print(f"{info['file']}: {n} record(s) over {len(info['tracks'])} track(s)"
                         + (f"; plots {', '.join(info['plots'])}" if info["plots"] else ""), highlight=False)
    return EXIT_OK


def cmd_import(args) -> int:
    from harness import importer

    plan = importer.import_tree(args.dir, args.track, dry_run=args.dry_run)
    if args.json:
        _print_json(plan.to_json())
    else:
        importer.show(plan, _console())
    return EXIT_OK


# ---- the parser --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speedrun", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    d = sub.add_parser("data", help="make or fetch the shards a track trains on")
    dsub = d.add_subparsers(dest="source", required=True, metavar="SOURCE")
    s = dsub.add_parser("synthetic", help="generate the seeded synthetic corpus and its exact floor")
    s.add_argument("--out", help="output folder (default: the track's data.dir)")
    s.add_argument("--seed", type=int, help="corpus seed (default: the track's data.seed)")
    s.add_argument("--track", default="tiny-cpu", help="track whose [data.synthetic] is used")
    s.add_argument("--json", action="store_true", help="print the manifest as JSON")
    s.set_defaults(func=cmd_data_synthetic)

    r = sub.add_parser("run", help="run the trainer once on a track and judge it against the target")
    r.add_argument("--track", default="tiny-cpu")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--nproc", type=int, help="processes (default: the track's nproc)")
    r.add_argument("--max-steps", type=int, help="stop early (smoke runs; cannot meet a target)")
    r.add_argument("--data-dir", help="shards folder (default: the track's data.dir)")
    r.add_argument("--json", action="store_true", help="print the RESULT and verdict as JSON")
    r.set_defaults(func=cmd_run)

    pa = sub.add_parser("parse", help="read run logs of any speedrun era: source, environment, trials")
    pa.add_argument("files", nargs="+", metavar="FILE", help="run log(s)")
    pa.add_argument("--json", action="store_true", help="print a JSON array, one object per file")
    pa.set_defaults(func=cmd_parse)

    v = sub.add_parser("verify", help="judge run logs against a track's rules; exit 0 pass, 1 fail, 2 bad input")
    v.add_argument("files", nargs="+", metavar="FILE", help="run log(s); every trial in a file is a run")
    v.add_argument("--track", required=True, help="track whose records/<track>/track.toml rules apply")
    v.add_argument("--script", help="the train_gpt.py every run must have embedded, byte for byte")
    v.add_argument("--json", action="store_true", help="print the verdict as JSON")
    v.set_defaults(func=cmd_verify)

    df = sub.add_parser("diff", help="code, hyperparameter, environment and metric changes from A to B")
    df.add_argument("a", metavar="A", help="a log file, a record folder, or a record id like tiny-cpu/0001")
    df.add_argument("b", metavar="B", help="the same kinds as A")
    df.add_argument("--context", type=int, default=3, metavar="N", help="lines of context in code diffs (default 3)")
    df.add_argument("--plot", metavar="FILE", help="write a PNG of the val-loss curves (vs step and vs time)")
    df.add_argument("--json", action="store_true", help="print the diff as JSON")
    df.set_defaults(func=cmd_diff)

    rc = sub.add_parser("record", help="store verified runs as a record in the ledger")
    rsub = rc.add_subparsers(dest="action", required=True, metavar="ACTION")
    ra = rsub.add_parser("add", help="verify logs, store them with their script, append the ledger, "
                                     "regenerate leaderboard.md; exit 1 (nothing written) if verification fails")
    ra.add_argument("logs", nargs="+", metavar="LOG", help="run log(s); the first one's embedded source is stored")
    ra.add_argument("--track", required=True, help="track the runs were timed on")
    ra.add_argument("--title", required=True, help="one line: what the record does (also its folder slug)")
    ra.add_argument("--contributors", action="append", metavar="A,B", help="names, comma-separated (repeatable)")
    ra.add_argument("--parent", help="id of the record this one improves on (default: the track's latest official)")
    ra.add_argument("--date", help="YYYY-MM-DD (default: today, UTC)")
    ra.add_argument("--readme", metavar="FILE", help="the 'what changed and why' text for the record's README.md")
    ra.add_argument("--unofficial", action="store_true", help="record it even if verification fails, marked unofficial")
    ra.add_argument("--json", action="store_true", help="print the record and its ledger line as JSON")
    ra.set_defaults(func=cmd_record_add)

    lc = sub.add_parser("ledger", help="check the records ledger")
    lsub = lc.add_subparsers(dest="action", required=True, metavar="ACTION")
    lk = lsub.add_parser("check", help="re-derive every hash and file sha256; exit 1 naming the first break")
    lk.add_argument("--json", action="store_true", help="print the report as JSON")
    lk.set_defaults(func=cmd_ledger_check)

    lb = sub.add_parser("leaderboard", help="regenerate leaderboard.md and the progression plots from the ledger")
    lb.add_argument("--all", action="store_true", help="include unofficial records")
    lb.add_argument("--out", metavar="FILE", help="write the markdown here instead of leaderboard.md")
    lb.add_argument("--no-plot", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    lb.add_argument("--json", action="store_true", help="print what was written as JSON")
    lb.set_defaults(func=cmd_leaderboard)

    im = sub.add_parser("import", help="import a public records tree (<date>_<name>/ folders of logs) into the ledger")
    im.add_argument("dir", metavar="DIR", help="e.g. modded-nanogpt/records/track_1_short")
    im.add_argument("--track", required=True, help="track the imported records belong to")
    im.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    im.add_argument("--json", action="store_true", help="print the plan/result as JSON")
    im.set_defaults(func=cmd_import)

    m = sub.add_parser("main", help="the main job for this machine (what ./run.sh runs)")
    m.set_defaults(func=cmd_main)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"speedrun: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("speedrun: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
