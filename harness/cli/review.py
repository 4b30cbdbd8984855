"""`speedrun audit`: judge public record folders as a maintainer would; writes nothing but --markdown."""
from __future__ import annotations

from harness.cli import add, emit, track
from harness.core.errors import EXIT_FAIL, EXIT_OK, InputError


def cmd_audit(args) -> int:
    from harness.public import audit

    rep = audit.audit_tree(args.tree, track(args, "gpt2-small"), readme=args.readme, parent=args.parent)
    if args.markdown:
        if not rep["single"]:
            raise InputError(f"--markdown {args.markdown}: only for one record folder ({args.tree} is a tree)")
        from harness.core.files import atomic_write
        atomic_write(args.markdown, audit.markdown(rep))
    code = EXIT_FAIL if rep["single"] and rep["folders"] and rep["folders"][0]["status"] != "accepted" else EXIT_OK
    return emit(args, rep, audit.render, code)


def _audit(p):
    p.add_argument("tree", metavar="PATH", help="a record folder, or a tree of them (modded-nanogpt/records/track_1_short)")
    p.add_argument("--parent", metavar="FOLDER|LOG|ID", help="one folder's parent: a record folder, a folder of "
                                                             "logs, a log, or a record id")
    p.add_argument("--markdown", metavar="FILE", help="one folder: write its statistics.md here")
    p.add_argument("--readme", metavar="README", help="the public README.md whose record table links into TREE")


def register(sub, parents) -> None:
    add(sub, "audit", cmd_audit, _audit, parents=(parents["track"], parents["json"]),
        help="judge one record folder (its reviewer's page) or a tree of them, each under the rules of its date: "
             "accepted, rejected (the rule broken) or unverifiable (what the logs cannot show); with --readme, "
             "agreement with the README's record table; writes nothing but --markdown")
