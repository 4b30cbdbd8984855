"""speedrun: attempt, verify and record NanoGPT speedrun records.

Every verb that a script might call takes --json (the result as JSON on stdout; progress, if any, on
stderr). Exit codes: 0 ok, 1 a check failed (not a record, a failed verification, a broken ledger),
2 bad usage or input, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys

from harness.core.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, InputError
from harness.core.files import finite

# How a verb is written: the noun module computes and returns a result (JSON-able, or with .to_json());
# the same module's `render*` draws it for people; the verb here parses flags, calls the one, then prints
# --json or calls the other, and returns the exit code. Nothing here imports torch or numpy at module
# level: `speedrun verify` and friends start in well under a second.


def _console(stderr: bool = False):
    """A rich console; piped output gets a wide one, so tables stay one line per row in files and tests.
    stderr=True under --json: stdout carries the JSON alone."""
    from rich.console import Console

    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(width=200, stderr=stderr)


def _emit(args, obj, render, code: int = EXIT_OK) -> int:
    """--json: obj as JSON on stdout; else render(obj, console). Returns `code`."""
    if args.json:
        print(json.dumps(finite(obj.to_json() if hasattr(obj, "to_json") else obj), indent=2, allow_nan=False))
    else:
        render(obj, _console())
    return code


# ---- data ----------------------------------------------------------------------------------------

def cmd_data_synthetic(args) -> int:
    from harness import data  # numpy, lazily
    from harness.core.track import load_track

    return _emit(args, data.generate_from_track(load_track(args.track), out=args.out, seed=args.seed), data.render)


def cmd_data_fineweb(args) -> int:
    from harness.data import fineweb  # numpy, lazily; huggingface_hub only when something is downloaded

    try:
        n = fineweb.DEFAULT_TRAIN_SHARDS if args.train_shards is None else args.train_shards
        info = fineweb.fetch_fineweb(args.track, out=args.dir, train_shards=n, pin=args.pin, progress=not args.json)
    except fineweb.DataError as e:  # unreachable hub, corrupt download, hash ≠ manifest or pin: exit 1
        print(f"speedrun: error: {e}", file=sys.stderr)
        return EXIT_FAIL
    return _emit(args, info, fineweb.render_fetch)


def cmd_data_check(args) -> int:
    from harness.data import fineweb  # numpy, lazily

    rep = fineweb.check_dir(args.dir, args.track, progress=not args.json)
    return _emit(args, rep, fineweb.render_check, EXIT_OK if rep["ok"] else EXIT_FAIL)


# ---- run / attempt: the trainer in child processes ------------------------------------------------

def cmd_run(args) -> int:
    from harness.runs import run

    code, out = run.run_track(args.track, _console(stderr=args.json), seed=args.seed, nproc=args.nproc,
                              max_steps=args.max_steps, data_dir=args.data_dir)
    return _emit(args, out, run.render, code)


def cmd_main(args) -> int:
    """What `./run.sh` runs: the main job for this machine's hardware."""
    from harness.runs import attempt

    return attempt.main_job()


def _date(text: str) -> str:
    import datetime as dt

    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated seeds, got {text!r}")
    return seeds


def cmd_attempt(args) -> int:
    from harness.runs import attempt

    if not args.track and not args.extend:
        raise InputError("attempt: --track is required (or --extend DIR to add pairs to a finished attempt)")
    o = attempt.Options(
        track=args.track, runs=args.runs, seeds=args.seeds, script=args.script, nproc=args.nproc,
        nnodes=args.nnodes, node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint, rdzv_id=args.rdzv_id,
        baseline=args.baseline, max_steps=args.max_steps, timeout=args.timeout, data_dir=args.data_dir,
        record_title=args.record, contributors=tuple(_contributors(args.contributors)),
        unofficial=args.unofficial, as_json=args.json, no_baseline=args.no_baseline)
    if args.extend:
        code, m = attempt.extend_attempt(args.extend, o, _console(stderr=args.json))
    else:
        code, m = attempt.run_attempt(o, _console(stderr=args.json))
    return _emit(args, m, attempt.render, code)


# ---- parse / verify / diff: read logs, judge them, compare them -------------------------------------

def cmd_parse(args) -> int:
    from harness.judge import logs

    parsed = [logs.parse_file(f) for f in args.files]
    if args.csv or args.parquet:
        from harness.judge import tidy  # pandas, lazily

        df = tidy.frame(args.files)
        for path in tidy.write(df, csv=args.csv, parquet=args.parquet):
            print(f"{path}: {len(df):,} rows × {len(df.columns)} columns ({', '.join(df.columns)})", file=sys.stderr)
    return _emit(args, [p.to_json() for p in parsed] if args.json else parsed, logs.render)


def cmd_verify(args) -> int:
    from harness.judge import verify

    from harness.public import submit

    parent = submit.parent_reference(args.track, args.parent)
    verdict = verify.verify_files(args.files, args.track, script=args.script, date=args.date, parent=parent)
    return _emit(args, verdict, verify.render, EXIT_OK if verdict.ok else EXIT_FAIL)


def cmd_diff(args) -> int:
    from harness.public import diff

    d = diff.diff(args.a, args.b, context=args.context)
    if args.plot:
        diff.plot(d, args.plot)
    code = _emit(args, d, diff.render)  # a diff is not a check: exit 0
    if args.plot and not args.json:
        print(f"plot: {args.plot}")
    return code


# ---- record / ledger / leaderboard / import: the ledger is the source of truth ------------------------

def _contributors(values) -> list[str]:
    return [c.strip() for v in values or [] for c in v.split(",") if c.strip()]


def cmd_record_add(args) -> int:
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
        out = attempt.record_attempt(args.attempt, args.title, contributors=_contributors(args.contributors),
                                     unofficial=args.unofficial, parent=args.parent, date=args.date, readme=readme)
        source = f" from attempt {args.attempt}"
    else:
        if not args.logs or not args.track:
            raise InputError("record add needs LOG(s) and --track, or --attempt DIR (every candidate run of an attempt)")
        try:
            added = submit.add(args.logs, args.track, args.title, contributors=_contributors(args.contributors),
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
    return _emit(args, out, render, EXIT_OK if out["recorded"] else EXIT_FAIL)


def cmd_ledger_check(args) -> int:
    from harness import ledger

    rep = ledger.check()
    return _emit(args, rep, ledger.render_check, EXIT_OK if rep.ok else EXIT_FAIL)


def cmd_leaderboard(args) -> int:
    from pathlib import Path

    from harness.ledger import leaderboard

    info = leaderboard.write(include_unofficial=args.all, plot=not args.no_plot, out=Path(args.out) if args.out else None)
    return _emit(args, info, leaderboard.render)


def cmd_import(args) -> int:
    from harness.public import importer

    return _emit(args, importer.import_tree(args.dir, args.track, dry_run=args.dry_run, readme=args.readme),
                 importer.render)


def cmd_audit(args) -> int:
    from harness.public import audit

    rep = audit.audit_tree(args.tree, args.track, readme=args.readme, parent=args.parent)
    if args.markdown:
        if not rep["single"]:
            raise InputError(f"--markdown {args.markdown}: only for one record folder ({args.tree} is a tree)")
        from harness.core.files import atomic_write
        atomic_write(args.markdown, audit.markdown(rep))
    code = EXIT_FAIL if rep["single"] and rep["folders"] and rep["folders"][0]["status"] != "accepted" else EXIT_OK
    return _emit(args, rep, audit.render, code)


def cmd_doctor(args) -> int:
    from harness.runs import doctor, launch

    track = args.track or ("gpt2-small" if launch.gpu_count() else "tiny-cpu")
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    rep = doctor.run(track, quick=args.quick, say=say)
    return _emit(args, rep, doctor.render, EXIT_OK if rep["ok"] else EXIT_FAIL)


# ---- bench: kernels against their references ---------------------------------------------------------

def cmd_bench(args) -> int:
    from harness.runs import bench
    from harness.core.track import repo_root

    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    if args.compile_only:
        failed, rep = bench.compile_only(args.names, arch=args.arch or "sm_90", shapes=args.shapes, say=say)
        return _emit(args, rep, bench.render_compile, EXIT_FAIL if failed else EXIT_OK)
    if args.arch:
        raise InputError("bench --arch: only with --compile-only (a timed bench runs on this machine's GPU)")
    failed, doc = bench.run(args.names, shapes=args.shapes, compiled=not args.no_compile, compare_with=args.compare,
                            threshold=args.threshold, save_to=None if args.no_save else repo_root(), out=args.out,
                            say=say)
    return _emit(args, doc, bench.render, EXIT_FAIL if failed else EXIT_OK)


# ---- the parser --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from harness.core.track import find_root

    root, how = find_root()
    p = argparse.ArgumentParser(prog="speedrun", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                epilog=f"records: {root / 'records'} (from {how}; set SPEEDRUN_ROOT to choose)",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    d = sub.add_parser("data", help="make or fetch the shards a track trains on")
    dsub = d.add_subparsers(dest="source", required=True, metavar="SOURCE")
    s = dsub.add_parser("synthetic", help="generate the seeded synthetic corpus and its exact floor")
    s.add_argument("--out", help="output folder (default: the track's data.dir)")
    s.add_argument("--seed", type=int, help="corpus seed (default: the track's data.seed)")
    s.add_argument("--track", default="tiny-cpu", help="track whose [data.synthetic] is used")
    s.add_argument("--json", action="store_true", help="print the manifest as JSON")
    s.set_defaults(func=cmd_data_synthetic)
    why = ("fetch FineWeb shards from the track's Hugging Face dataset, check and hash them into DIR/manifest.json; "
           "exit 0 ok, 1 unreachable hub, corrupt download or hash mismatch, 2 bad input")
    fw = dsub.add_parser("fineweb", help=why, description=why)
    fw.add_argument("--track", default="gpt2-small", help="track whose [data] names the dataset (default gpt2-small)")
    fw.add_argument("--train-shards", type=int, metavar="N",
                    help="train shards to fetch, fineweb_train_000001.bin … (100M tokens each; default 9)")
    fw.add_argument("--dir", help="output folder (default: the track's data.dir); shards already there are kept")
    fw.add_argument("--pin", action="store_true", help="pin the val shard's sha256 in the track's [data.pin]")
    fw.add_argument("--json", action="store_true", help="print the manifest (+ fetched/present/pin) as JSON")
    fw.set_defaults(func=cmd_data_fineweb)
    why = "re-verify every shard in DIR against manifest.json and the track's pin; exit 0 ok, 1 a mismatch, 2 bad input"
    ck = dsub.add_parser("check", help=why, description=why)
    ck.add_argument("dir", metavar="DIR", help="a folder written by `speedrun data fineweb` (or `synthetic`)")
    ck.add_argument("--track", help="track whose [data.pin] applies (default: the one manifest.json names)")
    ck.add_argument("--json", action="store_true", help="print the report as JSON")
    ck.set_defaults(func=cmd_data_check)

    r = sub.add_parser("run", help="run the trainer once on a track and judge it against the target")
    r.add_argument("--track", default="tiny-cpu")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--nproc", type=int, help="processes (default: the track's nproc)")
    r.add_argument("--max-steps", type=int, help="stop early (smoke runs; cannot meet a target)")
    r.add_argument("--data-dir", help="shards folder (default: the track's data.dir)")
    r.add_argument("--json", action="store_true", help="print the RESULT and verdict as JSON")
    r.set_defaults(func=cmd_run)

    at = sub.add_parser("attempt", help="N seeded runs (interleaved with a baseline record's), every run in a "
                                        "manifest, verification and a verdict; exit 0 record, 1 not, 130 interrupted")
    at.add_argument("--track", help="the track (required unless --extend)")
    at.add_argument("--runs", type=int, help="runs of the candidate, seeds 0..N-1 (default 3)")
    at.add_argument("--seeds", type=_seeds, metavar="S,S,…", help="these seeds instead of 0..N-1")
    at.add_argument("--script", help="the trainer to run (default: train_gpt.py at the repo root)")
    at.add_argument("--nproc", type=int, help="processes per node (default: the track's nproc)")
    at.add_argument("--nnodes", type=int, default=1, help="nodes; >1 joins torchrun's c10d rendezvous")
    at.add_argument("--node-rank", type=int, help="this node's rank (torchrun --node-rank)")
    at.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="the rendezvous (the first node's address)")
    at.add_argument("--rdzv-id", help="rendezvous id shared by the nodes (a run index is appended)")
    at.add_argument("--baseline", metavar="ID", help="the record to beat (default: the track's latest official "
                                                     "record): its snapshot's runs interleave with the candidate's, "
                                                     "same seeds; the speedup's 95%% CI must lie above 1 (rule 4)")
    at.add_argument("--no-baseline", action="store_true", help="no baseline arm: runs that can never be a record")
    at.add_argument("--extend", metavar="DIR", help="add A/B pairs to this finished attempt (--runs N pairs; default: "
                                                    "as many as its verdict said the spread needs); every look is kept")
    at.add_argument("--max-steps", type=int, help="stop each run early (smoke attempts; cannot be a record)")
    at.add_argument("--timeout", type=float, metavar="S", help="kill a run (its whole process tree) after S seconds")
    at.add_argument("--data-dir", help="shards folder (default: the track's data.dir)")
    at.add_argument("--record", metavar="TITLE", help="record every candidate run in the ledger (refused if any did "
                                                      "not finish, unless --unofficial)")
    at.add_argument("--contributors", action="append", metavar="A,B", help="names for --record (repeatable)")
    at.add_argument("--unofficial", action="store_true", help="with --record: record even unfinished or failing runs, "
                                                              "marked unofficial")
    at.add_argument("--json", action="store_true", help="print the manifest (runs, verdict) as JSON")
    at.set_defaults(func=cmd_attempt)

    pa = sub.add_parser("parse", help="read run logs of any speedrun era: source, environment, trials")
    pa.add_argument("files", nargs="+", metavar="FILE", help="run log(s)")
    pa.add_argument("--json", action="store_true", help="print a JSON array, one object per file")
    pa.add_argument("--csv", metavar="FILE", help="also write every step line as a tidy table (one row each) to FILE")
    pa.add_argument("--parquet", metavar="FILE", help="the same table as Parquet (needs pyarrow)")
    pa.set_defaults(func=cmd_parse)

    v = sub.add_parser("verify", help="judge run logs against a track's rules; exit 0 pass, 1 fail, 2 bad input")
    v.add_argument("files", nargs="+", metavar="FILE", help="run log(s); every trial in a file is a run")
    v.add_argument("--track", required=True, help="track whose records/<track>/track.toml rules apply")
    v.add_argument("--script", help="the train_gpt.py every run must have embedded, byte for byte")
    v.add_argument("--parent", metavar="ID|DIR|LOG", help="the record these runs improve on, for rule 3 (no flag it did "
                                                         "not set): a record id, a record folder or a log (default: "
                                                         "the track's latest official record)")
    v.add_argument("--date", type=_date, help="judge under the rules in force on YYYY-MM-DD (default: the date the "
                                              "runs ran, from their nvidia-smi header, else today)")
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
    ra.add_argument("logs", nargs="*", metavar="LOG", help="run log(s); the first one's embedded source is stored")
    ra.add_argument("--attempt", metavar="DIR", help="instead of LOGs: every candidate run of an attempt "
                                                     "(logs/attempts/<id>), checked against its manifest")
    ra.add_argument("--track", help="track the runs were timed on (required with LOGs)")
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
    im.add_argument("--readme", metavar="README", help="the public README: each record keeps its row's number, "
                                                       "title, contributors, PR and official time; folders it "
                                                       "does not link are imported unofficial")
    im.add_argument("--json", action="store_true", help="print the plan/result as JSON")
    im.set_defaults(func=cmd_import)

    why = ("judge one record folder (its reviewer's page) or a tree of them, each under the rules of its date: "
           "accepted, rejected (the rule broken) or unverifiable (what the logs cannot show); with --readme, "
           "agreement with the README's record table; writes nothing but --markdown")
    au = sub.add_parser("audit", help=why, description=why)
    au.add_argument("tree", metavar="PATH", help="a record folder, or a tree of them (modded-nanogpt/records/track_1_short)")
    au.add_argument("--parent", metavar="FOLDER|LOG|ID", help="one folder's parent: a record folder, a folder of "
                                                              "logs, a log, or a record id")
    au.add_argument("--markdown", metavar="FILE", help="one folder: write its statistics.md here")
    au.add_argument("--track", default="gpt2-small", help="the track whose rules apply (default gpt2-small)")
    au.add_argument("--readme", metavar="README", help="the public README.md whose record table links into TREE")
    au.add_argument("--json", action="store_true", help="print the report as JSON")
    au.set_defaults(func=cmd_audit)

    why = ("check this node before an attempt: environment, matmul and all-reduce throughput, every kernel at the "
           "preset's shapes, the track's preset for a few dozen steps on synthetic shards; exit 0 sound, 1 not")
    dr = sub.add_parser("doctor", help=why, description=why)
    dr.add_argument("--track", help="the track to check for (default: gpt2-small with a GPU, else tiny-cpu)")
    dr.add_argument("--quick", action="store_true", help="half the steps and shorter timings (on CPU: no compile)")
    dr.add_argument("--json", action="store_true", help="print the report as JSON (progress on stderr)")
    dr.set_defaults(func=cmd_doctor)

    why = "check each kernel against its reference, then time it beside the eager and compiled reference"
    b = sub.add_parser("bench", help=why, description=why)
    b.add_argument("names", nargs="*", metavar="NAME", help="kernels to bench (default: all): xxt softcap_ce fp8_linear relu2_linear")
    b.add_argument("--shapes", choices=("record", "small"), help="gpt2-small record shapes (default on CUDA) or the tiny preset's (default on CPU)")
    b.add_argument("--out", metavar="FILE", help="also write the results document to FILE")
    b.add_argument("--json", action="store_true", help="print the results document as JSON (progress on stderr)")
    b.add_argument("--compare", metavar="FILE", help="an earlier results file: show the change, exit 1 beyond --threshold")
    b.add_argument("--threshold", type=float, default=0.10, help="allowed slowdown for --compare (default 0.10 = 10%%)")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd reference (quick runs)")
    b.add_argument("--no-save", action="store_true", help="do not store the results under records/_bench/")
    b.add_argument("--compile-only", action="store_true",
                   help="compile every kernel and autotune config for --arch with Triton's real compiler, no GPU needed: "
                        "registers, spills, shared memory, wgmma/TMA; exit 1 on a failure or a spill")
    b.add_argument("--arch", choices=("sm_80", "sm_90", "sm_100"), help="target of --compile-only (default sm_90: H100)")
    b.set_defaults(func=cmd_bench)

    m = sub.add_parser("main", help="the main job for this machine (what ./run.sh runs)")
    m.set_defaults(func=cmd_main)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(f"speedrun: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("speedrun: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
