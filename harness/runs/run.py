"""`speedrun run` (a hidden old spelling; `attempt` supersedes it): one run of the trainer on a track, with
live progress, judged against the target.

The trainer runs as a child process (harness/runs/launch.py builds its command and watches its output;
harness/runs/proc.py streams and stops it). A record takes several runs and a t-test: `speedrun attempt`.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from harness.core.errors import EXIT_FAIL, EXIT_OK
from harness.runs.launch import Watch, shards_dir, trainer_command, trainer_env
from harness.runs.proc import stream
from harness.core.track import load_track, nproc as track_nproc, repo_root


def run_track(track_name: str, console, *, seed: int = 0, nproc: int | None = None, max_steps: int | None = None,
              data_dir: str | None = None) -> tuple[int, dict]:
    """One run with live progress on `console`: (exit code, {"result", "verdict"} or {"failed"})."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    track = load_track(track_name)
    nproc = nproc or track_nproc(track)
    d, manifest = shards_dir(track, data_dir), None
    run_id = f"{track_name}-s{seed}-{uuid.uuid4().hex[:8]}"
    log_dir = repo_root() / "logs"
    cmd = trainer_command(track, seed=seed, nproc=nproc, data_dir=d, run_id=run_id, log_dir=log_dir,
                          max_steps=max_steps)
    console.print(f"[bold]{track['name']}[/] v{track['version']}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}")

    watch = Watch(max_steps)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task("warm-up", total=None, info="")

        def on_line(line: str, rank):
            kind = watch.feed(line)
            if kind in ("step", "val"):
                progress.update(task, description="training", completed=watch.step, total=watch.total,
                                info="" if watch.step_avg_ms is None else f"step_avg {watch.step_avg_ms:.0f}ms")
                if kind == "val":
                    progress.console.print(f"  step {watch.step:>5}/{watch.total}  val_loss [bold]{watch.val_loss:.4f}[/]  "
                                           f"train_time {watch.time_ms / 1000:.1f}s")
            elif kind != "result":
                progress.console.print(f"  {line}", style="dim", markup=False, highlight=False)

        done = stream(cmd, trainer_env(track), on_line, cwd=repo_root())
    if done.interrupted:
        raise KeyboardInterrupt
    if done.code != 0 or not watch.result:
        return EXIT_FAIL, {"track": track["name"], "failed": {"exit_code": done.code, "tail": list(done.tail)[-25:]}}
    out = judge(track, watch.result, manifest)
    return (EXIT_OK if out["verdict"]["met_target"] else EXIT_FAIL), out


def judge(track: dict, result: dict, manifest: dict | None) -> dict:
    """{"track", "result", "verdict"}: met = every step ran and the final val loss is ≤ the target."""
    target = float(track["target"])
    floor = (manifest or {}).get("floor", {}).get("val_loss", track.get("floor"))
    complete = result["steps"] == result["num_steps"]
    met = complete and result["val_loss"] <= target
    return dict(track=track["name"], result=result, verdict=dict(target=target, floor=floor, met_target=met,
                                                                 complete=complete))


def render(out: dict, console) -> None:
    from rich.table import Table

    if "failed" in out:
        console.print(f"[red]the trainer failed (exit {out['failed']['exit_code']})[/]; its last lines:", highlight=False)
        for line in out["failed"]["tail"]:
            console.print(f"  {line}", markup=False, highlight=False)
        return
    track, result, v = load_track(out["track"]), out["result"], out["verdict"]
    met, target, floor = v["met_target"], v["target"], v["floor"]
    t = Table(title=f"{track['name']}: {'target met' if met else 'target NOT met'}", show_header=False)
    t.add_row("final val loss", f"[bold]{result['val_loss']:.4f}[/]")
    t.add_row(f"target ({track['metric']} ≤)", f"{target:.4f}  ({result['val_loss'] - target:+.4f})")
    if floor is not None:
        t.add_row("floor (Bayes-optimal)", f"{floor:.4f}  (gap {result['val_loss'] - floor:+.4f})")
    t.add_row("train time", f"{result['train_time_ms'] / 1000:.1f} s over {result['steps']} steps "
                            f"({result['step_avg_ms']:.0f} ms/step)")
    tok_s = result["tokens_per_step"] * result["steps"] / max(result["train_time_ms"] / 1000, 1e-9)
    t.add_row("throughput", f"{tok_s:,.0f} tokens/s")
    t.add_row("log", result["log"])
    console.print(t)
    if not v["complete"]:
        console.print(f"[yellow]stopped early at step {result['steps']} of {result['num_steps']} "
                      f"(--max-steps): a smoke run cannot meet a target[/]")
