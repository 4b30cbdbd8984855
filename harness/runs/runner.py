"""An attempt's run loop: each run started under torchrun (`launch`), streamed live with a progress line,
stopped at --timeout with its whole process tree, classified (ok / diverged / failed / timeout /
interrupted) with the rank that failed first, and written to the manifest as it starts and ends."""
from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

from harness.runs import launch as launcher, proc
from harness.core.files import number, sha256_file, sha256_text
from harness.runs.manifest import node_paths, now

def root_cause(tail) -> dict:
    """From torchrun's failure report: the rank it saw fail first, its exit code and its traceback line."""
    lines = list(tail)
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("Root Cause"))
    except ValueError:
        return {}
    out = {}
    for line in lines[start:]:
        key, sep, value = line.strip().partition(":")
        key, value = key.strip(), value.strip()
        if sep and key == "rank" and "rank" not in out:
            out["rank"], out["local_rank"] = int(value.split()[0]), int(value.rsplit(":", 1)[-1].strip(" )"))
        elif sep and key == "exitcode" and "exitcode" not in out:
            out["exitcode"] = int(value.split()[0])
        elif sep and key == "traceback" and "traceback" not in out:
            out["traceback"] = value
    return out


def _last_error(lines) -> str | None:
    """The last line of a Python traceback (`SomeError: …`) in lines, or None."""
    for line in reversed(list(lines)):
        s = line.strip()
        head = s.split(":", 1)[0]
        if head and " " not in head and (head.endswith(("Error", "Exception", "Exit", "Interrupt"))):
            return s
    return None


def classify(done: proc.Finished, watch: launcher.Watch, *, timeout, multinode: bool) -> tuple[str, str, int | None]:
    """(outcome, message, rank to show) for a finished stream."""
    at = f"at step {watch.step}/{watch.total}" if watch.total else "before its first step"
    if done.interrupted:
        return "interrupted", f"interrupted (Ctrl-C or SIGTERM) {at}; its process tree was stopped", None
    if done.timed_out:
        return "timeout", f"ran past --timeout {timeout:g} s {at}; its process tree was killed", None
    if watch.diverged:
        return "diverged", watch.diverged, None
    if done.code == 0 and watch.result and number(watch.result.get("val_loss")) is None:
        return "diverged", f"final val_loss is {watch.result.get('val_loss')} {at}", None
    if done.code == 0 and watch.result:
        r = watch.result
        return "ok", f"val_loss {r.get('val_loss')} after {r.get('steps')} steps in {r.get('train_time_ms', 0) / 1000:.2f} s", None
    if done.code == 0:
        if multinode:
            return "ok", "finished; rank 0 (and its log) is on another node", None
        return "failed", "exit 0 without a RESULT line", None
    cause = root_cause(done.tail)
    if cause:
        rank = cause.get("local_rank")
        said = _last_error(done.ranks.get(rank, ()))
        why = cause.get("traceback", "")
        if said and (not why or why.startswith("To enable traceback")):
            why = said
        return "failed", (f"rank {cause.get('rank')} failed first (exitcode {cause.get('exitcode')}): {why}".rstrip(": ")
                          + f"; torchrun exit {done.code}"), rank
    said = _last_error(done.tail)
    return "failed", f"exit {done.code}" + (f": {said}" if said else ""), None


def run_guarded(o, track, plan, script, base, data_dir, nproc, manifest, console, start: int = 0) -> bool:
    old_term = proc.sigterm_as_interrupt()  # SIGTERM stops the attempt like Ctrl-C
    try:
        return _run_all(o, track, plan, script, base, data_dir, nproc, manifest, console, start)
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _endpoint(endpoint: str | None, k: int, node_rank: int | None) -> str | None:
    """Run k's rendezvous address: under the static rendezvous (--node-rank) each run gets a port of its
    own, so a run's master port is never one the previous run's processes may still hold."""
    if endpoint is None or node_rank is None:
        return endpoint
    host, _, port = endpoint.rpartition(":")
    return f"{host}:{int(port) + k}" if port.isdigit() else endpoint


def _run_all(o, track, plan, script, base, data_dir, nproc, manifest, console, start: int = 0) -> bool:
    """Every planned run, in order; True when Ctrl-C/SIGTERM ended the attempt."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    runs = manifest.data["runs"]
    adir = manifest.folder
    multinode = o.nnodes > 1
    with Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        overall = progress.add_task(f"[bold]{track['name']}[/]", total=len(plan), info="")
        try:
            for k, (role, seed) in enumerate(plan, start):
                tag = "b" if role == "baseline" else "c"
                run_id = f"{track['name']}-{tag}{k}-s{seed}-{sha256_text(manifest.data['id'])[:6]}"
                launch = launcher.Launch(nproc=nproc, nnodes=o.nnodes, node_rank=o.node_rank,
                                         rdzv_endpoint=_endpoint(o.rdzv_endpoint, k, o.node_rank),
                                         rdzv_id=f"{o.rdzv_id or 'speedrun'}-{k}")
                paths = node_paths(o.nnodes, o.node_rank)
                if launch.torchrun:  # each rank's output in files, and tagged on the console
                    launch = replace(launch, rank_logs=adir / paths["ranks"] / run_id)
                run_script = Path(base["script"]) if role == "baseline" else script
                conv = launcher.convention_of(base["launch"]) if role == "baseline" else "speedrun"
                cmd = launcher.trainer_command(track, seed=seed, data_dir=data_dir, run_id=run_id, log_dir=adir,
                                               max_steps=o.max_steps, script=run_script, launch=launch, convention=conv)
                public_logs = run_script.parent / base["launch"].get("logs", "logs") if conv == "modded" else None
                before = {p.name for p in public_logs.glob("*.txt")} if public_logs and public_logs.is_dir() else set()
                first = role == "candidate" and not any(r["role"] == "candidate" for r in runs)
                kill = o.kill_rank_at_step if first else None
                env = launcher.trainer_env(track)
                entry = {"index": k, "role": role, "seed": seed, "run_id": run_id, "outcome": "running",
                         "exit_code": None, "log": f"{run_id}.txt", "log_sha256": None,
                         "console": f"{paths['console']}/{run_id}.txt", "message": "", "started": now(), "wall_s": None,
                         "command": cmd,
                         "val_loss": None, "train_time_ms": None, "steps": None, "step_avg_ms": None}
                if kill:
                    entry["fault"] = f"kill@{kill[0]}:{kill[1]}"
                runs.append(entry)
                manifest.save()

                watch = launcher.Watch(o.max_steps)
                task = progress.add_task(f"  {role} s{seed}", total=None, info="starting")
                progress.update(overall, info=f"run {k - start + 1}/{len(plan)}")

                def on_line(line, rank, watch=watch, task=task, kill=kill, run_id=run_id):
                    if watch.feed(line) in ("step", "val"):
                        progress.update(task, completed=watch.step, total=watch.total, info=_live(watch))
                        if kill and watch.step >= kill[0]:
                            proc.kill_rank(run_id, kill[1])

                done = proc.stream(cmd, env, on_line, cwd=run_script.parent, timeout=o.timeout,
                                     ranked=launch.torchrun, transcript=adir / entry["console"])
                if conv == "modded":  # its log, under the attempt's name; its facts, from the log (no RESULT line)
                    written = launcher.modded_log(run_script.parent, before, base["launch"])
                    if written is not None:
                        os.replace(written, adir / entry["log"])
                        watch.result = launcher.result_from_log(adir / entry["log"]) if done.code == 0 else {}
                    entry["seeded"] = False  # a public script picks its own seed: pairs are by order, not seed
                outcome, message, show_rank = classify(done, watch, timeout=o.timeout, multinode=multinode)
                r = watch.result if outcome == "ok" else {}  # a run that did not finish has no result
                log = adir / entry["log"]
                entry.update(outcome=outcome, exit_code=done.code, message=message, wall_s=round(done.wall_s, 2),
                             log_sha256=sha256_file(log, missing_ok=True), val_loss=r.get("val_loss"),
                             train_time_ms=r.get("train_time_ms"), steps=r.get("steps", watch.step or None),
                             step_avg_ms=r.get("step_avg_ms"))
                if not log.is_file():
                    entry["log"] = None
                if outcome != "ok":
                    entry["tail"] = _failing_lines(done, show_rank, outcome)
                manifest.save()
                progress.remove_task(task)
                progress.advance(overall)
                _print_row(progress.console, entry, start + len(plan))
                if outcome not in ("ok", "interrupted"):
                    for line in entry["tail"]:
                        progress.console.print(f"      {line}", style="dim", markup=False, highlight=False)
                if manifest.error:
                    progress.console.print(f"[red]{manifest.error}[/]", highlight=False)
                if outcome == "interrupted":
                    return True
        except KeyboardInterrupt:  # between runs, or while the manifest was written
            for e in runs:
                if e["outcome"] == "running":
                    e.update(outcome="interrupted", message="interrupted (Ctrl-C or SIGTERM)")
            manifest.save()
            return True
    return False


def _live(w: launcher.Watch) -> str:
    parts = []
    if w.val_loss is not None:
        parts.append(f"val {w.val_loss:.4f}")
    if w.step_avg_ms is not None:
        parts.append(f"{w.step_avg_ms:.0f} ms/step")
    if w.eta_s is not None:
        parts.append(f"ETA {w.eta_s:.0f} s")
    return "  ".join(parts)


def _failing_lines(done: proc.Finished, rank: int | None, outcome: str) -> list[str]:
    """What to show of a run that did not finish: the failing rank's own last lines, then the end of
    everything (torchrun's report included)."""
    out = []
    if outcome == "diverged":  # the trainer said what happened (the message repeats it): its last lines
        return list(done.ranks.get(0) or done.ranks.get(None) or done.tail)[-4:]
    if rank is not None:
        mine = list(done.ranks.get(rank, ()))[-12:]
        out += [f"rank {rank}'s last lines:"] + ([f"  {x}" for x in mine] or ["  (it printed nothing)"])
        rest = [x for x in done.tail if not x.startswith(f"[rank {rank}] ")]
        block = next((i for i, x in enumerate(rest) if x.startswith("Root Cause")), None)
        out += rest[block:] if block is not None else rest[-12:]
    else:
        out += list(done.tail)[-20:]
    return out


def _print_row(console, e: dict, n: int) -> None:
    from rich.markup import escape

    mark = {"ok": "[green]✓[/]", "interrupted": "[yellow]■[/]"}.get(e["outcome"], "[red]✗[/]")
    head = f"{mark} {e['index'] + 1}/{n} {e['role']:<9} s{e['seed']:<3} {e['outcome']:<11}"
    if e["outcome"] == "ok" and e["val_loss"] is not None:
        console.print(f"{head} val_loss {e['val_loss']:.4f}  train {e['train_time_ms'] / 1000:7.2f} s  "
                      f"{e['step_avg_ms']:.0f} ms/step  {e['log']}", highlight=False)
    else:
        console.print(f"{head} {escape(e['message'])}", highlight=False)
