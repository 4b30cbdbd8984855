"""Which kernels this device may use, decided once at start-up. A kernel earns its place by two tests,
both at the shapes the caller will really run: its outputs match the reference within the kernel's own
TOLERANCE, and (when timing is asked for: `--kernels auto` on CUDA) it is not slower than the torch path
it replaces (the reference under torch.compile, as the compiled trainer would run it), fwd + bwd, over a
few iterations. In a multi-rank run only rank 0 decides (the trainer broadcasts its choice: `adopt`). Otherwise the torch path is used, said in one line.

    kernels = select(device, mode="auto", say=print, shapes={...}, timed=True)

mode "auto": every kernel on CUDA (fp8_head only on sm89+), none on CPU; "on": try every kernel on any
device without timing (on CPU the Triton ones need TRITON_INTERPRET=1: that is how tests run them);
"off": none. `shapes` maps a kernel to keyword arguments of its module's `example`; without them each
module's small default shape is used.
"""
from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass, fields

import torch

from kernels import NAMES

MODES = ("auto", "on", "off")
FP8 = ("fp8_head",)


@dataclass(frozen=True)
class Kernels:
    xxt: object = None  # each: the kernel's entry point, or None for the torch path
    softcap_ce: object = None
    fp8_head: object = None
    relu2_linear: object = None

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ (Frobenius, in fp32): the measure every TOLERANCE is stated in."""
    got, want = got.float(), want.float()
    return ((got - want).norm() / want.norm().clamp_min(1e-12)).item()


def errors(mod, device, dtype=torch.bfloat16, **shape) -> dict[str, float]:
    """Each output's relative error, kernel against reference, on the module's example inputs at `shape`."""
    args = mod.example(device, dtype, **shape)
    got, want = mod.outputs(args, kernel=True), mod.outputs(args, kernel=False)
    return {k: rel_error(got[k], want[k]) for k in got}


def worst(mod, errs: dict[str, float], dtype=torch.bfloat16) -> tuple[str, float, float]:
    """(output, error, tolerance) of the output closest to (or furthest past) its tolerance."""
    tol = mod.TOLERANCE[dtype]
    k = max(errs, key=lambda k: errs[k] / tol[k])
    return k, errs[k], tol[k]


@contextlib.contextmanager
def compiled_reference(mod):
    """The module's `<op>_reference` replaced by its torch.compile'd self while inside: the torch path a kernel
    replaces in a compiled trainer is Inductor's fusion of the reference, not eager torch."""
    name = f"{mod.__name__.rsplit('.', 1)[-1]}_reference"
    eager = getattr(mod, name)
    setattr(mod, name, torch.compile(eager, dynamic=False, fullgraph=True))
    try:
        yield
    finally:
        setattr(mod, name, eager)


def timings(mod, device, iters: int = 5, **shape) -> tuple[float, float]:
    """(kernel ms, compiled torch ms): median of `iters` fwd + bwd calls each after one warm-up (which also
    compiles the reference), on the same inputs."""
    args = mod.example(device, **shape)
    out = []
    for kernel in (True, False):
        with contextlib.nullcontext() if kernel else compiled_reference(mod):
            mod.outputs(args, kernel)
            times = []
            for _ in range(iters):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                mod.outputs(args, kernel)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(1000 * (time.perf_counter() - t0))
        out.append(sorted(times)[len(times) // 2])
    del args  # record-shape inputs (GBs for the head): the caller empties the allocator's cache after the race
    return out[0], out[1]


def adopt(names: list[str]) -> Kernels:
    """The kernels another rank chose (rank 0 decides for all: a race per rank could pick differently, and
    the log shows rank 0's lines)."""
    return Kernels(**{n: getattr(importlib.import_module(f"kernels.{n}"), n) for n in names})


def _wanted(name: str, device: torch.device, mode: str) -> str | None:
    """Why `name` is not even tried here, or None to try it."""
    if mode == "off":
        return "--kernels off"
    if mode == "on":
        return None
    if device.type != "cuda":
        return f"{device.type} (Triton kernels are compiled for CUDA; --kernels on to force)"
    if name in FP8 and torch.cuda.get_device_capability(device) < (8, 9):
        return f"{torch.cuda.get_device_name(device)} has no FP8 tensor cores (sm89+)"
    return None


def select(device: torch.device, mode: str = "auto", say=print, shapes: dict | None = None,
           timed: bool | None = None) -> Kernels:
    """The kernels that earned their place. `timed` (default: auto mode on CUDA) also races each one
    against the torch path at `shapes` and keeps it only when it is not slower."""
    if mode not in MODES:
        raise ValueError(f"kernels: mode must be one of {', '.join(MODES)}, got {mode!r}")
    timed = (mode == "auto" and device.type == "cuda") if timed is None else timed
    skipped = {name: _wanted(name, device, mode) for name in NAMES}
    if len(set(skipped.values())) == 1 and None not in skipped.values():  # one reason for all: one line
        say(f"kernels: none ({skipped['xxt']}) → torch reference for {', '.join(NAMES)}")
        return Kernels()
    chosen = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        for name in NAMES:
            why = skipped[name]
            if why is not None:
                say(f"kernels: {name} off ({why}) → torch reference")
                continue
            shape = (shapes or {}).get(name, {})
            at = " at " + " ".join(f"{k}={v}" for k, v in shape.items()) if shape else ""
            try:
                mod = importlib.import_module(f"kernels.{name}")
                out, err, tol = worst(mod, errors(mod, device, **shape))
                if err <= tol and timed:
                    k_ms, t_ms = timings(mod, device, **shape)
            except Exception as e:  # no Triton, no FP8 on this device, a compile error, out of memory: torch
                say(f"kernels: {name} failed its start-up launch{at} ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:160] if str(e) else ''}) → torch reference")
                continue
            if not err <= tol:
                say(f"kernels: {name} differs from its reference{at} ({out}: relative error {err:.2e} > {tol:.0e}) "
                    "→ torch reference")
                continue
            if timed and k_ms > t_ms:
                say(f"kernels: {name} matched{at} (error {err:.1e}) but is slower: {k_ms:.3f} ms vs compiled torch "
                    f"{t_ms:.3f} ms fwd+bwd → torch reference")
                continue
            race = f"; {k_ms:.3f} ms vs compiled torch {t_ms:.3f} ms fwd+bwd" if timed else ""
            say(f"kernels: {name} on (start-up launch{at} matched its reference: relative error {err:.1e} ≤ {tol:.0e}"
                f"{race})")
            chosen[name] = getattr(mod, name)
    return Kernels(**chosen)
