"""Child processes: run one in its own session, stream its output line by line, stop it and everything
it started. Nothing here knows about tracks or the trainer (harness/launch.py does); Linux /proc is used
to find a process tree, and where there is none only the process group is signalled.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

RANK_TAG = re.compile(r"^\[[A-Za-z_]+(\d+)\]:(.*)$")  # torchrun --tee: "[default1]:line" is local rank 1's


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
    out = Transcript(transcript)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            errors="replace", env=env, cwd=cwd, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    deadline = None if timeout is None else t0 + timeout
    done = Finished(None, tail, ranks)
    old_term = sigterm_as_interrupt()
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


def sigterm_as_interrupt():
    """SIGTERM (a scheduler's cancel, `kill`) stops the run like Ctrl-C does: its children go with it."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave SIGTERM alone
        return signal.getsignal(signal.SIGTERM)


class Transcript:
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


def kill_rank(marker: str, rank: int) -> bool:
    """SIGKILL the trainer rank whose command line holds `marker` (e.g. its run id) and whose environment
    says RANK=rank (torchrun sets it in each worker's), found in /proc: how tests make one rank of a run die
    as a crashed or OOM-killed one would. True when one was signalled."""
    hit = False
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{e}/environ", "rb") as f:
                if f"RANK={rank}".encode() not in f.read().split(b"\0"):
                    continue
            os.kill(int(e), signal.SIGKILL)
            hit = True
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return hit


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
