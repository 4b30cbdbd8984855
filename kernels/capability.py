"""Which kernels this device may use: decided once at start-up, each after a launch matched its reference
within the kernel's own TOLERANCE. A kernel that fails to import, launch or match is replaced by the torch
path, said once.

    kernels = select(device, mode="auto", say=print)   # → Kernels(xxt=…, softcap_ce=None, …)

mode "auto": every kernel on CUDA (fp8_linear only on sm89+), none on CPU; "on": try every kernel on
any device (on CPU the Triton ones need TRITON_INTERPRET=1: that is how tests run them); "off": none.
`shapes` gives each kernel's check the shapes the caller will really use (keyword arguments of the
module's `self_check`); without them each module's small default shape is checked.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields

import torch

from kernels import NAMES

MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Kernels:
    xxt: object = None  # each: the kernel's entry point, or None for the torch path
    softcap_ce: object = None
    fp8_linear: object = None
    relu2_linear: object = None

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ (Frobenius, in fp32): the measure every TOLERANCE is stated in."""
    got, want = got.float(), want.float()
    return ((got - want).norm() / want.norm().clamp_min(1e-12)).item()


def errors(mod, device, dtype=torch.bfloat16, **shape) -> dict[str, float]:
    """Each output's relative error in the module's self-check."""
    return {k: rel_error(got, want) for k, (got, want) in mod.self_check(device, dtype, **shape).items()}


def worst(mod, errs: dict[str, float], dtype=torch.bfloat16) -> tuple[str, float, float]:
    """(output, error, tolerance) of the output closest to (or furthest past) its tolerance."""
    tol = mod.TOLERANCE[dtype]
    k = max(errs, key=lambda k: errs[k] / tol[k])
    return k, errs[k], tol[k]


def _wanted(name: str, device: torch.device, mode: str) -> str | None:
    """Why `name` is not even tried here, or None to try it."""
    if mode == "off":
        return "--kernels off"
    if mode == "on":
        return None
    if device.type != "cuda":
        return f"{device.type} (Triton kernels are compiled for CUDA; --kernels on to force)"
    if name == "fp8_linear" and torch.cuda.get_device_capability(device) < (8, 9):
        return f"{torch.cuda.get_device_name(device)} has no FP8 tensor cores (sm89+)"
    return None


def select(device: torch.device, mode: str = "auto", say=print, shapes: dict | None = None) -> Kernels:
    if mode not in MODES:
        raise ValueError(f"kernels: mode must be one of {', '.join(MODES)}, got {mode!r}")
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
            at = " at " + "×".join(f"{k}={v}" for k, v in shape.items()) if shape else ""
            try:
                mod = importlib.import_module(f"kernels.{name}")
                out, err, tol = worst(mod, errors(mod, device, **shape))
            except Exception as e:  # no Triton, no FP8 on this device, a compile error: the torch path
                say(f"kernels: {name} failed its start-up launch{at} ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:160] if str(e) else ''}) → torch reference")
                continue
            if not err <= tol:
                say(f"kernels: {name} differs from its reference{at} ({out}: relative error {err:.2e} > {tol:.0e}) "
                    "→ torch reference")
                continue
            say(f"kernels: {name} on (start-up launch{at} matched its reference: relative error {err:.1e} ≤ {tol:.0e})")
            chosen[name] = getattr(mod, name)
    return Kernels(**chosen)
