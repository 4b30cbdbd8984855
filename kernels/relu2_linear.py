"""relu2_linear: y = relu(x Wᵀ)², the MLP up-projection with its activation fused into the matmul.

Unfused, the (tokens × 4·dim) pre-activation makes an extra round trip through memory in the forward
(matmul writes it, the activation reads it and writes y) and another in the backward (read g and
the pre-activation, write dpre, then two matmuls read dpre). Here:
- forward: one matmul whose epilogue writes both y = relu(acc)² and the pre-activation (the backward
  needs it);
- backward: dpre = 2 · g · relu(pre) is never stored: it is computed in the prologue of both
  gradient matmuls, dx = dpre W and dW = dpreᵀ x, while their tiles are loaded.
One Triton matmul serves all three (prologue and epilogue are compile-time switches; operand layouts
are strides, so dpreᵀ is read in place).

Layout: x (..., K), W (N, K) in x's dtype (the caller casts fp32 master weights, as `F.linear` does).
Accumulation in fp32.

Tolerances against `relu2_linear_reference`, as relative error (`TOLERANCE` below): fp32 1e-4 (the
interpreter and IEEE fp32 dots); bf16 2e-2 (the outputs' own rounding, 2⁻⁸, on values squared).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def relu2_linear_reference(x: Tensor, w: Tensor) -> Tensor:
    return F.relu(F.linear(x, w)).square()


@triton.jit
def _mm_kernel(A, AUX, B, C, CAUX, M, N, K,
               sam, sak, sbk, sbn, scm, scn,
               PROLOGUE: tl.constexpr, EPILOGUE: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """C = op(A) @ B. PROLOGUE: op(A) = 2 · A · relu(AUX) (AUX laid out like A). EPILOGUE: CAUX = acc and
    C = relu(acc)² (CAUX laid out like C); otherwise C = acc."""
    pid = tl.program_id(0)
    grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    # grouped order: GROUP_M row-blocks share their B tiles in L2
    group = pid // (GROUP_M * grid_n)
    first_m = group * GROUP_M
    size_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * grid_n)) % size_m
    pid_n = (pid % (GROUP_M * grid_n)) // size_m

    # int64 offsets: rows × row stride passes 2³¹ for long enough inputs (or strided views)
    rm = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K).to(tl.int64)  # k strides can be large too (a transposed view)
    a_off = rm[:, None] * sam + rk[None, :] * sak
    b_off = rk[:, None] * sbk + rn[None, :] * sbn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        kk = k * BLOCK_K + rk
        amask = (rm[:, None] < M) & (kk[None, :] < K)
        a = tl.load(A + a_off, mask=amask, other=0.0)
        b = tl.load(B + b_off, mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        if PROLOGUE:
            pre = tl.load(AUX + a_off, mask=amask, other=0.0).to(tl.float32)
            a = (2.0 * a.to(tl.float32) * tl.maximum(pre, 0.0)).to(b.dtype)
        if UPCAST:  # the interpreter has no bf16 arithmetic
            a, b = a.to(tl.float32), b.to(tl.float32)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        a_off += BLOCK_K * sak
        b_off += BLOCK_K * sbk
    c_off = rm[:, None] * scm + rn[None, :] * scn
    cmask = (rm[:, None] < M) & (rn[None, :] < N)
    if EPILOGUE:
        tl.store(CAUX + c_off, acc.to(CAUX.dtype.element_ty), mask=cmask)
        r = tl.maximum(acc, 0.0)
        acc = r * r
    tl.store(C + c_off, acc.to(C.dtype.element_ty), mask=cmask)


_CONFIGS = [
    triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8), num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 64, 4, 4),
                             (64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (64, 64, 64, 4, 3)]
]
# Configs ptxas spills at the record shape, per target (`speedrun bench --compile-only`, Triton 3.9):
# (BLOCK_M, BLOCK_N, num_warps, PROLOGUE). The autotuner never tries them there: a spill is a slow config,
# and a config the autotuner can pick must not be one.
_SPILLED = {90: {(128, 128, 4, False), (128, 128, 4, True)}, 80: {(128, 128, 4, True), (64, 128, 4, True), (128, 64, 4, True)}}


def _prune(configs, nargs, **kw):
    arch = triton.runtime.driver.active.get_current_target().arch
    bad = _SPILLED.get(arch, set())
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, bool(kw["PROLOGUE"])) not in bad]


_mm_tuned = _mm_kernel if INTERPRET else triton.autotune(_CONFIGS, key=["M", "N", "K", "PROLOGUE", "EPILOGUE"],
                                                         prune_configs_by={"early_config_prune": _prune})(_mm_kernel)


def _mm(a: Tensor, b: Tensor, out_dtype: torch.dtype, aux: Tensor | None = None, epilogue: bool = False):
    """op(a) @ b for (M, K) @ (K, N) views of any strides; aux: the prologue's pre-activation, like a."""
    (M, K), N = a.shape, b.shape[1]
    c = torch.empty(M, N, device=a.device, dtype=out_dtype)
    caux = torch.empty_like(c) if epilogue else c
    if aux is not None and aux.stride() != a.stride():
        raise ValueError("relu2_linear: the pre-activation must be laid out like the gradient")
    kw = dict(PROLOGUE=aux is not None, EPILOGUE=epilogue,
              UPCAST=INTERPRET and a.dtype != torch.float32, IEEE=a.dtype == torch.float32)
    args = (a, aux if aux is not None else a, b, c, caux, M, N, K, *a.stride(), *b.stride(), *c.stride())
    if INTERPRET:
        _mm_kernel[(triton.cdiv(M, 32) * triton.cdiv(N, 32),)](*args, **kw, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4)
    else:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
        _mm_tuned[grid](*args, **kw)
    return (c, caux) if epilogue else c


@torch.library.custom_op("speedrun::relu2_linear_fwd", mutates_args=())
def relu2_linear_fwd(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """x (M, K), w (N, K) → (relu(x wᵀ)², x wᵀ)."""
    return _mm(x, w.t(), x.dtype, epilogue=True)


@relu2_linear_fwd.register_fake
def _(x, w):
    y = x.new_empty(x.shape[0], w.shape[0])
    return y, torch.empty_like(y)


@torch.library.custom_op("speedrun::relu2_linear_bwd", mutates_args=())
def relu2_linear_bwd(g: Tensor, pre: Tensor, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    g = g.contiguous()
    dx = _mm(g, w, x.dtype, aux=pre)  # (M, N) @ (N, K)
    dw = _mm(g.t(), x, w.dtype, aux=pre.t())  # (N, M) @ (M, K): dpreᵀ read through strides
    return dx, dw


@relu2_linear_bwd.register_fake
def _(g, pre, x, w):
    return torch.empty_like(x), torch.empty_like(w)


def _setup_context(ctx, inputs, output):
    x, w = inputs
    ctx.save_for_backward(x, w, output[1])


def _backward(ctx, g, _):
    x, w, pre = ctx.saved_tensors
    return relu2_linear_bwd(g, pre, x, w)


relu2_linear_fwd.register_autograd(_backward, setup_context=_setup_context)


def relu2_linear(x: Tensor, w: Tensor) -> Tensor:
    """relu(x wᵀ)² for x (..., K), w (N, K) of x's dtype."""
    if x.shape[-1] != w.shape[1] or x.dtype != w.dtype:
        raise ValueError(f"relu2_linear: x (..., K) and w (N, K) of one dtype; got {tuple(x.shape)} {x.dtype}, "
                         f"{tuple(w.shape)} {w.dtype}")
    y, _ = relu2_linear_fwd(x.reshape(-1, x.shape[-1]).contiguous(), w.contiguous())
    return y.view(*x.shape[:-1], w.shape[0])


# ---- what it is held to -------------------------------------------------------------------------------
# TOLERANCE: per input dtype, the largest relative error ‖kernel − reference‖ / ‖reference‖ (Frobenius) of
# each output. `example` makes inputs at a shape; `outputs` runs the kernel (or the reference) on them.
# The start-up check and timing (kernels/capability.py), `speedrun bench` and the tests all use these.

TOLERANCE = {torch.bfloat16: {"y": 2e-2, "dx": 2e-2, "dw": 2e-2}, torch.float32: {"y": 1e-4, "dx": 1e-4, "dw": 1e-4}}


def example(device, dtype=torch.bfloat16, M: int = 70, K: int = 96, N: int = 160) -> tuple:
    """x (M, K), w (N, K), both in `dtype`, and an output gradient."""
    x = torch.randn(M, K, device=device, dtype=dtype, requires_grad=True)
    w = (K ** -0.5 * torch.randn(N, K, device=device)).to(dtype).requires_grad_()
    return x, w, torch.randn(M, N, device=device, dtype=dtype)


def outputs(args: tuple, kernel: bool = True) -> dict[str, Tensor]:
    """relu(x wᵀ)² and both gradients, by the kernel or by the reference."""
    x, w, g = args
    y = (relu2_linear if kernel else relu2_linear_reference)(x, w)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    return {"y": y, "dx": dx, "dw": dw}
