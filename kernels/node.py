"""What this node delivers, measured in seconds: the figures `speedrun doctor` judges and every run log
records, so a reviewer can see on what node a time was taken.

    describe(device)                 → versions, GPU names, clocks and memory (nvidia-smi), CPU model and threads
    matmul(device, dtype)            → TFLOP/s of a square matmul, and % of the device's dense peak
    allreduce(size_mb, group=None)   → all-reduce bus bandwidth over the current process group (GB/s)
    allreduce_spawned(world, device) → the same from `world` fresh processes (gloo on CPU, NCCL on CUDA)

Peaks are kernels/peaks.py's table (dense, no sparsity). Bus bandwidth is NCCL's convention:
bytes · 2(n−1)/n / time, comparable across rank counts. Nothing here touches CUDA at import.
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

import torch

from kernels.peaks import peak

BF16_SIDE = {"cuda": 8192, "cpu": 1024}  # square matmul side: long enough to reach steady clocks, short enough


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> dict:
    """Versions, and the accelerator or CPU as the driver reports it."""
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpu": _cpu_name(), "cpu_threads": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    if device.type == "cuda":
        out["gpus"] = gpus() or [{"name": torch.cuda.get_device_name(i)} for i in range(torch.cuda.device_count())]
        out["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return out


def gpus() -> list[dict]:
    """Each GPU's name, current and max SM clock, memory and driver, from nvidia-smi ([] without one)."""
    q = "index,name,clocks.sm,clocks.max.sm,memory.total,driver_version,power.limit,temperature.gpu"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) == 8:
            rows.append({"index": int(f[0]), "name": f[1], "sm_clock_mhz": _num(f[2]), "max_sm_clock_mhz": _num(f[3]),
                         "memory_mib": _num(f[4]), "driver": f[5], "power_limit_w": _num(f[6]), "temp_c": _num(f[7])})
    return rows


def _num(s: str):
    try:
        return float(s)
    except ValueError:
        return None


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul(device: torch.device, dtype: str = "bf16", side: int | None = None, seconds: float = 1.0) -> dict:
    """TFLOP/s of `side`³ matmuls in bf16 (or fp8 through `_scaled_mm`), median over ≈ `seconds`."""
    n = side or BF16_SIDE[device.type]
    a = torch.randn(n, n, device=device).to(torch.bfloat16)
    b = torch.randn(n, n, device=device).to(torch.bfloat16)
    if dtype == "fp8":
        a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().t().to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        fn = (lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    else:
        fn = (lambda: a @ b)
    fn()
    _sync(device)
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]
    tflops = 2 * n ** 3 / t / 1e12
    pk = peak(device, dtype)
    return {"dtype": dtype, "side": n, "ms": 1000 * t, "tflops": tflops, "peak_tflops": pk,
            "pct_peak": None if pk is None else 100 * tflops / pk}


def allreduce(size_mb: float, device: torch.device, iters: int = 10) -> dict:
    """Bus bandwidth of an all-reduce of `size_mb` MB of bf16 over the initialised process group."""
    import torch.distributed as dist

    world = dist.get_world_size()
    x = torch.ones(int(size_mb * 2 ** 20 // 2), device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    nbytes = x.numel() * x.element_size()
    dist.all_reduce(x)
    _sync(device)
    times = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]
    return {"ranks": world, "bytes": nbytes, "ms": 1000 * t,
            "busbw_gbps": nbytes * 2 * (world - 1) / world / t / 1e9 if world > 1 else None,
            "backend": dist.get_backend()}


def _worker(rank: int, world: int, init: str, device_type: str, size_mb: float, out: str) -> None:
    import json

    import torch.distributed as dist

    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method=init, rank=rank, world_size=world)
    try:
        r = allreduce(size_mb, device)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(r, f)
    finally:
        dist.destroy_process_group()


def allreduce_spawned(world: int, device_type: str, size_mb: float) -> dict:
    """The all-reduce figure from `world` fresh processes on this node (one per GPU, or gloo on CPU)."""
    import json

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        mp.spawn(_worker, args=(world, f"tcp://127.0.0.1:{port}", device_type, size_mb, out), nprocs=world, join=True)
        with open(out) as f:
            return json.load(f)


if __name__ == "__main__":  # `python -m kernels.node`: the figures as JSON
    import json

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps({"node": describe(dev), "matmul_bf16": matmul(dev)}, indent=2), file=sys.stdout)
