"""One run of the trainer on a track: data ready, torchrun as a subprocess, live progress, verdict.

The harness never imports the trainer (or torch): it runs `train_gpt.py` in a child process, reads
its stdout as it comes, and takes the facts from the log's last line, `RESULT {json}`. The pieces
here (the launch command, `stream`, `Watch`) are shared with `speedrun attempt` (harness/attempt.py).
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError
from harness.track import load_track, repo_root

STEP = re.compile(r"^step:(\d+)/(\d+) (?:val_loss:(\S+) )?train_time:(\d+)ms step_avg:(\S+)ms")
RANK_TAG = re.compile(r"^\[[A-Za-z_]+(\d+)\]:(.*)$")  # torchrun --tee: "[default1]:line" is local rank 1's
DIVERGED = "diverged:"  # the trainer's line (exit code 3) when the loss went nan, inf or too high


# ---- the command ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Launch:
    """How the trainer's processes start: one plain process, torchrun on one node (--standalone), or
    torchrun joining a multi-node rendezvous (every node runs the same command)."""
    nproc: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    rdzv_backend: str = "c10d"
    rank_logs: Path | None = None  # torchrun --log-dir … --tee 3: each rank's output kept, its lines tagged

    @property
    def torchrun(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1

    def argv(self, script: str) -> list[str]:
        if not self.torchrun:
            return [sys.executable, script]
        # `python -m torch.distributed.run` is torchrun, without relying on PATH
        cmd = [sys.executable, "-m", "torch.distributed.run"]
        if self.nnodes > 1:
            if not self.rdzv_endpoint:
                raise InputError(f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT (the first node's address)")
            cmd += [f"--nnodes={self.nnodes}", f"--rdzv-backend={self.rdzv_backend}",
                    f"--rdzv-endpoint={self.rdzv_endpoint}", f"--rdzv-id={self.rdzv_id or 'speedrun'}"]
            if self.node_rank is not None:
                cmd.append(f"--node-rank={self.node_rank}")
        else:
            cmd.append("--standalone")
        cmd.append(f"--nproc_per_node={self.nproc}")
        if self.rank_logs is not None:
            cmd += [f"--log-dir={self.rank_logs}", "--tee=3"]
        return cmd + [script]


def trainer_command(track: dict, *, seed: int, data_dir: Path, run_id: str, log_dir: Path, nproc: int = 1,
                    max_steps: int | None = None, script: str | Path | None = None,
                    launch: Launch | None = None) -> list[str]:
    script = str(script or repo_root() / "train_gpt.py")
    cmd = (launch or Launch(nproc=nproc)).argv(script)
    cmd += ["--preset", track["preset"], "--data-dir", str(data_dir), "--seed", str(seed),
            "--run-id", run_id, "--log-dir", str(log_dir)]
    # a smoke run cannot be a record, so it skips the (untimed, but slow on CPU) compilation
    return cmd + (["--max-steps", str(max_steps), "--no-compile"] if max_steps else [])


def trainer_env(track: dict, **extra: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    if track["hardware"]["accelerator"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU track is timed on the CPU even where a GPU exists
    return env


def prepare_data(track: dict, data_dir: str | None) -> tuple[Path, dict | None]:
    """The shards folder, generated first when the track's corpus is synthetic and missing."""
    d = Path(data_dir).resolve() if data_dir else repo_root() / track["data"]["dir"]
    if track["data"]["source"] == "synthetic":
        from harness import data  # numpy, lazily

        return d, data.ensure_synthetic(track, out=str(d))
    if not any(d.glob(track["data"].get("val_pattern", "*val*.bin"))):
        raise InputError(f"no validation shards in {d}: download them with `speedrun data fineweb --dir {d}`")
    return d, None


# ---- watching a run ------------------------------------------------------------------------------------

class Watch:
    """The facts a trainer's output gives as it streams: step of total, the latest val loss, step_avg,
    the RESULT, the `diverged:` line. `feed` returns what the line was."""

    def __init__(self, max_steps: int | None = None):
        self.max_steps = max_steps
        self.step, self.total = 0, None
        self.val_loss = self.step_avg_ms = None
        self.result: dict = {}
        self.diverged: str | None = None

    def feed(self, line: str) -> str:
        m = STEP.match(line)
        if m:
            step, total, val, _, avg = m.groups()
            self.step, self.step_avg_ms = int(step), float(avg)
            self.total = min(int(total), self.max_steps) if self.max_steps else int(total)
            if val is None:
                return "step"
            self.val_loss = float(val)
            return "val"
        if line.startswith("RESULT "):
            try:
                self.result = json.loads(line[len("RESULT "):])
            except ValueError:
                return "other"
            return "result"
        if line.startswith(DIVERGED):
            self.diverged = line
            return "diverged"
        return "other"

    @property
    def eta_s(self) -> float | None:
        """Training time left at the current step_avg (validation passes not counted)."""
        if self.total is None or self.step_avg_ms is None:
            return None
        return max(self.total - self.step, 0) * self.step_avg_ms / 1000


# ---- streaming a child and stopping it -------------------------------------------------------------------

@dataclass
class Finished:
    """How a streamed child ended: exit code (None if it had to be killed), the last lines overall and
    per rank (key None: torchrun's own lines, or a single process's), timed out / interrupted."""
    code: int | None
    tail: deque
    ranks: dict = field(default_factory=dict)
    timed_out: bool = False
    interrupted: bool = False
    wall_s: float = 0.0


def stream(cmd: list[str], env: dict, on_line, *, cwd: Path | None = None, timeout: float | None = None,
           ranked: bool = False, transcript: Path | None = None, grace_s: float = 10.0) -> Finished:
    """Runs cmd in its own session, handing each output line (and its rank, with torchrun --tee) to
    on_line(line, rank). Past `timeout` seconds, or on Ctrl-C (KeyboardInterrupt, or SIGTERM while this
    runs), the whole process tree is stopped (`stop_tree`) and the result says so, rather than raising."""
    t0 = time.monotonic()
    tail: deque = deque(maxlen=60)
    ranks: dict = {}
    out = _Transcript(transcript)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            errors="replace", env=env, cwd=cwd or repo_root(), start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    deadline = None if timeout is None else t0 + timeout
    done = Finished(None, tail, ranks)
    old_term = _sigterm_as_interrupt()
    try:
        exited_at = None
        while True:
            if deadline is not None and time.monotonic() > deadline:  # checked even while lines keep coming
                done.timed_out = True
                break
            try:
                raw = lines.get(timeout=0.2)
            except queue.Empty:
                if proc.poll() is not None:  # exited; a straggler holding the pipe gets 2 s to let go
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > 2:
                        break
                continue
            if raw is None:
                break
            out.write(raw)
            line, rank = raw.rstrip("\n"), None
            if ranked and (m := RANK_TAG.match(line)):
                rank, line = int(m[1]), m[2]
            tail.append(line if rank is None else f"[rank {rank}] {line}")
            ranks.setdefault(rank, deque(maxlen=40)).append(line)
            on_line(line, rank)
    except KeyboardInterrupt:
        done.interrupted = True
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if done.timed_out or done.interrupted:
            stop_tree(proc, grace_s)
        else:
            try:
                proc.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                done.timed_out = True
                stop_tree(proc, grace_s)
        out.close()
    done.code = None if (done.timed_out or done.interrupted) else proc.returncode
    done.wall_s = time.monotonic() - t0
    return done


def _pump(pipe, lines: queue.Queue) -> None:
    try:
        for raw in pipe:
            lines.put(raw)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's cancel, `kill`) stops the run like Ctrl-C does: its children go with it."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave SIGTERM alone
        return signal.getsignal(signal.SIGTERM)


class _Transcript:
    """The child's console output, best effort: a full disk stops the transcript, never the run."""

    def __init__(self, path: Path | None):
        self.f = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.f = open(path, "w", encoding="utf-8")
            except OSError:
                self.f = None

    def write(self, raw: str) -> None:
        if self.f is not None:
            try:
                self.f.write(raw)
                self.f.flush()
            except OSError:
                self.close()

    def close(self) -> None:
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
            self.f = None


def stop_tree(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a child and everything it started. torchrun starts each rank in a session of its own, so
    its process group is not enough: the descendants are listed from /proc first (Linux), SIGTERM goes
    to the group and to each of them (torchrun then closes its ranks), and whatever is still alive after
    `grace_s` gets SIGKILL. A second Ctrl-C meanwhile is ignored: it must not leave orphans behind."""
    try:
        shield = [(sig, signal.signal(sig, signal.SIG_IGN)) for sig in (signal.SIGINT, signal.SIGTERM)]
    except ValueError:  # not the main thread
        shield = []
    try:
        _stop_tree(proc, grace_s)
    finally:
        for sig, old in shield:
            signal.signal(sig, old)


def _stop_tree(proc: subprocess.Popen, grace_s: float) -> None:
    tree = descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        tree |= descendants(proc.pid)
        for pid, start in tree:
            if _start_time(pid) == start:  # the same process, not a reused pid
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        if sig == signal.SIGTERM:
            end = time.monotonic() + grace_s
            while time.monotonic() < end and (proc.poll() is None or any(_start_time(p) == s for p, s in tree)):
                time.sleep(0.1)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def descendants(pid: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live descendant of pid, from /proc; empty where there is no /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for e in entries:
        if e.isdigit():
            st = _stat(int(e))
            if st:
                children.setdefault(st[0], []).append(int(e))
    out, todo = set(), list(children.get(pid, []))
    while todo:
        p = todo.pop()
        start = _start_time(p)
        if start is not None and (p, start) not in out:
            out.add((p, start))
            todo += children.get(p, [])
    return out


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) from /proc/<pid>/stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # the name may hold spaces and parentheses
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[1]


# ---- speedrun run: one run, judged ---------------------------------------------------------------------

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
                                info=f"step_avg {watch.step_avg_ms:.0f}ms")
                if kind == "val":
                    progress.console.print(f"  step {watch.step:>5}/{watch.total}  val_loss [bold]{watch.val_loss:.4f}[/]  "
                                           f"train_time {int(STEP.match(line)[4]) / 1000:.1f}s")
            elif kind != "result":
                progress.console.print(f"  {line}", style="dim", markup=False, highlight=False)

        done = stream(cmd, trainer_env(track), on_line)
    if done.interrupted:
        raise KeyboardInterrupt
    result = watch.result
    if done.code != 0 or not result:
        console.print(f"[red]the trainer failed (exit {done.code})[/]; its last lines:", highlight=False)
        for line in list(done.tail)[-25:]:
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


def fetch_fineweb_if_missing(track: dict, train_shards: int = 8) -> Path:
    """The hook `./run.sh` calls on an 8-GPU node: FineWeb's val shard and `train_shards` train shards in the
    track's data dir, fetched by `speedrun data fineweb` when any is missing."""
    d = repo_root() / track["data"]["dir"]
    have_val = any(d.glob(track["data"].get("val_pattern", "*val*.bin")))
    have_train = len(list(d.glob(track["data"].get("train_pattern", "*train*.bin"))))
    if have_val and have_train >= train_shards:
        return d
    cmd = [sys.executable, "-m", "harness.cli", "data", "fineweb", "--train-shards", str(train_shards), "--dir", str(d)]
    print(f"==> {d}: {have_train} train shard(s){'' if have_val else ', no val shard'}; fetching: "
          f"speedrun {' '.join(cmd[3:])}", flush=True)
    code = subprocess.call(cmd, cwd=repo_root())
    if code:
        raise InputError(f"`speedrun data fineweb --dir {d}` failed (exit {code}); fix that, then run ./run.sh again")
    return d


CPU_RUNS = 3  # ./run.sh without GPUs: three full tiny-cpu runs (≈2 min each): enough for a t-test


def main_job() -> int:
    """`./run.sh`: the record attempt this machine's hardware can make."""
    from harness import attempt

    n = gpu_count()
    if n >= 8:
        print(f"found {n} GPUs: the gpt2-small record attempt (`speedrun attempt --track gpt2-small`)", flush=True)
        fetch_fineweb_if_missing(load_track("gpt2-small"))
        return attempt.run_attempt(attempt.Options(track="gpt2-small"))
    if n:
        print(f"found {n} GPU(s), fewer than the 8 of gpt2-small: attempting the tiny-cpu track (on the CPU)")
    return attempt.run_attempt(attempt.Options(track="tiny-cpu", runs=CPU_RUNS))
