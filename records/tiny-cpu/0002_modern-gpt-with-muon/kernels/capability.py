"""Which kernels this device may use: decided once at start-up, each after a tiny launch matched its
reference. A kernel that fails to import, launch or match is replaced by the torch path, said once.

    kernels = select(device, mode="auto", say=print)   # → Kernels(xxt=…, softcap_ce=None, …)

mode "auto": every kernel on CUDA (fp8_linear only on sm89+), none on CPU; "on": try every kernel on
any device (on CPU the Triton ones need TRITON_INTERPRET=1: that is how tests run them); "off": none.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields

import torch

MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Kernels:
    xxt: object = None  # each: the kernel's entry point, or None for the torch path
    softcap_ce: object = None
    fp8_linear: object = None
    relu2_linear: object = None

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def _check_xxt(mod, device):
    X = torch.randn(96, 160, device=device, dtype=torch.bfloat16)
    A = mod.xxt_reference(X)
    return max(_rel(mod.xxt(X), A), _rel(mod.xxt(A, 0.5, A, -1.0), mod.xxt_reference(A, 0.5, A, -1.0))), 2e-2


def _check_softcap_ce(mod, device):
    x = (8 * torch.randn(24, 300, device=device)).to(torch.bfloat16).requires_grad_()
    t = torch.randint(0, 300, (24,), device=device)
    t[5] = mod.IGNORE_INDEX
    loss = mod.softcap_ce(x, t, 15.0)
    ref = mod.softcap_ce_reference(x, t, 15.0)
    g, = torch.autograd.grad(loss, x)
    gr, = torch.autograd.grad(ref, x)
    return max(abs(loss.item() - ref.item()) / abs(ref.item()), _rel(g, gr)), 2e-2


def _check_fp8_linear(mod, device):
    x = torch.randn(64, 128, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = (0.1 * torch.randn(80, 128, device=device)).requires_grad_()
    y, yr = mod.fp8_linear(x, w), mod.fp8_linear_reference(x, w)
    g = torch.randn_like(yr)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    dxr, dwr = torch.autograd.grad(yr, (x, w), g)
    return max(_rel(y, yr), _rel(dx, dxr), _rel(dw, dwr)), 0.15


def _check_relu2_linear(mod, device):
    x = torch.randn(70, 96, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = (0.1 * torch.randn(160, 96, device=device)).to(torch.bfloat16).requires_grad_()
    y, yr = mod.relu2_linear(x, w), mod.relu2_linear_reference(x, w)
    g = torch.randn_like(yr)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    dxr, dwr = torch.autograd.grad(yr, (x, w), g)
    return max(_rel(y, yr), _rel(dx, dxr), _rel(dw, dwr)), 2e-2


CHECKS = {"xxt": _check_xxt, "softcap_ce": _check_softcap_ce, "fp8_linear": _check_fp8_linear,
          "relu2_linear": _check_relu2_linear}


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


def select(device: torch.device, mode: str = "auto", say=print) -> Kernels:
    if mode not in MODES:
        raise ValueError(f"kernels: mode must be one of {', '.join(MODES)}, got {mode!r}")
    skipped = {name: _wanted(name, device, mode) for name in CHECKS}
    if len(set(skipped.values())) == 1 and None not in skipped.values():  # one reason for all: one line
        say(f"kernels: none ({skipped['xxt']}) → torch reference for {', '.join(CHECKS)}")
        return Kernels()
    chosen = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        for name, check in CHECKS.items():
            why = skipped[name]
            if why is not None:
                say(f"kernels: {name} off ({why}) → torch reference")
                continue
            try:
                mod = importlib.import_module(f"kernels.{name}")
                err, tol = check(mod, device)
            except Exception as e:  # no Triton, no FP8 on this device, a compile error: the torch path
                say(f"kernels: {name} failed its start-up launch ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
                    " → torch reference")
                continue
            if not err <= tol:
                say(f"kernels: {name} differs from its reference (relative error {err:.2e} > {tol:.0e}) → torch reference")
                continue
            say(f"kernels: {name} on (start-up launch matched its reference: relative error {err:.1e})")
            chosen[name] = getattr(mod, name)
    return Kernels(**chosen)
