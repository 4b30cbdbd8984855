"""xxt: C = alpha · X Xᵀ (+ beta · Y), computing only the blocks on and above the diagonal.

The Gram products of Muon's Newton–Schulz / Polar Express iteration are symmetric:
A = X Xᵀ, and A·A = A Aᵀ because A is symmetric. A plain matmul computes every output block; this
kernel computes the (i ≤ j) blocks and writes each one twice (C[i, j] and its transpose into
C[j, i]), so it does ≈ half the FLOPs: for the (768 × 3072) updates of gpt2-small that is most of
the iteration's work. The optional epilogue `alpha · X Xᵀ + beta · Y` folds the iteration's
`B = b·A + c·A·A` into the second product instead of a separate elementwise pass.

Layout: X is (..., M, K) with any strides; Y (if given) is (..., M, M). C is a new contiguous
(..., M, M) in X's dtype. Accumulation is in fp32.

Tolerances against `xxt_reference` (which also accumulates in fp32 on the device's matmul), as
relative error (`TOLERANCE` below): fp32 inputs 1e-4; bf16 inputs 2e-2 (the output's own rounding,
2⁻⁸ relative, dominates).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def xxt_reference(X: Tensor, alpha: float = 1.0, Y: Tensor | None = None, beta: float = 0.0) -> Tensor:
    C = alpha * (X.float() @ X.float().mT)
    if Y is not None:
        C = C + beta * Y.float()
    return C.to(X.dtype)


@triton.jit
def _xxt_kernel(X, Y, C, M, K,
                sxb, sxm, sxk, syb, sym, syn, scb, scm, scn,
                alpha, beta,
                HAS_Y: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m, pid_n, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if pid_m > pid_n:  # below the diagonal: the mirror of (pid_n, pid_m), written by that program
        return
    # int64 offsets: a batch of Gram products (or a strided view) can place elements past 2³¹
    pid_m, pid_n, b = pid_m.to(tl.int64), pid_n.to(tl.int64), b.to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K).to(tl.int64)  # k strides can be large too (a transposed view)
    X += b * sxb
    a_ptr = X + rm[:, None] * sxm + rk[None, :] * sxk
    b_ptr = X + rn[None, :] * sxm + rk[:, None] * sxk  # Xᵀ's block, read straight from X
    acc = tl.zeros((BLOCK_M, BLOCK_M), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        kmask = rk + k * BLOCK_K < K
        a = tl.load(a_ptr, mask=(rm[:, None] < M) & kmask[None, :], other=0.0)
        bt = tl.load(b_ptr, mask=(rn[None, :] < M) & kmask[:, None], other=0.0)
        if UPCAST:  # the interpreter has no bf16 arithmetic
            a, bt = a.to(tl.float32), bt.to(tl.float32)
        if IEEE:
            acc = tl.dot(a, bt, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, bt, acc)
        a_ptr += BLOCK_K * sxk
        b_ptr += BLOCK_K * sxk
    acc = acc * alpha
    mask = (rm[:, None] < M) & (rn[None, :] < M)
    if HAS_Y:
        y = tl.load(Y + b * syb + rm[:, None] * sym + rn[None, :] * syn, mask=mask, other=0.0)
        acc += beta * y.to(tl.float32)
    out = acc.to(C.dtype.element_ty)
    C += b * scb
    # A diagonal block's own dot need not be exactly symmetric (the accumulation order differs per
    # element): its upper triangle is written twice, once mirrored, so C is symmetric bit for bit.
    upper = rm[:, None] <= rn[None, :]
    tl.store(C + rm[:, None] * scm + rn[None, :] * scn, out, mask=mask & upper)
    tl.store(C + rn[None, :] * scm + rm[:, None] * scn, out, mask=mask & (rm[:, None] < rn[None, :]))


def _block_sizes(M: int, K: int) -> tuple[int, int, int, int]:
    if INTERPRET:  # few, small programs: the interpreter runs each one in numpy
        return 32, 32, 1, 1
    if M <= 256:
        return 64, 64, 4, 3
    return 128, 64, 8, 3


def xxt(X: Tensor, alpha: float = 1.0, Y: Tensor | None = None, beta: float = 0.0) -> Tensor:
    """alpha · X Xᵀ + beta · Y over the last two dims, Y symmetric (M, M) like the result."""
    if X.ndim < 2:
        raise ValueError(f"xxt: X must be (..., M, K), got shape {tuple(X.shape)}")
    *batch, M, K = X.shape
    X3 = X.reshape(-1, M, K)
    C = torch.empty(X3.size(0), M, M, device=X.device, dtype=X.dtype)
    if Y is not None:
        if Y.shape[-2:] != (M, M):
            raise ValueError(f"xxt: Y must be (..., {M}, {M}), got {tuple(Y.shape)}")
        Y3 = Y.reshape(-1, M, M).expand(X3.size(0), M, M)
    else:
        Y3 = C  # unread
    BM, BK, warps, stages = _block_sizes(M, K)
    grid = (triton.cdiv(M, BM), triton.cdiv(M, BM), X3.size(0))
    _xxt_kernel[grid](
        X3, Y3, C, M, K, *X3.stride(), *Y3.stride(), *C.stride(), float(alpha), float(beta),
        HAS_Y=Y is not None, UPCAST=INTERPRET and X.dtype != torch.float32, IEEE=X.dtype == torch.float32,
        BLOCK_M=BM, BLOCK_K=BK, num_warps=warps, num_stages=stages)
    return C.view(*batch, M, M)


# ---- what it is held to -------------------------------------------------------------------------------
# TOLERANCE: per input dtype, the largest relative error ‖kernel − reference‖ / ‖reference‖ (Frobenius) of
# each output. `example` makes inputs at a shape; `outputs` runs the kernel (or the reference) on them.
# The start-up check and timing (kernels/capability.py), `speedrun bench` and the tests all use these.

TOLERANCE = {torch.bfloat16: {"C": 2e-2, "B": 2e-2}, torch.float32: {"C": 1e-4, "B": 1e-4}}


def example(device, dtype=torch.bfloat16, M: int = 96, K: int = 160) -> tuple:
    """Inputs at a shape: X (M, K), and A = X Xᵀ / K for the Polar Express epilogue."""
    X = torch.randn(M, K, device=device, dtype=dtype)
    return X, xxt_reference(X) / K


def outputs(args: tuple, kernel: bool = True) -> dict[str, Tensor]:
    """C = X Xᵀ and B = 0.5·A·A − A, by the kernel or by the reference."""
    X, A = args
    f = xxt if kernel else xxt_reference
    return {"C": f(X), "B": f(A, 0.5, A, -1.0)}
