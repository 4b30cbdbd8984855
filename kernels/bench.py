"""`speedrun bench`: each kernel checked against its reference, then timed beside the eager and the
`torch.compile`d reference, at the gpt2-small record's shapes (per rank) or small ones.

    speedrun bench                          # every kernel; record shapes on CUDA, small ones on CPU
    speedrun bench xxt softcap_ce --shapes record --json out.json
    speedrun bench --compare records/_bench/nvidia-h100-80gb-hbm3/<earlier>.json   # exit 1 if slower

Order matters: a kernel whose output is off its reference by more than its stated tolerance is not
timed (its row says WRONG and the exit code is 1). Timings: on CUDA `triton.testing.do_bench` (it
flushes L2 before every repetition), median and the 20–80 % spread; on CPU a wall-clock loop, same
statistics. The Triton kernels run on CPU only in Triton's interpreter, whose timings mean nothing:
there the bench times what does run (the references, and `_scaled_mm` for fp8_linear) and says so.

Throughput: matmuls count 2·M·N·K per product (fwd + bwd = 3 products), so `xxt` is credited with
the full X Xᵀ although it computes half of it: its TFLOP/s is "effective", comparable across
implementations. softcap_ce is memory-bound: GB/s counts its logits read twice (fwd, bwd) and the
gradient written once. % of peak uses kernels/peaks.py's table; an unknown device gets no percentage.
This module needs only torch (and triton on CUDA); `speedrun bench` (harness/bench.py) stores the
results under records/_bench/<device>/, compares them with earlier ones and renders them.
"""
from __future__ import annotations

import datetime as dt
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from kernels import ALL
from kernels.peaks import peaks_for

TRITON = {"xxt", "softcap_ce", "fp8_head", "relu2_linear"}  # fp8_linear is `_scaled_mm` alone: it runs on CPU too


@dataclass
class Case:
    """One kernel at one shape: inputs, the three implementations, and how to count its work."""
    kernel: str
    shape: str
    make: Callable[[], tuple]  # → args for every implementation
    kernel_fn: Callable
    reference: Callable
    work: float  # FLOPs or bytes per call
    unit: str  # "TFLOP/s" or "GB/s"
    peak: str  # key into kernels/peaks.py's dicts
    module: object  # the kernel's module: its example/outputs and TOLERANCE decide whether it is timed
    check_shape: dict  # keyword arguments of the module's example at this case's shape


def cases(shapes: str, device: torch.device, names=ALL) -> list[Case]:
    """gpt2-small per rank: 48k tokens × 768 wide, MLP 3072, vocab 50,304; Muon's largest Gram
    product is the (768 × 3072) MLP update. small: the tiny preset's shapes. Inputs and the fwd + bwd
    of kernel and reference are each module's own `example` and `outputs`."""
    import importlib

    if shapes == "record":
        T, D, H, V, (gm, gk) = 48 * 1024, 768, 3072, 50304, (768, 3072)
    elif shapes == "small":
        T, D, H, V, (gm, gk) = 4096, 128, 512, 128, (128, 512)
    else:
        raise ValueError(f"--shapes must be record or small, got {shapes!r}")
    table = {  # label, keyword shape of `example`, work per call, unit, peak key
        "xxt": (f"X {gm}×{gk} bf16 → {gm}×{gm} (+ the Polar Express epilogue)", dict(M=gm, K=gk),
                2 * 2.0 * gm * gm * gk, "TFLOP/s", "bf16"),
        "softcap_ce": (f"logits {T}×{V} bf16, fwd+bwd", dict(N=T, V=V), 3.0 * T * V * 2, "GB/s", "mem"),
        "fp8_linear": (f"LM head {T}×{D} · {V}×{D}ᵀ, fwd+bwd", dict(M=T, K=D, N=V), 3 * 2.0 * T * D * V, "TFLOP/s", "fp8"),
        "fp8_head": (f"LM head + softcap CE {T}×{D} · {V}×{D}ᵀ, fwd+bwd", dict(N=T, K=D, V=V), 3 * 2.0 * T * D * V,
                     "TFLOP/s", "fp8"),
        "relu2_linear": (f"MLP up {T}×{D} · {H}×{D}ᵀ, fwd+bwd", dict(M=T, K=D, N=H), 3 * 2.0 * T * D * H, "TFLOP/s", "bf16"),
    }
    out = []
    for name in names:
        m = importlib.import_module(f"kernels.{name}")
        label, shape, work, unit, peak = table[name]
        out.append(Case(name, label, lambda m=m, shape=shape: m.example(device, **shape),
                        lambda *a, m=m: tuple(m.outputs(a, True).values()),
                        lambda *a, m=m: tuple(m.outputs(a, False).values()), work, unit, peak, m, shape))
    return out


def check(case: Case, device: torch.device) -> tuple[dict[str, float], float, float]:
    """Each output's relative error in the module's self-check at the case's shape, and the worst
    output's error and tolerance (TOLERANCE of the kernel's own module, bf16 inputs)."""
    from kernels.capability import errors, worst

    errs = errors(case.module, device, **case.check_shape)
    _, err, tol = worst(case.module, errs)
    return errs, err, tol


def time_fn(fn: Callable, device: torch.device) -> tuple[float, float, float]:
    """(median, p20, p80) milliseconds per call."""
    if device.type == "cuda":
        import triton.testing

        p20, p50, p80 = triton.testing.do_bench(fn, quantiles=[0.2, 0.5, 0.8])
        return p50, p20, p80
    fn()  # warm-up: first-call allocations, compilation
    times, start = [], time.perf_counter()
    while len(times) < 3 or (len(times) < 50 and time.perf_counter() - start < 1.0):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else times * 9
    return statistics.median(times), q[1], q[7]


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
        return dict(type="cuda", name=name, capability=cap, peaks=peaks_for(name))
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(type="cpu", name=f"{cpu} ({torch.get_num_threads()} threads)", capability=None, peaks=None)


def run(names=ALL, shapes: str | None = None, device: torch.device | None = None, compiled: bool = True,
        say=print) -> dict:
    """Check, then time, every case; returns the results document (what is saved as JSON)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = shapes or ("record" if device.type == "cuda" else "small")
    info = device_info(device)
    if device.type != "cuda":
        say("Triton kernels are timed only on a CUDA GPU (on CPU they run in Triton's interpreter, whose "
            "timings mean nothing): timing the torch references, and fp8_linear's _scaled_mm, which runs here.")
    torch.manual_seed(0)
    rows = []
    for case in cases(shapes, device, names):
        say(f"bench {case.kernel}: {case.shape}")
        args = case.make()
        impls = {"eager": case.reference}
        if compiled:
            impls["compiled"] = torch.compile(case.reference, dynamic=False)
        row = dict(kernel=case.kernel, shape=case.shape, unit=case.unit, tol=None, error=None, errors=None,
                   status="ok", impls={})
        if device.type == "cuda" or case.kernel not in TRITON:
            try:
                row["errors"], row["error"], row["tol"] = check(case, device)
            except Exception as e:  # a kernel that cannot launch here is reported, not fatal to the others
                row["status"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            else:
                if row["error"] > row["tol"]:
                    row["status"] = "WRONG"
                else:
                    impls = {"kernel": case.kernel_fn, **impls}
        else:
            row["status"] = "needs a GPU"
        for impl, fn in impls.items():
            ms, p20, p80 = time_fn(lambda: fn(*args), device)
            rate = case.work / (ms * 1e-3) / (1e12 if case.unit == "TFLOP/s" else 1e9)
            peak = (info["peaks"] or {}).get(case.peak)
            row["impls"][impl] = dict(ms=ms, p20=p20, p80=p80, rate=rate,
                                      pct_peak=100 * rate / peak if peak else None)
        k = row["impls"].get("kernel")
        for ref in ("eager", "compiled"):
            if k and ref in row["impls"]:
                row[f"speedup_vs_{ref}"] = row["impls"][ref]["ms"] / k["ms"]
        rows.append(row)
    return dict(kind="speedrun-bench", version=1, date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                device=info, shapes=shapes, versions=versions(), results=rows)


def versions() -> dict:
    v = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda)
    try:
        import triton
        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    return v
