"""fp8_head: the LM head and its softcapped cross-entropy as one op for training, in FP8.

Forward: logits = x Wᵀ through `torch._scaled_mm` on FP8 tensor cores, then the fused softcap cross-entropy
of kernels/softcap_ce.py (no fp32 logits). The scales are static, so no amax pass runs per micro-step:
- x is an RMS-normed row (no weight), so |x_i| ≤ √K: scale √K / 448 (e4m3's largest) bounds it exactly;
- W's bound `w_max` is the caller's (the trainer: the head's initial bound plus the sum of Adam's per-step
  lr over the schedule, each step moving a weight by at most ≈ lr), scale w_max / 448.
Quantizing (scale, clamp, cast) is plain torch outside the custom op, so torch.compile fuses it with its
neighbours; it also writes the transposed copies of x8 and W8 the backward's GEMMs read (37 and 39 MB at the
record shape, written in the same pass).

Backward: the cross-entropy's backward kernel writes the logit gradient straight into e5m2 with a static
scale. |dL/dlogit_v| = g · |softmax(z)_v − [v = target]| · (1 − tanh²(x_v / cap)) ≤ g, where g is the row's
upstream gradient, so scale = max(g) / e5m2's largest finite value bounds every element without looking at
it (max(g) is over the N rows: traced, not N × V). The kernel writes it twice from the same tile: row-major
for dx = g8 · W8, and transposed for dW = g8ᵀ · x8 (`_scaled_mm` wants its first operand row-major: a
transposed copy of the 49k × 50k gradient would read and write 2.5 GB more per micro-batch).

Layouts: `_scaled_mm(a, b)` wants a row-major and b column-major. Under TRITON_INTERPRET=1 (CPU tests) the
kernel writes the scaled gradient in fp32 and torch casts it to e5m2 (the interpreter has no fp8 stores); on
CUDA the cast is the kernel's store.

Tolerances against `fp8_head_reference` (the bf16 matmul, then softcap cross-entropy in fp32), as
relative error (`TOLERANCE`): loss 2e-2 (e4m3 logits), dx and dW 0.15 (e5m2 keeps 2 mantissa bits).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels import fp8_linear, softcap_ce

E4M3, E5M2, E4M3_MAX, E5M2_MAX = fp8_linear.E4M3, fp8_linear.E5M2, fp8_linear.E4M3_MAX, fp8_linear.E5M2_MAX


def fp8_head_reference(x: Tensor, w: Tensor, targets: Tensor, cap: float, reduction: str = "mean",
                       w_max: float | None = None) -> Tensor:
    logits = F.linear(x, w.type_as(x))
    return softcap_ce.softcap_ce_reference(logits, targets, cap, reduction)


def quantize(t: Tensor, scale: Tensor) -> Tensor:
    """t / scale in e4m3, saturating (the scale is a bound, and bf16 rounding can step just past it)."""
    return (t.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)


@torch.library.custom_op("speedrun::fp8_head_fwd", mutates_args=())
def fp8_head_fwd(x: Tensor, w: Tensor, targets: Tensor, cap: float, x8: Tensor, w8: Tensor, xs: Tensor,
                 ws: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row losses, and what the backward needs: logits (x's dtype) and lse. x and w are here for
    autograd (their gradients are this op's); the product reads x8 (N, K) and w8 (V, K), row-major."""
    logits = torch._scaled_mm(x8, w8.t(), scale_a=xs, scale_b=ws, out_dtype=x.dtype)
    loss, lse = softcap_ce.forward(logits, targets, cap)
    return loss, logits, lse


@fp8_head_fwd.register_fake
def _(x, w, targets, cap, x8, w8, xs, ws):
    n, v = x.shape[0], w.shape[0]
    return x.new_empty(n, dtype=torch.float32), x.new_empty(n, v), x.new_empty(n, dtype=torch.float32)


@torch.library.custom_op("speedrun::fp8_head_bwd", mutates_args=())
def fp8_head_bwd(grad: Tensor, logits: Tensor, targets: Tensor, lse: Tensor, x8t: Tensor, w8t: Tensor, xs: Tensor,
                 ws: Tensor, gs: Tensor, inv: Tensor, cap: float, w_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """dx = g8 · W8 and dW = g8ᵀ · x8, g8 written by the CE backward in both layouts; x8t (K, N) and w8t (K, V)
    are the transposed FP8 copies (so .t() is the column-major second operand)."""
    n, v = logits.shape
    if softcap_ce.INTERPRET:  # no fp8 stores in the interpreter: the same values, cast by torch
        g, gt = torch.empty(n, v, device=logits.device), torch.empty(v, n, device=logits.device)
        softcap_ce.grad_into(g, grad, logits, targets, lse, cap, inv, dxt=gt)
        g8, g8t = (a.clamp_(-E5M2_MAX, E5M2_MAX).to(E5M2) for a in (g, gt))
    else:
        g8 = torch.empty(n, v, device=logits.device, dtype=E5M2)
        g8t = torch.empty(v, n, device=logits.device, dtype=E5M2)
        softcap_ce.grad_into(g8, grad, logits, targets, lse, cap, inv, dxt=g8t)
    dx = torch._scaled_mm(g8, w8t.t(), scale_a=gs, scale_b=ws, out_dtype=logits.dtype)
    dw = torch._scaled_mm(g8t, x8t.t(), scale_a=gs, scale_b=xs, out_dtype=w_dtype)
    return dx, dw


@fp8_head_bwd.register_fake
def _(grad, logits, targets, lse, x8t, w8t, xs, ws, gs, inv, cap, w_dtype):
    return logits.new_empty(logits.shape[0], w8t.shape[0]), logits.new_empty(w8t.shape[1], w8t.shape[0], dtype=w_dtype)


def _setup_context(ctx, inputs, output):
    x, w, targets, cap, x8, w8, xs, ws = inputs
    _, logits, lse = output
    ctx.save_for_backward(logits, targets, lse, x8, w8, xs, ws)
    ctx.cap, ctx.w_dtype = cap, w.dtype


def _backward(ctx, grad_loss, *_):
    # traced (not inside a custom op): the transposed FP8 copies and the gradient's scale fuse into the graph
    logits, targets, lse, x8, w8, xs, ws = ctx.saved_tensors
    gmax = grad_loss.float().abs().amax().clamp_min(1e-30)  # over the N rows' upstream gradients
    gs, inv = (gmax / E5M2_MAX).reshape(()), (E5M2_MAX / gmax).reshape(1)
    dx, dw = fp8_head_bwd(grad_loss.contiguous(), logits, targets, lse, x8.t().contiguous(), w8.t().contiguous(), xs, ws, gs, inv,
                          ctx.cap, ctx.w_dtype)
    return dx, dw, None, None, None, None, None, None


fp8_head_fwd.register_autograd(_backward, setup_context=_setup_context)


def fp8_head(x: Tensor, w: Tensor, targets: Tensor, cap: float, reduction: str = "mean",
             w_max: float | None = None) -> Tensor:
    """Softcapped cross-entropy of x (N, K) · w (V, K)ᵀ against targets (N,); K and V multiples of 16; x
    RMS-normed rows; |w| ≤ w_max (static scale; None: w's amax now, for one-off calls)."""
    if x.ndim != 2 or x.shape[1] != w.shape[1] or x.shape[1] % 16 or w.shape[0] % 16:
        raise ValueError(f"fp8_head: x (N, K) and w (V, K) with K, V multiples of 16; got {tuple(x.shape)}, "
                         f"{tuple(w.shape)}")
    xs = torch.full((), x.shape[1] ** 0.5 / E4M3_MAX, device=x.device)
    ws = (torch.full((), w_max, device=w.device) if w_max is not None
          else w.detach().abs().amax().float().clamp_min(1e-30)) / E4M3_MAX
    x = x.contiguous()
    x8, w8 = quantize(x.detach(), xs), quantize(w.detach(), ws)
    loss = fp8_head_fwd(x, w, targets, cap, x8, w8, xs, ws)[0]
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / (targets != softcap_ce.IGNORE_INDEX).sum()
    raise ValueError(f"fp8_head: reduction must be mean, sum or none, got {reduction!r}")


# ---- what it is held to -------------------------------------------------------------------------------
# TOLERANCE: per input dtype, the largest relative error ‖kernel − reference‖ / ‖reference‖ (Frobenius) of
# each output. `example` makes inputs at a shape; `outputs` runs the kernel (or the reference) on them.

_FP8 = {"loss": 2e-2, "dx": 0.15, "dw": 0.15}
TOLERANCE = {torch.bfloat16: _FP8, torch.float32: _FP8}


def example(device, dtype=torch.bfloat16, N: int = 64, K: int = 128, V: int = 320) -> tuple:
    """x (N, K) of RMS-normed scale, fp32 head weights w (V, K), targets with one row ignored; outputs() uses
    the static bound w_max = 1 (≈ 10× these weights' largest, as the trainer's bound is loose too)."""
    x = F.rms_norm(torch.randn(N, K, device=device), (K,)).to(dtype).requires_grad_()
    w = (0.5 * K ** -0.5 * torch.randn(V, K, device=device)).requires_grad_()
    t = torch.randint(0, V, (N,), device=device)
    t[N // 7] = softcap_ce.IGNORE_INDEX
    return x, w, t


def outputs(args: tuple, kernel: bool = True) -> dict[str, Tensor]:
    """The mean loss and both gradients, by the kernel or by the reference."""
    x, w, t = args
    loss = (fp8_head if kernel else fp8_head_reference)(x, w, t, 15.0, w_max=1.0)
    dx, dw = torch.autograd.grad(loss, (x, w))
    return {"loss": loss, "dx": dx, "dw": dw}
