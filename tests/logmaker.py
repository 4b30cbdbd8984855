"""Tiny run logs written by the tests themselves, one per format variant (no fixture text is copied).

`ours()` writes this project's format; `modded()` writes the modded-nanogpt variants by feature flags;
`llmc()` the llm.c format. Losses follow a seeded curve so different seeds give different trajectories.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEP = "=" * 100
SOURCE = '"""A stand-in trainer."""\nimport os\n\n\ndef main():\n    print("step")  # not a step line\n\n\nmain()\n'
KERNEL = '"""A stand-in kernel."""\n\n\ndef add(a, b):\n    return a + b\n'
SMI_ROW = "|   {i}  NVIDIA {model}          On  |   00000000:{i:02X}:00.0 Off |                    0 |"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def curve(step: int, total: int, seed: int, final: float, start: float = 10.8) -> float:
    """A decaying loss that lands near `final` at `total`; the seed moves it by a few 1e-3."""
    jitter = random.Random(seed * 7919 + step).uniform(-0.002, 0.002)
    return final + (start - final) * math.exp(-6 * step / total) - (start - final) * math.exp(-6) + jitter


def smi(count: int, model: str) -> list[str]:
    lines = ["+-----+", "| NVIDIA-SMI 550.00   Driver Version: 550.00   CUDA Version: 12.6 |", "|=====|"]
    for i in range(count):
        lines += [SMI_ROW.format(i=i, model=model), "| N/A   30C    P0   120W / 700W |  1520MiB / 81559MiB |  0%  Default |"]
    return lines + ["+-----+"]


def ours(*, seed: int = 0, total: int = 20, val_every: int = 5, final: float = 1.15, step_ms: float = 10.0,
         track: str = "tiny-cpu", preset: str = "tiny", gpus: tuple[int, str] | None = None, world_size: int = 1,
         source: str = SOURCE, kernels: dict[str, str] | None = None, data_sha: str = "d" * 64,
         run_id: str | None = None) -> str:
    """A complete log in this project's format (as train_gpt.py writes it)."""
    run_id = run_id or f"run{seed}"
    sources = {"train_gpt.py": source, **(kernels if kernels is not None else {"kernels/add.py": KERNEL})}
    out = []
    for name, src in sources.items():
        out += [f"# ==== file: {name} ===="] + src.rstrip("\n").split("\n")
    out += [SEP, "Running Python 3.12.3 (main) [GCC 13.2.0]", "Running PyTorch 2.9.0 compiled for CUDA "
            + ("12.8" if gpus else "None"), "Running Triton version 3.5.0"]
    out += smi(*gpus) if gpus else ["CPU: Test CPU cores:2 torch_threads:2 platform:Linux"]
    device = "cuda" if gpus else "cpu"
    out += [f"speedrun track:{track} preset:{preset} seed:{seed} run_id:{run_id} world_size:{world_size} device:{device}"]
    out += [f"code_sha256 {name}: {sha(src)}" for name, src in sources.items()]
    out += [f"data_sha256: {data_sha} (3 train + 1 val shards in data/synthetic)", SEP,
            'hyperparameters: {"num_steps": %d}' % total, "model: 1,000 parameters"]
    t = 0.0
    rnd = random.Random(seed)
    val = float("nan")
    for step in range(total + 1):
        if step == total or step % val_every == 0:
            val = curve(step, total, seed, final)
            out.append(f"step:{step}/{total} val_loss:{val:.4f} train_time:{t:.0f}ms step_avg:{t / max(step, 1):.2f}ms")
        if step == total:
            break
        t += step_ms * (1 + rnd.uniform(-0.05, 0.05))
        out.append(f"step:{step + 1}/{total} train_time:{t:.0f}ms step_avg:{t / (step + 1):.2f}ms")
    out.append("peak memory allocated: 100 MiB reserved: 120 MiB")
    result = dict(track=track, preset=preset, seed=seed, run_id=run_id, val_loss=round(float(f"{val:.4f}"), 6),
                  train_time_ms=round(t, 1), steps=total, num_steps=total, step_avg_ms=round(t / total, 3),
                  tokens_per_step=8192, world_size=world_size, device=device, code_sha256=sha(source),
                  data_sha256=data_sha, peak_memory_mib=100, log=f"logs/{run_id}.txt")
    out.append("RESULT " + json.dumps(result))
    return "\n".join(out) + "\n"


def modded(*, seed: int = 0, trials: int = 1, total: int = 30, val_every: int = 10, final: float = 3.27,
           decimals: int = 4, seconds: bool = False, train_loss: bool = False, train_lines: bool = True,
           reset10: bool = False, leading_sep: bool = False, dataloader: bool = False, extra: bool = False,
           noise: bool = False, kernel_banner: bool = False, torch_line_gpus: bool = False,
           gpus: tuple[int, str] = (8, "H100 80GB HBM3"), peak: str = "allocated", step_ms: float = 100.0) -> str:
    """A modded-nanogpt style log; each flag switches on one of the format variants seen since 2024."""
    code = SOURCE.rstrip("\n").split("\n")
    if kernel_banner:
        code += ["", "-" * 40, "# triton_kernels.py", "-" * 40, ""] + KERNEL.rstrip("\n").split("\n")
    out = ([SEP] if leading_sep else []) + code + [SEP]
    if torch_line_gpus:
        out += [f"Running PyTorch 2.11.0+cu128 compiled for CUDA 12.8 on NVIDIA {gpus[1]} with world_size {gpus[0]}"]
    else:
        out += ["Running Python 3.12.3", "Running PyTorch 2.10.0+cu128 compiled for CUDA 12.8", "Wed Jan  1 00:00:00 2026"]
        out += smi(*gpus) + [""]
    out += [SEP]
    if dataloader:
        out += ["Training dataloader files: ['data/fineweb_train_000001.bin']",
                "Validation dataloader files: ['data/fineweb_val_000000.bin']", SEP]
    out += ["Compiling model and warming up kernels", "Resetting Model"]
    rnd = random.Random(seed)

    def fmt_time(ms):
        return f"{ms / 1000:.3f}s" if seconds else f"{ms:.0f}ms"

    for trial in range(trials):
        t = 0.0
        for step in range(total + 1):
            timed = step - 10 if reset10 else step
            avg = "nan" if (reset10 and timed <= 2) or timed <= 0 else f"{t / timed:.2f}"
            if step == total or step % val_every == 0:
                v = curve(step, total, seed * 100 + trial, final)
                fields = f" val_ema_loss:{v + 0.01:.{decimals}f}" if extra else ""
                out.append(f"step:{step}/{total} val_loss:{v:.{decimals}f}{fields} train_time:{fmt_time(t)} step_avg:{avg}ms")
            if noise and step == 3:
                out += ["tensor([[0.1, 0.2],", "        [0.3, 0.4]])", "bucket 0: 12 params, 4.0 MiB",
                        "/tmp/torchinductor_root/ab/cabcdef.py", "| layer | params |"]
            if step == total:
                break
            if reset10 and step == 10:
                t = 0.0  # the old rule: steps 1–10 include compilation; the clock restarts after step 10
            t += step_ms * (1 + rnd.uniform(-0.05, 0.05)) + (5000.0 if reset10 and step == 0 else 0.0)
            timed = step + 1 - 10 if reset10 else step + 1
            avg = "nan" if reset10 and timed <= 2 else f"{t / timed:.2f}"
            if train_lines:
                tl = f" train_loss:{curve(step + 1, total, seed, final) + 0.05:.4f}" if train_loss else ""
                out.append(f"step:{step + 1}/{total}{tl} train_time:{fmt_time(t)} step_avg:{avg}ms")
    if peak == "allocated":
        out.append("peak memory allocated: 30220 MiB reserved: 39052 MiB")
    elif peak == "consumption":
        out.append("peak memory consumption: 31563 MiB")
    return "\n".join(out) + "\n"


def llmc(*, total: int = 40, val_every: int = 10, final: float = 3.27) -> str:
    out = []
    for step in range(total + 1):
        if step % val_every == 0 or step == total:
            out.append(f"s:{step} tel:{curve(step, total, 0, final):.4f}")
        if step < total:
            out.append(f"s:{step} trl:{curve(step, total, 1, final):.4f} lr:0.000100 norm:1.23")
    return "\n".join(out) + "\n"


_REAL: dict[str, str] = {}


def real_log(corpus: Path, tmp: Path) -> str:
    """The text of a 2-step tiny-cpu run of the real trainer (once per session; ≈10 s)."""
    if "text" not in _REAL:
        cmd = [sys.executable, "train_gpt.py", "--preset", "tiny", "--data-dir", str(corpus), "--log-dir", str(tmp),
               "--run-id", "x", "--max-steps", "2", "--val-every", "1", "--no-compile"]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
        assert p.returncode == 0, p.stderr[-2000:]
        _REAL["text"] = (tmp / "x.txt").read_text(encoding="utf-8")
    return _REAL["text"]
