"""speedrun: attempt, verify and record NanoGPT speedrun records.

One grammar: `speedrun NOUN VERB` where there is a noun (data make, record add, ledger check), else
`speedrun VERB`. Every verb that a script might call takes --json (the result as JSON on stdout; progress,
if any, on stderr; an error as {"error", "exit"}). Exit codes: 0 ok, 1 a check failed (not a record, a
failed verification, a broken ledger), 2 bad usage or input, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from harness.core.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, InputError
from harness.core.files import finite

# How a verb is written: the noun module (harness.data, harness.judge, …) computes and returns a result
# (JSON-able, or with .to_json()); the same module's `render*` draws it for people. The verb module here
# (harness/cli/<group>.py) registers its parsers beside its handlers; a handler parses nothing, calls the
# one, then `emit`s, and returns the exit code. Nothing in harness/cli imports torch, numpy or pandas at
# module level: `speedrun verify` and friends start in well under a second.

GROUPS = ("data", "runs", "logs", "records", "review")  # harness/cli/<group>.py, in --help order

TRACK_HELP = ("the track, records/T/track.toml. Default: the track of what is given or asked for (a shard "
              "folder's manifest.json, an attempt folder; the synthetic corpus: tiny-cpu; FineWeb or a public "
              "record tree: gpt2-small), else this machine's (gpt2-small with GPUs, tiny-cpu without). Verbs that "
              "judge or store runs under a track's rules (attempt, verify, record add LOG…, record import) require it")


def _console(stderr: bool = False):
    """A rich console: on a terminal, its width; piped, $COLUMNS (else 100) for tables, and long lines left
    whole (soft wrap) so a file or a grep sees one line per line. stderr=True under --json: stdout carries
    the JSON alone."""
    from rich.console import Console

    c = Console(stderr=stderr)
    if c.is_terminal:
        return c
    cols = os.environ.get("COLUMNS", "")
    return Console(width=int(cols) if cols.isdigit() and int(cols) > 0 else 100, soft_wrap=True, stderr=stderr)


def emit(args, obj, render, code: int = EXIT_OK) -> int:
    """--json: obj as JSON on stdout; else render(obj, console). Returns `code`."""
    if getattr(args, "json", False):
        print(json.dumps(finite(obj.to_json() if hasattr(obj, "to_json") else obj), indent=2, allow_nan=False))
    else:
        render(obj, _console())
    return code


def fail(args, message: str, code: int, who: str = "speedrun") -> int:
    """An error: `who: error: message` on stderr; under --json also {"error", "exit"} on stdout. Returns `code`."""
    print(f"{who}: error: {message}" if code != EXIT_INTERRUPTED else f"{who}: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit": code}, indent=2))
    return code


def track(args, given: str | None = None, *, required: str | None = None, hint: str = "") -> str:
    """The one --track policy (TRACK_HELP): --track T, else `given` (the track of what was given or asked
    for), else this machine's. `required`: the verb's name, where a guess would judge or store under the
    wrong rules."""
    if args.track:
        return args.track
    if required:
        from harness.core.track import track_names

        raise InputError(f"{required}: --track is required{hint}; known tracks: {', '.join(track_names())}")
    if given:
        return given
    from harness.runs import launch

    return "gpt2-small" if launch.gpu_count() else "tiny-cpu"


def version() -> str:
    """The installed distribution's version, else this checkout's pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version("speedrun")
    except metadata.PackageNotFoundError:
        import re
        from pathlib import Path

        try:
            text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
        except OSError:
            return "unknown"
        m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
        return m.group(1) if m else "unknown"


def hide(sub, name: str) -> None:
    """Keep `name` parseable but out of --help: an old spelling that scripts still use."""
    sub._choices_actions[:] = [a for a in sub._choices_actions if a.dest != name]
    sub.hidden = (*getattr(sub, "hidden", ()), name)


def add(sub, name: str, func, flags=None, *, help: str, parents=(), hidden: bool = False):
    """One verb: its parser (the shared `parents` first, then `flags(parser)`), its handler, its help; a
    `hidden` one is an old spelling, parsed but not listed."""
    p = sub.add_parser(name, help=help, description=help, parents=list(parents))
    if flags:
        flags(p)
    p.set_defaults(func=func)
    if hidden:
        hide(sub, name)
    return p


def contributors(values) -> list[str]:
    """--contributors A,B (repeatable) → [A, B, …]."""
    return [c.strip() for v in values or [] for c in v.split(",") if c.strip()]


# ---- the parser --------------------------------------------------------------------------------------

class UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (main prints it, and under --json as JSON too) not exited."""

    def error(self, message):
        raise UsageError(self, message)

    def _check_value(self, action, value):  # "invalid choice" lists the spellings --help shows, not old ones
        hidden = getattr(action, "hidden", ())
        if hidden and value not in action.choices:
            shown = ", ".join(repr(c) for c in action.choices if c not in hidden)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {shown})")
        super()._check_value(action, value)


def parents() -> dict[str, argparse.ArgumentParser]:
    """The flags every verb spells alike, each declared once: {"json": …, "track": …}."""
    j = argparse.ArgumentParser(add_help=False)
    j.add_argument("--json", action="store_true", help="print the result as JSON on stdout (progress, if any, on "
                                                       "stderr; an error as {\"error\", \"exit\"})")
    t = argparse.ArgumentParser(add_help=False)
    t.add_argument("--track", metavar="T", help=TRACK_HELP)
    return {"json": j, "track": t}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from harness.core.track import find_root

    root, how = find_root()
    p = Parser(prog="speedrun", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
               epilog=f"records: {root / 'records'} (from {how}; set SPEEDRUN_ROOT to choose)",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"speedrun {version()}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)
    shared = parents()
    for group in GROUPS:
        importlib.import_module(f"harness.cli.{group}").register(sub, shared)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        e.parser.print_usage(sys.stderr)
        return fail(argparse.Namespace(json="--json" in argv), str(e), EXIT_USAGE, who=e.parser.prog)
    try:
        return args.func(args)
    except InputError as e:
        return fail(args, str(e), EXIT_USAGE)
    except KeyboardInterrupt:
        return fail(args, "interrupted", EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
