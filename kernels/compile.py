"""Every Triton kernel compiled for a GPU target on a machine without one (`speedrun bench --compile-only`).

Triton's real compiler (its MLIR passes, LLVM and the wheel's own ptxas) runs anywhere; only loading and
launching need a GPU. A stand-in for Triton's active driver answers the three questions a compile asks
(target, device, stream), and `JITFunction.warmup` compiles without launching, specialising arguments as a
launch does. The launches themselves are the trainer's own: each kernel's entry point runs on meta tensors
at the record's per-rank shapes while its `kernel[grid](...)` is captured, so the arguments, strides and
constexprs compiled are exactly the ones a run passes (an autotuned kernel: every config it may pick).

Per compile: ok, registers, spill bytes (ptxas -v), shared memory, whether the PTX uses wgmma (Hopper
tensor cores) or TMA (cp.async.bulk.tensor). `ok` is False on a compile error or a spill: every config here
is one the trainer can select.

    report = compile_all("sm_90")     # {"arch", "triton", "ptxas", "results": [...], "ok"}

Needs Triton and TRITON_INTERPRET unset (the interpreter replaces `triton.jit`'s compiler); torch only for
meta tensors. Nothing here touches CUDA.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import time

import torch

ARCHS = {"sm_80": 80, "sm_90": 90, "sm_100": 100}
# gpt2-small per rank (48k tokens × 768, MLP 3072, vocab 50,304; Muon's groups on 8 ranks: 6 of 768×768, 3 of
# 768×3072) and the tiny preset, as `kernels/bench.py` and `train_gpt.kernel_shapes` state them.
SHAPES = {"record": dict(T=48 * 1024, D=768, H=3072, V=50304, muon=((6, 768, 768), (3, 768, 3072))),
          "small": dict(T=4096, D=64, H=256, V=128, muon=((8, 64, 64), (4, 64, 256)))}


class StandInDriver:
    """Triton's active driver, as far as compiling asks: the target, device 0, stream 0. Loading a binary or
    launching through it fails, which is the point: nothing runs."""

    def __init__(self, capability: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


class _Capture:
    """Stands in for a module's `kernel` (a JITFunction or an Autotuner): `kernel[grid](*args, **kw)` records
    the launch instead of making it."""

    def __init__(self, kernel, label: str, sink: list):
        self.kernel, self.label, self.sink = kernel, label, sink

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.sink.append((self.label, self.kernel, args, kw))
        return launch


@contextlib.contextmanager
def _captured(module, names: dict, sink: list):
    saved = {n: getattr(module, n) for n in names}
    try:
        for n, label in names.items():
            setattr(module, n, _Capture(saved[n], label, sink))
        yield
    finally:
        for n, k in saved.items():
            setattr(module, n, k)


def launches(shapes: str = "record") -> list[tuple]:
    """(kernel, label, jit function or autotuner, args, constexprs) of every launch the trainer makes at
    `shapes`, captured from the entry points run on meta tensors."""
    from kernels import fp8_linear, relu2_linear, softcap_ce, xxt

    s, meta, bf16 = SHAPES[shapes], torch.device("meta"), torch.bfloat16
    T, D, H, V = s["T"], s["D"], s["H"], s["V"]
    out: list = []
    sink: list = []
    with _captured(xxt, {"_xxt_kernel": "xxt"}, sink):
        for k, m, n in s["muon"]:  # Polar Express: A = X Xᵀ, then B = b·A + c·A·A (the epilogue)
            X = torch.empty(k, m, n, device=meta, dtype=bf16)
            A = xxt.xxt(X)
            xxt.xxt(A, 2.0, A, -1.0)
    names = [f"X {k}×{m}×{n}: {what}" for k, m, n in s["muon"] for what in ("A = X Xᵀ", "B = b·A + c·A·A")]
    out += [("xxt", n, *rest) for n, (_, *rest) in zip(names, sink)]

    sink = []
    with _captured(softcap_ce, {"_fwd_kernel": "fwd", "_bwd_kernel": "bwd"}, sink):
        x = torch.empty(T, V, device=meta, dtype=bf16)
        t = torch.empty(T, device=meta, dtype=torch.int64)
        loss, lse = softcap_ce.forward(x, t, 15.0)
        g = torch.empty(T, device=meta)
        softcap_ce.grad_into(torch.empty(T, V, device=meta, dtype=bf16), g, x, t, lse, 15.0)
        softcap_ce.grad_into(torch.empty(T, V, device=meta, dtype=fp8_linear.E5M2), g, x, t, lse, 15.0,
                             torch.empty(1, device=meta), dxt=torch.empty(V, T, device=meta, dtype=fp8_linear.E5M2))
        # ↑ fp8_head's backward: the e5m2 store with its scale, row-major and transposed
    names = [f"logits {T}×{V} bf16: forward", f"logits {T}×{V}: backward → bf16",
             f"logits {T}×{V}: backward → e5m2 + its transpose (fp8_head)"]
    out += [("softcap_ce", n, *rest) for n, (_, *rest) in zip(names, sink)]

    sink = []
    with _captured(relu2_linear, {"_mm_tuned": "mm"}, sink):
        x = torch.empty(T, D, device=meta, dtype=bf16)
        w = torch.empty(H, D, device=meta, dtype=bf16)
        y, pre = relu2_linear._mm(x, w.t(), bf16, epilogue=True)
        g = torch.empty(T, H, device=meta, dtype=bf16)
        relu2_linear._mm(g, w, bf16, aux=pre)
        relu2_linear._mm(g.t(), x, bf16, aux=pre.t())
    names = [f"MLP up {T}×{D}·{H}×{D}ᵀ: forward", f"{T}×{H}: dx", f"{T}×{H}: dW (dpreᵀ strided)"]
    out += [("relu2_linear", n, *rest) for n, (_, *rest) in zip(names, sink)]
    return out


def _configs(fn, args, kw: dict) -> list[tuple[str, object, dict]]:
    """(config label, JITFunction, constexprs and options) for a plain launch, or for each config of an
    Autotuner (its own pruning applied: what it can pick)."""
    from triton.runtime.autotuner import Autotuner

    if not isinstance(fn, Autotuner):
        consts = {k: v for k, v in kw.items() if k.isupper()}
        label = " ".join(f"{k}={v}" for k, v in consts.items() if k.startswith("BLOCK") or k == "ROWS")
        return [(f"{label} warps={kw.get('num_warps', 4)}", fn, kw)]
    configs = fn.early_config_prune(fn.configs, dict(zip(fn.arg_names, args)), **kw) if fn.early_config_prune \
        else fn.configs
    out = []
    for c in configs:
        allk = {**kw, **c.all_kwargs()}
        out.append((f"{c.kwargs.get('BLOCK_M')}×{c.kwargs.get('BLOCK_N')}×{c.kwargs.get('BLOCK_K')} "
                    f"warps={c.num_warps} stages={c.num_stages}", fn.fn, allk))
    return out


_PTXAS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads.*?Used (\d+) registers", re.S)


def _compile_one(fn, args, kw, seen: dict) -> dict:
    from triton.runtime.jit import MockTensor

    # Tensors become dtype stand-ins (data_ptr 0: 16-byte aligned, as a CUDA allocation is); ints stay ints,
    # so divisibility specialisation matches a launch's.
    margs = [MockTensor(a.dtype, list(a.shape)) if isinstance(a, torch.Tensor) else a for a in args]
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):  # ptxas -v output (knobs.nvidia.dump_ptxas_log) lands here
        k = fn.warmup(*margs, grid=(1,), **kw)
    if k.metadata.hash in seen:  # the same specialisation as an earlier launch: Triton reuses that binary
        was = seen[k.metadata.hash]
        return {k: v for k, v in was.items() if k not in ("kernel", "launch", "config")} | dict(
            seconds=0.0, same_binary_as=was["launch"])
    row = dict(seconds=round(time.perf_counter() - t0, 2), shared_bytes=int(k.metadata.shared),
               num_warps=k.metadata.num_warps, num_stages=k.metadata.num_stages)
    m = _PTXAS.search(log.getvalue())
    if not m:
        raise RuntimeError(f"no ptxas -v figures in the compile log: {log.getvalue()[-300:]!r}")
    row.update(spill_store_bytes=int(m[1]), spill_load_bytes=int(m[2]), registers=int(m[3]))
    ptx = k.asm["ptx"]
    row.update(wgmma="wgmma" in ptx, tma="cp.async.bulk.tensor" in ptx, mma="mma.sync" in ptx or "wgmma" in ptx)
    row["hash"] = k.metadata.hash
    return row


def compile_all(arch: str = "sm_90", shapes: str = "record", names=None, say=lambda _: None) -> dict:
    """Compile every launch of `launches(shapes)` for `arch`; one result row per kernel, launch and config."""
    if arch not in ARCHS:
        raise ValueError(f"--arch {arch}: one of {', '.join(ARCHS)}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        if "triton" in sys.modules or any(m.startswith("kernels.") and m != "kernels.compile" for m in sys.modules):
            raise RuntimeError("TRITON_INTERPRET=1 is set and Triton or the kernels were imported under it: compile-only "
                               "needs a process without it (unset TRITON_INTERPRET)")
        os.environ.pop("TRITON_INTERPRET")  # before any kernel module is imported: triton.jit compiles for real
    import triton
    from triton import knobs
    from triton.backends.nvidia.compiler import get_ptxas, get_ptxas_version
    from triton.runtime import driver

    cap = ARCHS[arch]
    rows, seen = [], {}
    saved = (knobs.cache.dir, knobs.nvidia.dump_ptxas_log, driver._active)
    with tempfile.TemporaryDirectory(prefix="speedrun-compile-") as cache:
        # A private cache: a cache hit would skip ptxas, and with it the register and spill figures.
        knobs.cache.dir, knobs.nvidia.dump_ptxas_log = cache, True
        driver.set_active(StandInDriver(cap))
        try:
            for kernel, launch, fn, args, kw in launches(shapes):
                if names and kernel not in names:
                    continue
                for config, jit, ckw in _configs(fn, args, kw):
                    row = dict(kernel=kernel, launch=launch, config=config)
                    try:
                        row.update(_compile_one(jit, args, ckw, seen))
                        seen.setdefault(row["hash"], row)
                    except Exception as e:  # noqa: BLE001  (a failed compile is a finding; the others go on)
                        row.update(ok=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e) else ''}")
                    else:
                        spills = row["spill_store_bytes"] + row["spill_load_bytes"]
                        row["ok"] = spills == 0
                        if spills:
                            row["error"] = f"spills {row['spill_store_bytes']} B stores, {row['spill_load_bytes']} B loads"
                    say(f"{arch} {kernel} {launch} [{config}]: " + (
                        f"{row['registers']} regs, {row['shared_bytes'] // 1024} KiB shared" if "registers" in row else "")
                        + ("" if row["ok"] else f" — {row['error']}"))
                    rows.append(row)
        finally:
            knobs.cache.dir, knobs.nvidia.dump_ptxas_log, driver._active = saved  # no GPU: no default to reset to
    ptxas = get_ptxas(cap)
    return dict(kind="speedrun-compile", arch=arch, shapes=shapes, triton=triton.__version__,
                ptxas=_release(get_ptxas_version(cap)), ptxas_path=str(ptxas.path),
                torch=torch.__version__, ok=bool(rows) and all(r["ok"] for r in rows), results=rows)


def _release(version_text: str) -> str:
    """'release 13.4, V13.4.59' out of `ptxas --version`: the CUDA release that sets the minimum driver."""
    m = re.search(r"release [\d.]+, V[\d.]+", version_text)
    return m[0] if m else version_text.strip().splitlines()[-1]
