"""softcap_ce: cross-entropy of softcapped logits, z = cap · tanh(x / cap), fused forward and backward.

The plain path upcasts the (tokens × vocab) bf16 logits to fp32, softcaps them, and lets
cross-entropy save its own fp32 softmax: for gpt2-small's 48k tokens × 50,304 per rank that is
≈ 10 GB of fp32 traffic per step. Here one program streams over a block of rows of x (bf16 or fp32,
as the LM head produced them), keeps an online max / sum-of-exp in registers, and writes one fp32
loss and one log-sum-exp per row. The backward re-reads x and writes the gradient of x directly:
    dL/dx_v = g · (softmax(z)_v − [v = target]) · (1 − tanh²(x_v / cap)).
Nothing of size tokens × vocab is ever materialised in fp32.

Rows whose target is `ignore_index` (-100, the validation padding) get loss 0 and gradient 0;
`reduction="mean"` divides by the number of other rows, as `F.cross_entropy` does.

Tolerances against `softcap_ce_reference` (fp32 math throughout), as relative error (`TOLERANCE`
below): fp32 logits: loss and gradient 1e-5; bf16 logits: loss 1e-5 (both read the same bf16 values
and compute in fp32), gradient 1e-2 (the gradient is stored in bf16).

`softcap_ce` is a `torch.library` custom op pair (`speedrun::softcap_ce_fwd` / `_bwd`) with a
fake implementation, so `torch.compile(fullgraph=True)` traces through it.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
IGNORE_INDEX = -100
IGNORE = tl.constexpr(IGNORE_INDEX)  # the kernels' name for it


def softcap_ce_reference(x: Tensor, targets: Tensor, cap: float, reduction: str = "mean") -> Tensor:
    z = cap * torch.tanh(x.float() / cap)
    return F.cross_entropy(z, targets, ignore_index=IGNORE_INDEX, reduction=reduction)


@triton.jit
def _tanh(y):
    # tanh from exp (the interpreter has no libdevice): 1 − 2 / (e^{2y} + 1), exact at ±inf
    return 1.0 - 2.0 / (tl.exp(2.0 * y) + 1.0)


@triton.jit
def _fwd_kernel(X, T, LOSS, LSE, N, V, sxn, cap,
                ROWS: tl.constexpr, BLOCK_V: tl.constexpr):
    # int64: at 49,152 rows × 50,304 columns an element offset passes 2³¹ from row 42,692 on
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    rmask = rows < N
    tgt = tl.load(T + rows, mask=rmask, other=IGNORE)
    m = tl.full((ROWS,), float("-inf"), tl.float32)
    s = tl.zeros((ROWS,), tl.float32)
    zt = tl.zeros((ROWS,), tl.float32)
    cols = tl.arange(0, BLOCK_V)
    for v0 in range(0, V, BLOCK_V):
        c = v0 + cols
        mask = rmask[:, None] & (c[None, :] < V)
        x = tl.load(X + rows[:, None] * sxn + c[None, :], mask=mask, other=0.0).to(tl.float32)
        z = cap * _tanh(x / cap)
        z = tl.where(mask, z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows past N: no NaN from inf − inf
        s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(z - m_safe[:, None]), axis=1)
        m = m_new
        zt += tl.sum(tl.where(c[None, :] == tgt[:, None], z, 0.0), axis=1)
    lse = m + tl.log(tl.where(rmask, s, 1.0))  # rows past N: no log(0)
    valid = rmask & (tgt != IGNORE)
    tl.store(LOSS + rows, tl.where(valid, lse - zt, 0.0), mask=rmask)
    tl.store(LSE + rows, lse, mask=rmask)


@triton.jit
def _bwd_kernel(X, T, LSE, G, DX, DXT, INV_SCALE, N, V, sxn, sdn, stn, cap,
                ROWS: tl.constexpr, BLOCK_V: tl.constexpr, TRANSPOSED: tl.constexpr):
    """DX = dL/dx · INV_SCALE (a 1-element tensor: 1, or the FP8 head's 1/scale), cast to DX's dtype; with
    TRANSPOSED also DXT = DXᵀ (V, N), written from the same tile (the FP8 head's dW reads it row-major)."""
    # int64: at 49,152 rows × 50,304 columns an element offset passes 2³¹ from row 42,692 on
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    rmask = rows < N
    tgt = tl.load(T + rows, mask=rmask, other=IGNORE)
    lse = tl.load(LSE + rows, mask=rmask, other=0.0)
    g = tl.load(G + rows, mask=rmask, other=0.0)
    g = tl.where(tgt != IGNORE, g, 0.0) * tl.load(INV_SCALE)
    cols = tl.arange(0, BLOCK_V)
    for v0 in range(0, V, BLOCK_V):
        c = v0 + cols
        mask = rmask[:, None] & (c[None, :] < V)
        x = tl.load(X + rows[:, None] * sxn + c[None, :], mask=mask, other=0.0).to(tl.float32)
        t = _tanh(x / cap)
        p = tl.exp(cap * t - lse[:, None])
        p = p - tl.where(c[None, :] == tgt[:, None], 1.0, 0.0)
        dx = (g[:, None] * p * (1.0 - t * t)).to(DX.dtype.element_ty)
        tl.store(DX + rows[:, None] * sdn + c[None, :], dx, mask=mask)
        if TRANSPOSED:
            tl.store(DXT + c[None, :].to(tl.int64) * stn + rows[:, None], dx, mask=mask)


def _launch_shape(V: int, transposed: bool = False) -> tuple[int, int, int]:
    if INTERPRET:
        return 16, min(256, triton.next_power_of_2(V)), 1
    if transposed:  # 32 rows a tile: each column of the transposed store is 32 contiguous bytes (a sector)
        return 32, min(256, triton.next_power_of_2(V)), 8
    return 1, min(4096, triton.next_power_of_2(V)), 8  # one row per program: 50,304 columns in 13 blocks


def _check(x: Tensor, targets: Tensor):
    if x.ndim != 2 or targets.shape != x.shape[:1]:
        raise ValueError(f"softcap_ce: want logits (N, V) and targets (N,), got {tuple(x.shape)} and {tuple(targets.shape)}")


@torch.library.custom_op("speedrun::softcap_ce_fwd", mutates_args=())
def softcap_ce_fwd(x: Tensor, targets: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    """Per-row losses and log-sum-exps (fp32)."""
    return forward(x, targets, cap)


def forward(x: Tensor, targets: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    """The op's body, a plain function: `kernels/compile.py` calls it on meta tensors to see the launch."""
    _check(x, targets)
    x = x if x.stride(-1) == 1 else x.contiguous()
    N, V = x.shape
    loss = torch.empty(N, device=x.device, dtype=torch.float32)
    lse = torch.empty(N, device=x.device, dtype=torch.float32)
    rows, block_v, warps = _launch_shape(V)
    _fwd_kernel[(triton.cdiv(N, rows),)](x, targets, loss, lse, N, V, x.stride(0), float(cap),
                                         ROWS=rows, BLOCK_V=block_v, num_warps=warps)
    return loss, lse


@softcap_ce_fwd.register_fake
def _(x, targets, cap):
    return x.new_empty(x.shape[0], dtype=torch.float32), x.new_empty(x.shape[0], dtype=torch.float32)


def grad_into(dx: Tensor, grad: Tensor, x: Tensor, targets: Tensor, lse: Tensor, cap: float,
              inv_scale: Tensor | None = None, dxt: Tensor | None = None) -> Tensor:
    """Write dL/dx (· inv_scale, a 1-element fp32 tensor) into `dx` (N, V): x's dtype, or float8_e5m2 for
    the FP8 head, whose cast then happens in the kernel's store (fused; no second pass over dx); and, given
    `dxt` (V, N) of dx's dtype, its transpose too (no transposed copy afterwards)."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    N, V = x.shape
    if inv_scale is None:
        inv_scale = torch.ones(1, device=x.device, dtype=torch.float32)
    rows, block_v, warps = _launch_shape(V, dxt is not None)
    grad = grad if grad.is_contiguous() else grad.contiguous()  # (N,): a mean's gradient is an expanded scalar
    _bwd_kernel[(triton.cdiv(N, rows),)](x, targets, lse, grad, dx, dx if dxt is None else dxt, inv_scale,
                                         N, V, x.stride(0), dx.stride(0), 0 if dxt is None else dxt.stride(0),
                                         float(cap), ROWS=rows, BLOCK_V=block_v, num_warps=warps,
                                         TRANSPOSED=dxt is not None)
    return dx


@torch.library.custom_op("speedrun::softcap_ce_bwd", mutates_args=())
def softcap_ce_bwd(grad: Tensor, x: Tensor, targets: Tensor, lse: Tensor, cap: float) -> Tensor:
    return grad_into(torch.empty(x.shape, device=x.device, dtype=x.dtype), grad, x, targets, lse, cap)


@softcap_ce_bwd.register_fake
def _(grad, x, targets, lse, cap):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, targets, cap = inputs
    ctx.save_for_backward(x, targets, output[1])
    ctx.cap = cap


def _backward(ctx, grad_loss, grad_lse):
    x, targets, lse = ctx.saved_tensors
    return softcap_ce_bwd(grad_loss, x, targets, lse, ctx.cap), None, None


softcap_ce_fwd.register_autograd(_backward, setup_context=_setup_context)


def softcap_ce(x: Tensor, targets: Tensor, cap: float, reduction: str = "mean") -> Tensor:
    """Cross-entropy of cap · tanh(x / cap) against targets; x (N, V) in bf16 or fp32, never upcast whole."""
    loss, _ = softcap_ce_fwd(x, targets, cap)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / (targets != IGNORE_INDEX).sum()
    raise ValueError(f"softcap_ce: reduction must be mean, sum or none, got {reduction!r}")


# ---- what it is held to -------------------------------------------------------------------------------
# TOLERANCE: per input dtype, the largest relative error ‖kernel − reference‖ / ‖reference‖ (Frobenius) of
# each output. `example` makes inputs at a shape; `outputs` runs the kernel (or the reference) on them.
# The start-up check and timing (kernels/capability.py), `speedrun bench` and the tests all use these.

TOLERANCE = {torch.bfloat16: {"loss": 1e-5, "dx": 1e-2}, torch.float32: {"loss": 1e-5, "dx": 1e-5}}


def example(device, dtype=torch.bfloat16, N: int = 24, V: int = 300) -> tuple:
    """Logits (N, V) of scale 8 and targets, one row ignored."""
    x = (8 * torch.randn(N, V, device=device)).to(dtype).requires_grad_()
    t = torch.randint(0, V, (N,), device=device)
    t[N // 5] = IGNORE_INDEX
    return x, t


def outputs(args: tuple, kernel: bool = True) -> dict[str, Tensor]:
    """The mean loss and its gradient, by the kernel or by the reference."""
    x, t = args
    loss = (softcap_ce if kernel else softcap_ce_reference)(x, t, 15.0)
    return {"loss": loss, "dx": torch.autograd.grad(loss, x)[0]}
