"""One run of the trainer on a track: data ready, torchrun as a subprocess, live progress, verdict.

The harness never imports the trainer (or torch): it runs `train_gpt.py` in a child process, reads
its stdout as it comes, and takes the facts from the log's last line, `RESULT {json}`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import deque
from pathlib import Path

from harness.errors import InputError
from harness.track import load_track, repo_root

STEP = re.compile(r"^step:(\d+)/(\d+) (?:val_loss:(\S+) )?train_time:(\d+)ms step_avg:(\S+)ms")


def trainer_command(track: dict, *, seed: int, nproc: int, data_dir: Path, run_id: str,
                    log_dir: Path, max_steps: int | None = None) -> list[str]:
    script = str(repo_root() / "train_gpt.py")
    if nproc > 1:  # `python -m torch.distributed.run` is torchrun, without relying on PATH
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]
    else:
        launch = [sys.executable, script]
    cmd = launch + ["--preset", track["preset"], "--data-dir", str(data_dir), "--seed", str(seed),
                    "--run-id", run_id, "--log-dir", str(log_dir)]
    # a smoke run cannot be a record, so it skips the (untimed, but slow on CPU) compilation
    return cmd + (["--max-steps", str(max_steps), "--no-compile"] if max_steps else [])


def prepare_data(track: dict, data_dir: str | None) -> tuple[Path, dict | None]:
    """The shards folder, generated first when the track's corpus is synthetic and missing."""
    d = Path(data_dir) if data_dir else repo_root() / track["data"]["dir"]
    if track["data"]["source"] == "synthetic":
        from harness import data  # numpy, lazily

        return d, data.ensure_synthetic(track, out=str(d))
    if not any(d.glob(track["data"].get("val_pattern", "*val*.bin"))):
        raise InputError(f"no validation shards in {d}: download them with `speedrun data fineweb --dir {d}`")
    return d, None


def stream(cmd: list[str], env: dict, on_line) -> tuple[int, deque]:
    """Runs cmd, handing each output line to on_line; returns the exit code and the last lines."""
    tail: deque = deque(maxlen=60)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env, cwd=repo_root())
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            on_line(line)
        return proc.wait(), tail
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        raise


def run_track(track_name: str, *, seed: int = 0, nproc: int | None = None, max_steps: int | None = None,
              data_dir: str | None = None, as_json: bool = False) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    track = load_track(track_name)
    console = Console(stderr=as_json)  # --json keeps stdout for the JSON alone
    nproc = nproc or int(track.get("nproc", track["hardware"].get("count", 1)))
    d, manifest = prepare_data(track, data_dir)
    run_id = f"{track_name}-s{seed}-{uuid.uuid4().hex[:8]}"
    log_dir = repo_root() / "logs"
    cmd = trainer_command(track, seed=seed, nproc=nproc, data_dir=d, run_id=run_id, log_dir=log_dir,
                          max_steps=max_steps)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if track["hardware"]["accelerator"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU track is timed on the CPU even where a GPU exists
    console.print(f"[bold]{track['name']}[/] v{track['version']}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}")

    result: dict = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task("warm-up", total=None, info="")

        def on_line(line: str):
            m = STEP.match(line)
            if m:
                step, total, val, t_ms, avg = m.groups()
                progress.update(task, description="training", completed=int(step), total=int(total),
                                info=f"step_avg {float(avg):.0f}ms")
                if val is not None:
                    progress.console.print(f"  step {step:>5}/{total}  val_loss [bold]{float(val):.4f}[/]  "
                                           f"train_time {int(t_ms) / 1000:.1f}s")
            elif line.startswith("RESULT "):
                result.update(json.loads(line[len("RESULT "):]))
            elif not line.startswith("step:"):
                progress.console.print(f"  {line}", style="dim", markup=False, highlight=False)

        code, tail = stream(cmd, env, on_line)

    if code != 0 or not result:
        console.print(f"[red]the trainer failed (exit {code})[/]; its last lines:", highlight=False)
        for line in list(tail)[-25:]:
            console.print(f"  {line}", markup=False, highlight=False)
        return 1
    return report(track, result, manifest, console, as_json, max_steps)


def report(track: dict, result: dict, manifest: dict | None, console, as_json: bool, max_steps) -> int:
    from rich.table import Table

    target = float(track["target"])
    floor = (manifest or {}).get("floor", {}).get("val_loss", track.get("floor"))
    complete = result["steps"] == result["num_steps"]
    met = complete and result["val_loss"] <= target
    verdict = dict(target=target, floor=floor, met_target=met, complete=complete)
    if as_json:
        print(json.dumps(dict(result=result, verdict=verdict), indent=2))
        return 0 if met else 1
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
    if not complete:
        console.print(f"[yellow]stopped early at step {result['steps']} of {result['num_steps']} "
                      f"(--max-steps {max_steps}): a smoke run cannot meet a target[/]")
    return 0 if met else 1


def gpu_count() -> int:
    """GPUs visible to nvidia-smi, without importing torch (0 where there is no driver)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def main_job() -> int:
    """`./run.sh`: the record attempt this machine's hardware can make."""
    n = gpu_count()
    if n >= 8:
        print(f"found {n} GPUs: the 8×H100 record attempt (`speedrun attempt --track gpt2-small`, FineWeb "
              "download included) is not built yet; run `speedrun run --track tiny-cpu` meanwhile.")
        return 2
    if n:
        print(f"found {n} GPU(s), fewer than the 8 of gpt2-small: running the tiny-cpu track (on the CPU)")
    return run_track("tiny-cpu")
