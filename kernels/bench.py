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
gradient written once. % of peak uses the table below; an unknown device gets no percentage.
Results land in records/_bench/<device>/<date>-<commit>.json with device, versions and commit.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

# Dense peaks (no sparsity): bf16 and fp8 tensor-core TFLOP/s, HBM GB/s. Matched by substring of
# torch.cuda.get_device_name(), first match wins (so "H100 PCIe" before the SXM's "H100").
PEAKS = [
    ("H100 PCIe", dict(bf16=756.0, fp8=1513.0, mem=2039.0)),
    ("H100 NVL", dict(bf16=835.0, fp8=1671.0, mem=3900.0)),
    ("H100", dict(bf16=989.4, fp8=1978.9, mem=3352.0)),  # SXM5 80GB HBM3
    ("H200", dict(bf16=989.4, fp8=1978.9, mem=4800.0)),
    ("A100-SXM4-80GB", dict(bf16=312.0, fp8=None, mem=2039.0)),
    ("A100-SXM4-40GB", dict(bf16=312.0, fp8=None, mem=1555.0)),
    ("L4", dict(bf16=121.0, fp8=242.5, mem=300.0)),
]
KERNELS = ("xxt", "softcap_ce", "fp8_linear", "relu2_linear")
TRITON = {"xxt", "softcap_ce", "relu2_linear"}  # fp8_linear is `_scaled_mm`: it runs on CPU too


def peaks_for(device_name: str) -> dict | None:
    for key, peaks in PEAKS:
        if key in device_name:
            return peaks
    return None


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
    peak: str  # key into PEAKS' dicts
    tol: float  # relative (Frobenius) error allowed against the reference
    outputs: Callable = field(default=lambda out: out)  # → tensor(s) compared in the check


def _rel(a, b) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def _fwd_bwd(op):
    """op(x, w) forward and backward; returns (y, dx, dw) so the check sees all three."""
    def run(x, w, g):
        y = op(x, w)
        dx, dw = torch.autograd.grad(y, (x, w), g)
        return y, dx, dw
    return run


def cases(shapes: str, device: torch.device, names=KERNELS) -> list[Case]:
    """gpt2-small per rank: 48k tokens × 768 wide, MLP 3072, vocab 50,304; Muon's largest Gram
    product is the (768 × 3072) MLP update. small: the tiny preset's shapes."""
    if shapes == "record":
        T, D, H, V, (gm, gk) = 48 * 1024, 768, 3072, 50304, (768, 3072)
    elif shapes == "small":
        T, D, H, V, (gm, gk) = 4096, 128, 512, 128, (128, 512)
    else:
        raise ValueError(f"--shapes must be record or small, got {shapes!r}")
    bf16 = torch.bfloat16
    out = []

    def randn(*s, dtype=bf16, grad=False, scale=1.0):
        t = (scale * torch.randn(*s, device=device)).to(dtype)
        return t.requires_grad_() if grad else t

    if "xxt" in names:
        from kernels import xxt as m
        out.append(Case("xxt", f"X {gm}×{gk} bf16 → {gm}×{gm}", lambda: (randn(gm, gk),),
                        m.xxt, m.xxt_reference, 2.0 * gm * gm * gk, "TFLOP/s", "bf16", 2e-2))
    if "softcap_ce" in names:
        from kernels import softcap_ce as m

        def make_ce():
            return randn(T, V, scale=8.0, grad=True), torch.randint(0, V, (T,), device=device), torch.ones((), device=device)

        def ce(op):
            def run(x, t, g):
                loss = op(x, t, 15.0)
                return loss, torch.autograd.grad(loss, x, g)[0]
            return run
        out.append(Case("softcap_ce", f"logits {T}×{V} bf16, fwd+bwd", make_ce, ce(m.softcap_ce),
                        ce(m.softcap_ce_reference), 3.0 * T * V * 2, "GB/s", "mem", 2e-2))
    if "fp8_linear" in names:
        from kernels import fp8_linear as m

        def make_fp8():
            x, w = randn(T, D, grad=True), randn(V, D, dtype=torch.float32, grad=True, scale=D ** -0.5)
            return x, w, randn(T, V)
        out.append(Case("fp8_linear", f"LM head {T}×{D} · {V}×{D}ᵀ, fwd+bwd", make_fp8, _fwd_bwd(m.fp8_linear),
                        _fwd_bwd(m.fp8_linear_reference), 3 * 2.0 * T * D * V, "TFLOP/s", "fp8", 0.15))
    if "relu2_linear" in names:
        from kernels import relu2_linear as m

        def make_r2():
            return randn(T, D, grad=True), randn(H, D, grad=True, scale=D ** -0.5), randn(T, H)
        out.append(Case("relu2_linear", f"MLP up {T}×{D} · {H}×{D}ᵀ, fwd+bwd", make_r2, _fwd_bwd(m.relu2_linear),
                        _fwd_bwd(m.relu2_linear_reference), 3 * 2.0 * T * D * H, "TFLOP/s", "bf16", 2e-2))
    return out


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def check(case: Case, args) -> float:
    """Worst relative error of the kernel's outputs against the eager reference's."""
    got, want = _as_tuple(case.kernel_fn(*args)), _as_tuple(case.reference(*args))
    return max(_rel(a, b) for a, b in zip(got, want))


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


def _git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


def run(names=KERNELS, shapes: str | None = None, device: torch.device | None = None, compiled: bool = True,
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
        row = dict(kernel=case.kernel, shape=case.shape, unit=case.unit, tol=case.tol, error=None, status="ok", impls={})
        if device.type == "cuda" or case.kernel not in TRITON:
            try:
                row["error"] = check(case, args)
            except Exception as e:  # a kernel that cannot launch here is reported, not fatal to the others
                row["status"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            else:
                if row["error"] > case.tol:
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
                device=info, shapes=shapes, versions=versions(), commit=_git_commit(Path(__file__).resolve().parents[1]),
                results=rows)


def versions() -> dict:
    v = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda)
    try:
        import triton
        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    return v


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80] or "device"


def save(doc: dict, root: Path) -> Path:
    """records/_bench/<device>/<date>-<commit>.json, written atomically."""
    folder = root / "records" / "_bench" / slug(doc["device"]["name"])
    folder.mkdir(parents=True, exist_ok=True)
    stamp = doc["date"].replace(":", "").replace("-", "")[:15]
    path = folder / f"{stamp}-{doc['commit'][:12]}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def compare(new: dict, old: dict, threshold: float) -> tuple[list[dict], bool]:
    """Per (kernel, shape, impl) found in both: new / old median ms. Regressed when a ratio > 1 + threshold."""
    before = {(r["kernel"], r["shape"], i): t["ms"] for r in old.get("results", []) for i, t in r.get("impls", {}).items()}
    out, regressed = [], False
    for r in new["results"]:
        for impl, t in r["impls"].items():
            key = (r["kernel"], r["shape"], impl)
            if key in before:
                ratio = t["ms"] / before[key]
                slower = ratio > 1 + threshold
                regressed |= slower
                out.append(dict(kernel=r["kernel"], shape=r["shape"], impl=impl, old_ms=before[key], new_ms=t["ms"],
                                ratio=ratio, regressed=slower))
    return out, regressed


def load_results(path: str) -> dict:
    from harness.errors import InputError

    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"--compare {path}: no such file")
    except json.JSONDecodeError as e:
        raise InputError(f"--compare {path}: not JSON ({e.msg} at line {e.lineno})")
    if not isinstance(doc, dict) or doc.get("kind") != "speedrun-bench" or not isinstance(doc.get("results"), list):
        raise InputError(f"--compare {path}: not a `speedrun bench` results file")
    return doc


def render(doc: dict, comparison: list[dict] | None = None, console=None):
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    d = doc["device"]
    t = Table(title=f"speedrun bench · {d['name']} · {doc['shapes']} shapes · torch {doc['versions']['torch']}"
                    f" · triton {doc['versions']['triton']}")
    for col in ("kernel", "shape", "check", "impl", "ms (p20–p80)", "throughput", "% peak", "× eager", "× compiled"):
        t.add_column(col, justify="right" if col in ("ms (p20–p80)", "throughput", "% peak", "× eager", "× compiled") else "left")
    for r in doc["results"]:
        check = r["status"] if r["error"] is None else f"{r['status']} ({r['error']:.1e} ≤ {r['tol']:.0e})" \
            if r["status"] == "ok" else f"{r['status']} ({r['error']:.1e} > {r['tol']:.0e})"
        first = True
        for impl, m in r["impls"].items():
            kernel_row = impl == "kernel"
            t.add_row(r["kernel"] if first else "", r["shape"] if first else "", check if first else "", impl,
                      f"{m['ms']:.3f} ({m['p20']:.3f}–{m['p80']:.3f})", f"{m['rate']:.1f} {r['unit']}",
                      f"{m['pct_peak']:.0f} %" if m["pct_peak"] is not None else "–",
                      f"{r['speedup_vs_eager']:.2f}×" if kernel_row and "speedup_vs_eager" in r else "",
                      f"{r['speedup_vs_compiled']:.2f}×" if kernel_row and "speedup_vs_compiled" in r else "")
            first = False
        if not r["impls"]:
            t.add_row(r["kernel"], r["shape"], check, "", "", "", "", "", "")
    console.print(t)
    if comparison is not None:
        c = Table(title="against the earlier results")
        for col in ("kernel", "impl", "before ms", "now ms", "now / before"):
            c.add_column(col)
        for x in comparison:
            c.add_row(x["kernel"], x["impl"], f"{x['old_ms']:.3f}", f"{x['new_ms']:.3f}",
                      f"[red]{x['ratio']:.2f}[/]" if x["regressed"] else f"{x['ratio']:.2f}")
        console.print(c if comparison else "no kernel/shape/impl in common with the earlier file")
