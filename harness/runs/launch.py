"""The trainer as a child process: the command that starts it (one process, torchrun on one node, or a
multi-node rendezvous), its environment, the data it needs, and `Watch`, which reads its output as it
streams (the step lines, the RESULT line, the `diverged:` line). Shared by `attempt` and the old `run`.

The harness never imports the trainer (or torch): it runs the script in a child process and takes the
facts from the log's last line, `RESULT {json}`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.judge import logs
from harness.core.errors import InputError
from harness.core.track import data_dir, repo_root

DIVERGED = "diverged:"  # the trainer's line (exit code 3) when the loss went nan, inf or too high


@dataclass(frozen=True)
class Launch:
    """How the trainer's processes start: one plain process, torchrun on one node (--standalone), or
    torchrun joining a multi-node rendezvous (every node runs the same command). With --node-rank the
    rendezvous is static (torchrun's --master-addr/--master-port): node r holds global ranks
    r·nproc … r·nproc + nproc − 1, so node 0 holds global rank 0 and the log. Without it, c10d assigns
    ranks in the order nodes arrive (torchrun ignores --node-rank under c10d), and the log lands on
    whichever node got rank 0."""
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
            if self.node_rank is not None:
                host, _, port = self.rdzv_endpoint.rpartition(":")
                if not host or not port.isdigit():
                    raise InputError(f"--rdzv-endpoint {self.rdzv_endpoint}: expected HOST:PORT")
                cmd += [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}", f"--master-addr={host}",
                        f"--master-port={port}"]
            else:
                cmd += [f"--nnodes={self.nnodes}", f"--rdzv-backend={self.rdzv_backend}",
                        f"--rdzv-endpoint={self.rdzv_endpoint}", f"--rdzv-id={self.rdzv_id or 'speedrun'}"]
        else:
            cmd.append("--standalone")
        cmd.append(f"--nproc_per_node={self.nproc}")
        if self.rank_logs is not None:
            cmd += [f"--log-dir={self.rank_logs}", "--tee=3"]
        return cmd + [script]


# How a record's script is started. "speedrun": this trainer's flags (--preset, --seed, --data-dir,
# --run-id, --log-dir). "modded": the public scripts' way: no flags at all; the script reads its shards
# from data/fineweb10B/ under its working directory and writes logs/<uuid>.txt there, with no RESULT line.
CONVENTIONS = ("speedrun", "modded")


def convention_of(launch_meta: dict | None) -> str:
    c = (launch_meta or {}).get("convention", "speedrun")
    if c not in CONVENTIONS:
        raise InputError(f"launch convention {c!r} is not one of {', '.join(CONVENTIONS)}")
    return c


def modded_workdir(script: Path, shards: Path, meta: dict | None = None) -> Path:
    """The working directory a public script expects: its own folder, with data/fineweb10B/ (or what the
    record's launch says) linked to the track's shards and an empty logs/ (earlier logs moved aside)."""
    work = script.parent
    link = work / (meta or {}).get("data_dir", "data/fineweb10B")
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() != shards.resolve():
            raise InputError(f"{link}: exists and is not the track's shards {shards}")
    else:
        link.symlink_to(shards.resolve(), target_is_directory=True)
    return work


def modded_log(work: Path, before: set[str], meta: dict | None = None) -> Path | None:
    """The log a public-convention run wrote: the one new .txt under its logs/ folder."""
    folder = work / (meta or {}).get("logs", "logs")
    new = sorted(p for p in folder.glob("*.txt") if p.name not in before) if folder.is_dir() else []
    return max(new, key=lambda p: p.stat().st_mtime) if new else None


def result_from_log(path: Path) -> dict:
    """What a RESULT line would say, read from a log that has none (the public scripts write none)."""
    parsed = logs.parse_file(path)
    t = parsed.trials[-1] if parsed.trials else None
    v = t.final_val if t else None
    if v is None:
        return {}
    steps = t.final_step or 0
    return {"val_loss": v.loss, "train_time_ms": v.time_ms, "steps": steps, "num_steps": t.total_steps,
            "step_avg_ms": (v.time_ms / steps) if v.time_ms is not None and steps else None}


def trainer_command(track: dict, *, seed: int, data_dir: Path, run_id: str, log_dir: Path, nproc: int = 1,
                    max_steps: int | None = None, script: str | Path | None = None,
                    launch: Launch | None = None, convention: str = "speedrun") -> list[str]:
    """The command that runs `script` (default: this trainer) once. Under the public convention the
    script takes no flags: seed, run id and step cap are its own."""
    script = str(script or repo_root() / "train_gpt.py")
    cmd = (launch or Launch(nproc=nproc)).argv(script)
    if convention == "modded":
        return cmd
    cmd += ["--preset", track["preset"], "--data-dir", str(data_dir), "--seed", str(seed),
            "--run-id", run_id, "--log-dir", str(log_dir)]
    # a smoke run cannot be a record, so it skips the (untimed, but slow on CPU) compilation
    return cmd + (["--max-steps", str(max_steps), "--no-compile"] if max_steps else [])


def trainer_env(track: dict, **extra: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    # One compile cache for every run from this checkout: the first run compiles (~60 s on 2 CPU cores),
    # the rest load it (~7 s). Warm-up is untimed either way; the user still waits. A fresh clone starts
    # cold, as it would on a fresh machine; the user's own setting wins.
    cache = repo_root() / ".cache"
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    env.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
    if track["hardware"]["accelerator"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU track is timed on the CPU even where a GPU exists
    return env


def shards_dir(track: dict, override: str | None) -> Path:
    """The shards folder a run trains on; made beforehand (`speedrun data`, or the CLI through
    harness.data.ready): a folder without val shards is bad input."""
    d = data_dir(track, override)
    if not any(d.glob(track["data"].get("val_pattern", "*val*.bin"))):
        make = "make --out" if track["data"]["source"] == "synthetic" else "fetch --dir"
        raise InputError(f"no validation shards in {d}: `speedrun data {make} {d} --track {track['name']}` makes them")
    return d


class Watch:
    """The facts a trainer's output gives as it streams: step of total, the latest val loss, train_time,
    step_avg, the RESULT, the `diverged:` line. `feed` returns what the line was. Step lines are read by
    the log parser's own reader (`logs.read_step`), so the live view and `speedrun parse` agree."""

    def __init__(self, max_steps: int | None = None):
        self.max_steps = max_steps
        self.step, self.total = 0, None
        self.val_loss = self.step_avg_ms = self.time_ms = None
        self.result: dict = {}
        self.diverged: str | None = None

    def feed(self, line: str) -> str:
        if line.startswith("step:"):
            p = logs.read_step(line)
            if p is None:
                return "other"
            step, total, loss, self.time_ms, avg, is_val = p
            self.step, self.step_avg_ms = step, avg
            if total is not None:
                self.total = min(total, self.max_steps) if self.max_steps else total
            if not is_val:
                return "step"
            self.val_loss = loss
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


def gpu_count() -> int:
    """GPUs visible to nvidia-smi, without importing torch (0 where there is no driver)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


