"""fp8_linear: y = x Wᵀ with per-tensor-scaled FP8 operands through `torch._scaled_mm`.

Forward: x and W are each scaled so their largest magnitude lands on e4m3's largest finite value
(448), cast to `float8_e4m3fn`, and multiplied on the FP8 tensor cores (2× bf16's peak on H100)
with the scales applied in the epilogue. Backward: the output gradient is scaled the same way into
`float8_e5m2` (wider range, fewer mantissa bits: gradients need range more than precision), and
both products (dx = g W, dW = gᵀ x) reuse the FP8 copies of x and W saved by the forward.
`_scaled_mm` wants its first operand row-major and its second column-major; the `.t().contiguous().t()`
below are those layout changes, on 1-byte data.

It is a `torch.library` custom op pair (`speedrun::fp8_mm_fwd` / `_bwd`) with an autograd formula
and fake implementations, so `torch.compile(fullgraph=True)` traces it. `_scaled_mm` runs on CUDA
sm89+ and on CPU (which is how CI checks the op); the trainer uses it only on sm89+ CUDA devices.

Tolerances against `fp8_linear_reference` (the bf16 matmul), as relative error (`TOLERANCE`
below), whatever the input dtype: forward 0.08 (e4m3 keeps 3 mantissa bits: ≤ 6.25 % per element,
averaging out over K); dx and dW 0.15 (e5m2 keeps 2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
E4M3_MAX, E5M2_MAX = torch.finfo(E4M3).max, torch.finfo(E5M2).max


def fp8_linear_reference(x: Tensor, w: Tensor) -> Tensor:
    return F.linear(x, w.type_as(x))


def _quantize(t: Tensor, dtype: torch.dtype, fmax: float) -> tuple[Tensor, Tensor]:
    """t ≈ q · scale with q in `dtype`: one fp32 scale for the whole tensor, from its amax."""
    scale = (t.detach().abs().amax().float() / fmax).clamp_min(1e-30)
    return (t.float() / scale).clamp(-fmax, fmax).to(dtype), scale


@torch.library.custom_op("speedrun::fp8_mm_fwd", mutates_args=())
def fp8_mm_fwd(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x (M, K), w (N, K) → (x wᵀ in x's dtype, and what the backward needs: x8, w8, x_scale, w_scale)."""
    x8, xs = _quantize(x, E4M3, E4M3_MAX)
    w8, ws = _quantize(w, E4M3, E4M3_MAX)
    y = torch._scaled_mm(x8, w8.t(), scale_a=xs, scale_b=ws, out_dtype=x.dtype)
    return y, x8, w8, xs, ws


@fp8_mm_fwd.register_fake
def _(x, w):
    return (x.new_empty(x.shape[0], w.shape[0]), torch.empty_like(x, dtype=E4M3), torch.empty_like(w, dtype=E4M3),
            x.new_empty((), dtype=torch.float32), x.new_empty((), dtype=torch.float32))


@torch.library.custom_op("speedrun::fp8_mm_bwd", mutates_args=())
def fp8_mm_bwd(g: Tensor, x8: Tensor, w8: Tensor, xs: Tensor, ws: Tensor,
               x_dtype: torch.dtype, w_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    g8, gs = _quantize(g, E5M2, E5M2_MAX)
    dx = torch._scaled_mm(g8, w8.t().contiguous().t(), scale_a=gs, scale_b=ws, out_dtype=x_dtype)
    dw = torch._scaled_mm(g8.t().contiguous(), x8.t().contiguous().t(), scale_a=gs, scale_b=xs, out_dtype=w_dtype)
    return dx, dw


@fp8_mm_bwd.register_fake
def _(g, x8, w8, xs, ws, x_dtype, w_dtype):
    return g.new_empty(g.shape[0], w8.shape[1], dtype=x_dtype), g.new_empty(w8.shape, dtype=w_dtype)


def _setup_context(ctx, inputs, output):
    x, w = inputs
    _, x8, w8, xs, ws = output
    ctx.save_for_backward(x8, w8, xs, ws)
    ctx.dtypes = (x.dtype, w.dtype)


def _backward(ctx, g, *_):
    x8, w8, xs, ws = ctx.saved_tensors
    dx, dw = fp8_mm_bwd(g.contiguous(), x8, w8, xs, ws, *ctx.dtypes)
    return dx, dw


fp8_mm_fwd.register_autograd(_backward, setup_context=_setup_context)


def fp8_linear(x: Tensor, w: Tensor) -> Tensor:
    """x (..., K) · w (N, K)ᵀ in FP8; the result (..., N) in x's dtype. K and N must be multiples of 16."""
    if x.shape[-1] != w.shape[1] or x.shape[-1] % 16 or w.shape[0] % 16:
        raise ValueError(f"fp8_linear: x (..., K) and w (N, K) with K, N multiples of 16; got {tuple(x.shape)}, {tuple(w.shape)}")
    y = fp8_mm_fwd(x.reshape(-1, x.shape[-1]).contiguous(), w)[0]
    return y.view(*x.shape[:-1], w.shape[0])


# ---- what it is held to -------------------------------------------------------------------------------
# TOLERANCE: per input dtype, the largest relative error ‖kernel − reference‖ / ‖reference‖ (Frobenius) of
# each output. `example` makes inputs at a shape; `outputs` runs the kernel (or the reference) on them.
# The start-up check and timing (kernels/capability.py), `speedrun bench` and the tests all use these.

_FP8 = {"y": 0.08, "dx": 0.15, "dw": 0.15}
TOLERANCE = {torch.bfloat16: _FP8, torch.float32: _FP8}


def example(device, dtype=torch.bfloat16, M: int = 64, K: int = 128, N: int = 80) -> tuple:
    """x (M, K) in `dtype`, fp32 master weights w (N, K), an output gradient."""
    x = torch.randn(M, K, device=device, dtype=dtype, requires_grad=True)
    w = (K ** -0.5 * torch.randn(N, K, device=device)).requires_grad_()
    return x, w, torch.randn(M, N, device=device, dtype=dtype)


def outputs(args: tuple, kernel: bool = True) -> dict[str, Tensor]:
    """y = x wᵀ and both gradients, by the kernel or by the reference."""
    x, w, g = args
    y = (fp8_linear if kernel else fp8_linear_reference)(x, w)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    return {"y": y, "dx": dx, "dw": dw}
