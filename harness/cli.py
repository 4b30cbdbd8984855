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
