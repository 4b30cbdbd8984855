"""`speedrun attempt|doctor|bench|main`: the trainer and the kernels on this machine, in child processes
(old spelling: `run`, one run judged against the target)."""
from __future__ import annotations

import argparse
import sys

from harness.cli import _console, add, contributors, emit, fail, track
from harness.core.errors import EXIT_FAIL, EXIT_OK, InputError


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated seeds, got {text!r}")
    return seeds


def _progress(args):
    """Where progress lines go: stdout on a terminal; stderr under --json or when piped, so a piped
    stdout carries the final report alone (each check once)."""
    if not args.json and sys.stdout.isatty():
        return print
    return lambda line: print(line, file=sys.stderr)


def cmd_attempt(args) -> int:
    from harness.core.track import load_track
    from harness.data import ready
    from harness.runs import attempt

    name = args.track if args.extend else track(args, required="attempt", hint=" (or --extend DIR to add pairs "
                                                                                "to a finished attempt)")
    if not args.extend:
        ready.ready(load_track(name), args.data_dir)
    o = attempt.Options(
        track=name, runs=args.runs, seeds=args.seeds, script=args.script, nproc=args.nproc,
        nnodes=args.nnodes, node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint, rdzv_id=args.rdzv_id,
        baseline=args.baseline, max_steps=args.max_steps, timeout=args.timeout, data_dir=args.data_dir,
        record_title=args.record, contributors=tuple(contributors(args.contributors)),
        unofficial=args.unofficial, as_json=args.json, no_baseline=args.no_baseline)
    if args.extend:
        code, m = attempt.extend_attempt(args.extend, o, _console(stderr=args.json))
    else:
        code, m = attempt.run_attempt(o, _console(stderr=args.json))
    return emit(args, m, attempt.render, code)


def cmd_run(args) -> int:
    """The old `speedrun run`: one run, its RESULT judged against the target ({track, result, verdict}).
    Not an `attempt --runs 1 --no-baseline`: an attempt's manifest keeps a few figures per run, not the
    RESULT line this JSON carries, and writes an attempt folder."""
    from harness.core.track import load_track
    from harness.data import ready
    from harness.runs import run

    name = track(args)
    ready.ready(load_track(name), args.data_dir)
    code, out = run.run_track(name, _console(stderr=args.json), seed=args.seed, nproc=args.nproc,
                              max_steps=args.max_steps, data_dir=args.data_dir)
    return emit(args, out, run.render, code)


def cmd_doctor(args) -> int:
    from harness.data import ready
    from harness.runs import doctor

    rep = doctor.run(track(args), make_shards=ready.stand_in, quick=args.quick, say=_progress(args))
    return emit(args, rep, doctor.render, EXIT_OK if rep["ok"] else EXIT_FAIL)


def cmd_bench(args) -> int:
    from harness.runs import bench
    from harness.core.track import repo_root

    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    if args.compile_only:
        failed, rep = bench.compile_only(args.names, arch=args.arch or "sm_90", shapes=args.shapes, say=say)
        return emit(args, rep, bench.render_compile, EXIT_FAIL if failed else EXIT_OK)
    if args.arch:
        raise InputError("bench --arch: only with --compile-only (a timed bench runs on this machine's GPU)")
    failed, doc = bench.run(args.names, shapes=args.shapes, compiled=not args.no_compile, compare_with=args.compare,
                            threshold=args.threshold, save_to=None if args.no_save else repo_root(), out=args.out,
                            say=say)
    return emit(args, doc, bench.render, EXIT_FAIL if failed else EXIT_OK)


CPU_RUNS = 3  # ./run.sh without GPUs: three full tiny-cpu runs (≈1 min each): enough for a t-test


def cmd_main(args) -> int:
    """What `./run.sh` runs: the record attempt this machine's hardware can make — gpt2-small on 8 GPUs
    (FineWeb fetched when missing), else tiny-cpu on the CPU."""
    from harness.core.track import load_track
    from harness.data import fineweb, ready
    from harness.runs import attempt, launch

    console = _console()
    n = launch.gpu_count()
    if n >= 8:
        print(f"found {n} GPUs: the gpt2-small record attempt (`speedrun attempt --track gpt2-small`)", flush=True)
        o = attempt.Options(track="gpt2-small")
        try:
            ready.fetched(load_track(o.track))
        except fineweb.DataError as e:
            return fail(args, f"{e}; fix that, then run ./run.sh again", EXIT_FAIL)
    else:
        if n:
            print(f"found {n} GPU(s), fewer than the 8 of gpt2-small: attempting the tiny-cpu track (on the CPU)")
        o = attempt.Options(track="tiny-cpu", runs=CPU_RUNS)
    ready.ready(load_track(o.track))
    code, m = attempt.run_attempt(o, console)
    attempt.render(m, console)
    return code


def _attempt(p):
    p.add_argument("--runs", type=int, help="runs of the candidate, seeds 0..N-1 (default 3)")
    p.add_argument("--seeds", type=_seeds, metavar="S,S,…", help="these seeds instead of 0..N-1")
    p.add_argument("--script", help="the trainer to run (default: train_gpt.py at the repo root)")
    p.add_argument("--nproc", type=int, help="processes per node (default: the track's nproc)")
    p.add_argument("--nnodes", type=int, default=1, help="nodes; >1 joins torchrun's c10d rendezvous")
    p.add_argument("--node-rank", type=int, help="this node's rank (torchrun --node-rank)")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="the rendezvous (the first node's address)")
    p.add_argument("--rdzv-id", help="rendezvous id shared by the nodes (a run index is appended)")
    p.add_argument("--baseline", metavar="ID", help="the record to beat (default: the track's latest official "
                                                    "record): its snapshot's runs interleave with the candidate's, "
                                                    "same seeds; the speedup's 95%% CI must lie above 1 (rule 4)")
    p.add_argument("--no-baseline", action="store_true", help="no baseline arm: runs that can never be a record")
    p.add_argument("--extend", metavar="DIR", help="add A/B pairs to this finished attempt (--runs N pairs; default: "
                                                   "as many as its verdict said the spread needs); every look is kept")
    p.add_argument("--max-steps", type=int, help="stop each run early (smoke attempts; cannot be a record)")
    p.add_argument("--timeout", type=float, metavar="S", help="kill a run (its whole process tree) after S seconds")
    p.add_argument("--data-dir", help="shards folder (default: the track's data.dir)")
    p.add_argument("--record", metavar="TITLE", help="record every candidate run in the ledger (refused if any did "
                                                     "not finish, unless --unofficial)")
    p.add_argument("--contributors", action="append", metavar="A,B", help="names for --record (repeatable)")
    p.add_argument("--unofficial", action="store_true", help="with --record: record even unfinished or failing runs, "
                                                             "marked unofficial")


def _run(p):
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nproc", type=int, help="processes (default: the track's nproc)")
    p.add_argument("--max-steps", type=int, help="stop early (smoke runs; cannot meet a target)")
    p.add_argument("--data-dir", help="shards folder (default: the track's data.dir)")


def _bench(p):
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="kernels to bench (default: all): xxt softcap_ce fp8_linear relu2_linear")
    p.add_argument("--shapes", choices=("record", "small"),
                   help="gpt2-small record shapes (default on CUDA) or the tiny preset's (default on CPU)")
    p.add_argument("--out", metavar="FILE", help="also write the results document to FILE")
    p.add_argument("--compare", metavar="FILE", help="an earlier results file: show the change, exit 1 beyond --threshold")
    p.add_argument("--threshold", type=float, default=0.10, help="allowed slowdown for --compare (default 0.10 = 10%%)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd reference (quick runs)")
    p.add_argument("--no-save", action="store_true", help="do not store the results under records/_bench/")
    p.add_argument("--compile-only", action="store_true",
                   help="compile every kernel and autotune config for --arch with Triton's real compiler, no GPU "
                        "needed: registers, spills, shared memory, wgmma/TMA; exit 1 on a failure or a spill")
    p.add_argument("--arch", choices=("sm_80", "sm_90", "sm_100"), help="target of --compile-only (default sm_90: H100)")


def register(sub, parents) -> None:
    shared = (parents["track"], parents["json"])
    add(sub, "attempt", cmd_attempt, _attempt, parents=shared,
        help="N seeded runs (interleaved with a baseline record's), every run in a manifest, verification and a "
             "verdict; exit 0 record, 1 not, 130 interrupted")
    add(sub, "run", cmd_run, _run, parents=shared, hidden=True,
        help="run the trainer once on a track and judge it against the target")
    add(sub, "doctor", cmd_doctor,
        lambda p: p.add_argument("--quick", action="store_true",
                                 help="half the steps and shorter timings (on CPU: no compile)"),
        parents=shared,
        help="check this node before an attempt: environment, matmul and all-reduce throughput, every kernel at "
             "the preset's shapes, the track's preset for a few dozen steps on synthetic shards; exit 0 sound, 1 not")
    add(sub, "bench", cmd_bench, _bench, parents=(parents["json"],),
        help="check each kernel against its reference, then time it beside the eager and compiled reference")
    add(sub, "main", cmd_main, help="the main job for this machine (what ./run.sh runs)")

