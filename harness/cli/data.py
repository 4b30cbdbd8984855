"""`speedrun data make|fetch|check`: the shards a track trains on (old spellings: `data synthetic`,
`data fineweb`)."""
from __future__ import annotations

from harness.cli import add, emit, fail, track
from harness.core.errors import EXIT_FAIL, EXIT_OK


def cmd_make(args) -> int:
    from harness import data  # numpy, lazily
    from harness.core.track import load_track

    t = load_track(track(args, "tiny-cpu"))  # the synthetic corpus is tiny-cpu's
    return emit(args, data.generate_from_track(t, out=args.out, seed=args.seed), data.render)


def cmd_fetch(args) -> int:
    from harness.data import fineweb  # numpy, lazily; huggingface_hub only when something is downloaded

    try:
        n = fineweb.DEFAULT_TRAIN_SHARDS if args.train_shards is None else args.train_shards
        info = fineweb.fetch_fineweb(track(args, "gpt2-small"), out=args.dir, train_shards=n, pin=args.pin,
                                     progress=not args.json)
    except fineweb.DataError as e:  # unreachable hub, corrupt download, hash ≠ manifest or pin: exit 1
        return fail(args, str(e), EXIT_FAIL)
    return emit(args, info, fineweb.render_fetch)


def cmd_check(args) -> int:
    from harness.data import fineweb  # numpy, lazily

    rep = fineweb.check_dir(args.dir, args.track, progress=not args.json)  # no --track: the manifest's
    return emit(args, rep, fineweb.render_check, EXIT_OK if rep["ok"] else EXIT_FAIL)


def _make(p):
    p.add_argument("--out", help="output folder (default: the track's data.dir)")
    p.add_argument("--seed", type=int, help="corpus seed (default: the track's data.seed)")


def _fetch(p):
    p.add_argument("--train-shards", type=int, metavar="N",
                   help="train shards to fetch, fineweb_train_000001.bin … (100M tokens each; default 9)")
    p.add_argument("--dir", help="output folder (default: the track's data.dir); shards already there are kept")
    p.add_argument("--pin", action="store_true", help="pin the val shard's sha256 in the track's [data.pin]")


def register(sub, parents) -> None:
    shared = (parents["track"], parents["json"])
    d = sub.add_parser("data", help="make, fetch or check the shards a track trains on")
    dsub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    make = "generate the seeded synthetic corpus, its manifest and its exact floor (the track's [data.synthetic])"
    fetch = ("fetch FineWeb shards from the track's Hugging Face dataset, check and hash them into DIR/manifest.json; "
             "exit 0 ok, 1 unreachable hub, corrupt download or hash mismatch, 2 bad input")
    for name, hidden in (("make", False), ("synthetic", True)):
        add(dsub, name, cmd_make, _make, help=make, parents=shared, hidden=hidden)
    for name, hidden in (("fetch", False), ("fineweb", True)):
        add(dsub, name, cmd_fetch, _fetch, help=fetch, parents=shared, hidden=hidden)
    add(dsub, "check", cmd_check,
        lambda p: p.add_argument("dir", metavar="DIR", help="a folder written by `speedrun data fetch` (or `make`)"),
        help="re-verify every shard in DIR against manifest.json and the track's pin; exit 0 ok, 1 a mismatch, "
             "2 bad input", parents=shared)
