"""Kernels against their plain-torch references: on CPU under Triton's interpreter (conftest sets
TRITON_INTERPRET=1 without a GPU), compiled for real on CUDA (`gpu` tests). Tolerances are each
module's own TOLERANCE (relative error per output and input dtype), as the start-up check and bench use them."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_gpt as tg
from kernels import capability, fp8_linear, relu2_linear, softcap_ce, xxt

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
DEV = torch.device("cuda" if CUDA else "cpu")


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


BF16, FP32 = torch.bfloat16, torch.float32


# ---- xxt ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(40, 70), (3, 33, 50), (2, 2, 17, 9)], ids=["2d", "batched", "4d"])
def test_xxt_fp32_matches_the_product(shape):
    """X Xᵀ from the upper blocks mirrored equals the full product, for odd sizes and batch dims."""
    X = torch.randn(shape, device=DEV)
    C, R = xxt.xxt(X), xxt.xxt_reference(X)
    assert C.shape == R.shape
    assert rel(C, R) <= xxt.TOLERANCE[FP32]["C"]
    assert torch.equal(C, C.mT)  # mirrored blocks: exactly symmetric


def test_xxt_reads_strided_inputs_and_fuses_the_polar_express_epilogue():
    """A transposed view needs no copy, and alpha·A·A + beta·A (A symmetric) is one call."""
    X = torch.randn(50, 30, device=DEV)
    assert rel(xxt.xxt(X.mT), X.mT @ X) <= xxt.TOLERANCE[FP32]["C"]
    A = xxt.xxt_reference(torch.randn(37, 45, device=DEV)) / 45
    assert rel(xxt.xxt(A, -2.77, A, 3.89), 3.89 * A + -2.77 * (A @ A)) <= xxt.TOLERANCE[FP32]["B"]


def test_xxt_bf16_within_output_rounding():
    """bf16 in and out: errors are the output's own rounding."""
    X = torch.randn(64, 96, device=DEV).bfloat16()
    assert rel(xxt.xxt(X), xxt.xxt_reference(X)) <= xxt.TOLERANCE[BF16]["C"]


def test_orthogonalize_with_xxt_equals_the_plain_iteration():
    """Muon's Polar Express with the kernel gives the torch path's result (fp32, so only rounding differs)."""
    G = torch.randn(2, 48, 80, device=DEV)
    plain = tg.orthogonalize(G, dtype=FP32)
    assert rel(tg.orthogonalize(G, dtype=FP32, xxt=xxt.xxt), plain) < 1e-4
    assert rel(tg.orthogonalize(G.mT, dtype=FP32, xxt=xxt.xxt), plain.mT) < 1e-4  # the tall case iterates on the transpose


# ---- softcap_ce --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [FP32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softcap_ce_forward_and_backward(dtype, reduction):
    """Loss and gradient of the fused kernel equal softcap → fp32 cross-entropy, ignored rows included."""
    torch.manual_seed(0)
    x = (20 * torch.randn(37, 300, device=DEV)).to(dtype).requires_grad_()
    t = torch.randint(0, 300, (37,), device=DEV)
    t[[3, 36]] = -100
    got, want = softcap_ce.softcap_ce(x, t, 15.0, reduction), softcap_ce.softcap_ce_reference(x, t, 15.0, reduction)
    tol = softcap_ce.TOLERANCE[dtype]
    assert rel(got, want) <= tol["loss"]
    w = torch.randn_like(want)
    g, = torch.autograd.grad(got, x, w)
    gr, = torch.autograd.grad(want, x, w)
    assert g.dtype == x.dtype and g[3].abs().max() == 0 and g[36].abs().max() == 0
    assert rel(g, gr) <= tol["dx"]


def test_softcap_ce_survives_extreme_logits():
    """±1e4 logits saturate the cap: finite loss and gradient, no inf − inf anywhere."""
    x = torch.tensor([[1e4, -1e4, 0.0, 5.0], [-1e4, -1e4, -1e4, -1e4]], device=DEV, requires_grad=True)
    t = torch.tensor([1, 2], device=DEV)
    loss = softcap_ce.softcap_ce(x, t, 15.0)
    g, = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    assert loss.item() == pytest.approx(softcap_ce.softcap_ce_reference(x, t, 15.0).item(), abs=1e-5)


def test_softcap_ce_under_compile_fullgraph():
    """The custom op traces: torch.compile(fullgraph=True) gives the eager loss and gradient."""
    x = torch.randn(8, 50, device=DEV, requires_grad=True)
    t = torch.randint(0, 50, (8,), device=DEV)
    f = torch.compile(lambda x, t: softcap_ce.softcap_ce(x, t, 15.0), fullgraph=True)
    loss = f(x, t)
    g, = torch.autograd.grad(loss, x)
    gr, = torch.autograd.grad(softcap_ce.softcap_ce_reference(x, t, 15.0), x)
    assert rel(g, gr) <= softcap_ce.TOLERANCE[FP32]["dx"]


# ---- fp8_linear (torch._scaled_mm: runs on CPU) -------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fp8_linear_eager_within_fp8_rounding(dtype):
    """e4m3 forward and e5m2 backward stay within the module's TOLERANCE, with gradients in the inputs'
    dtypes (fp32 master weights get fp32 gradients)."""
    torch.manual_seed(0)
    x = torch.randn(4, 32, 64).to(dtype).requires_grad_()
    w = (0.1 * torch.randn(48, 64)).requires_grad_()
    y, yr = fp8_linear.fp8_linear(x, w), fp8_linear.fp8_linear_reference(x, w)
    g = torch.randn_like(yr)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    dxr, dwr = torch.autograd.grad(yr, (x, w), g)
    assert y.dtype == dtype and dx.dtype == dtype and dw.dtype == torch.float32
    tol = fp8_linear.TOLERANCE[dtype]
    assert rel(y, yr) <= tol["y"] and rel(dx, dxr) <= tol["dx"] and rel(dw, dwr) <= tol["dw"]


def test_fp8_linear_under_compile_fullgraph_matches_eager():
    """The custom op with its fake implementation traces under fullgraph and computes what eager does."""
    torch.manual_seed(0)
    x = torch.randn(32, 64, requires_grad=True)
    w = torch.randn(48, 64, requires_grad=True)
    f = torch.compile(fp8_linear.fp8_linear, fullgraph=True)
    y = f(x, w)
    dx, dw = torch.autograd.grad(y.sum(), (x, w))
    ye = fp8_linear.fp8_linear(x, w)
    dxe, dwe = torch.autograd.grad(ye.sum(), (x, w))
    assert torch.allclose(y, ye) and torch.allclose(dx, dxe) and torch.allclose(dw, dwe)


def test_fp8_linear_zero_weights_and_bad_shapes():
    """The zero-initialised LM head quantizes to zeros (no 0/0); K or N not a multiple of 16 is refused."""
    x = torch.randn(16, 32, requires_grad=True)
    w = torch.zeros(64, 32, requires_grad=True)
    y = fp8_linear.fp8_linear(x, w)
    y.sum().backward()
    assert torch.equal(y, torch.zeros_like(y)) and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of 16"):
        fp8_linear.fp8_linear(torch.randn(4, 30), torch.randn(16, 30))


# ---- relu2_linear ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [FP32, BF16], ids=["fp32", "bf16"])
def test_relu2_linear_forward_and_backward(dtype):
    """The fused epilogue (forward) and prologue (both gradient matmuls) match relu(x Wᵀ)² and autograd."""
    torch.manual_seed(0)
    x = torch.randn(3, 21, 40, device=DEV).to(dtype).requires_grad_()
    w = (0.2 * torch.randn(72, 40, device=DEV)).to(dtype).requires_grad_()
    y, yr = relu2_linear.relu2_linear(x, w), relu2_linear.relu2_linear_reference(x, w)
    g = torch.randn_like(yr)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    dxr, dwr = torch.autograd.grad(yr, (x, w), g)
    tol = relu2_linear.TOLERANCE[dtype]
    assert rel(y, yr) <= tol["y"] and rel(dx, dxr) <= tol["dx"] and rel(dw, dwr) <= tol["dw"]


def test_relu2_linear_under_compile_fullgraph():
    """Traced through its fake implementation, the op computes the eager values."""
    torch.manual_seed(0)
    x = torch.randn(32, 64, device=DEV, requires_grad=True)
    w = torch.randn(48, 64, device=DEV, requires_grad=True)
    y = torch.compile(relu2_linear.relu2_linear, fullgraph=True)(x, w)
    tol = relu2_linear.TOLERANCE[FP32]
    assert rel(y, relu2_linear.relu2_linear_reference(x, w)) <= tol["y"]
    dx, = torch.autograd.grad(y.sum(), x)
    dxr, = torch.autograd.grad(relu2_linear.relu2_linear_reference(x, w).sum(), x)
    assert rel(dx, dxr) <= tol["dx"]


# ---- offsets past 2³¹ ---------------------------------------------------------------------------------

FAR = 2 ** 30 + 7  # row stride: row 2 starts past element 2³¹


def far_rows(values: torch.Tensor, stride: int = FAR) -> torch.Tensor:
    """`values` as a (rows, cols) view whose row r starts at element r·stride of one big allocation, 2³¹
    elements in. Only the rows' pages are ever touched (the rest stays virtual), so this is the record's
    offsets without its gigabytes; and an int32 offset that wraps lands inside the same allocation, on
    memory that is not the row: the kernel reads wrong values instead of crashing."""
    rows, cols = values.shape
    base = torch.empty(2 ** 31 + rows * stride + cols, dtype=values.dtype, device=values.device)
    view = base.as_strided((rows, cols), (stride, 1), storage_offset=2 ** 31)
    view.copy_(values)
    return view


@pytest.mark.parametrize("kernel", ["softcap_ce", "xxt", "relu2_linear"])
def test_kernels_compute_offsets_in_64_bits(kernel):
    """Each kernel addresses elements past 2³¹ correctly (under the interpreter int32 wraps as on a GPU):
    softcap_ce forward and backward, xxt, and relu2_linear's three matmuls (its dW product reads x with
    the big stride along k). bf16 views: 10.7 GB of address space, a few pages of memory."""
    torch.manual_seed(0)
    R = 3
    if kernel == "softcap_ce":
        vals = (4 * torch.randn(R, 96, device=DEV)).bfloat16()
        t = torch.randint(0, 96, (R,), device=DEV)
        x = far_rows(vals).requires_grad_()
        loss = softcap_ce.softcap_ce(x, t, 15.0, "none")
        ref_x = vals.float().requires_grad_()
        ref = softcap_ce.softcap_ce_reference(ref_x, t, 15.0, "none")
        assert rel(loss, ref) <= softcap_ce.TOLERANCE[BF16]["loss"], (loss, ref)
        g, = torch.autograd.grad(loss.sum(), x)
        gr, = torch.autograd.grad(ref.sum(), ref_x)
        assert rel(g, gr) <= softcap_ce.TOLERANCE[BF16]["dx"]
    elif kernel == "xxt":
        X = far_rows(torch.randn(R, 40, device=DEV).bfloat16())
        assert rel(xxt.xxt(X), xxt.xxt_reference(X.contiguous())) <= xxt.TOLERANCE[BF16]["C"]
    else:
        xs = torch.randn(R, 48, device=DEV).bfloat16()
        w = (0.2 * torch.randn(64, 48, device=DEV)).bfloat16()
        xf = far_rows(xs)
        y, pre = relu2_linear.relu2_linear_fwd(xf, w)
        tol = relu2_linear.TOLERANCE[BF16]
        assert rel(y, relu2_linear.relu2_linear_reference(xs, w)) <= tol["y"]
        gy = torch.randn_like(y)
        dx, dw = relu2_linear.relu2_linear_bwd(gy, pre, xf, w)
        xr, wr = xs.clone().requires_grad_(), w.clone().requires_grad_()
        dxr, dwr = torch.autograd.grad(relu2_linear.relu2_linear_reference(xr, wr), (xr, wr), gy)
        assert rel(dx, dxr) <= tol["dx"] and rel(dw, dwr) <= tol["dw"]


# ---- capability: chosen once, only after a matching launch ---------------------------------------------

def test_capability_auto_on_cpu_says_once_and_uses_none():
    """On CPU, auto picks the torch path for all four and says so in one line."""
    lines = []
    k = capability.select(torch.device("cpu"), "auto", say=lines.append)
    assert k.names() == [] and len(lines) == 1 and "torch reference" in lines[0]


def test_capability_on_checks_each_kernel_and_falls_back_loudly(monkeypatch):
    """--kernels on: every kernel that matches its reference is used; one that does not (or that raises)
    is replaced by the torch path, with a line naming it."""
    lines = []
    assert capability.select(DEV, "on", say=lines.append).names() == list(capability.NAMES)
    assert all(" on (start-up launch matched" in line for line in lines)

    monkeypatch.setattr(xxt, "xxt", lambda X, *a, **k: xxt.xxt_reference(X, *a, **k) * 1.1)
    monkeypatch.setattr(relu2_linear, "relu2_linear", lambda x, w: 1 / 0)
    lines = []
    chosen = capability.select(DEV, "on", say=lines.append).names()
    assert "xxt" not in chosen and "relu2_linear" not in chosen and "softcap_ce" in chosen
    assert any("xxt differs from its reference" in line for line in lines)
    assert any("relu2_linear failed its start-up launch (ZeroDivisionError" in line for line in lines)


# ---- the trainer with kernels on and off -------------------------------------------------------------

def test_training_steps_with_kernels_on_and_off_agree():
    """Two tiny-preset steps (forward, backward, Muon + Adam; the second with Muon's momentum) give the
    same losses with every kernel on as with the torch path, within FP8's rounding of the LM head (0.5 %)."""
    h = tg.PRESETS["tiny"]

    def losses(kernels):
        torch.manual_seed(0)
        model = tg.GPT(h, h.seq_len, tg.DenseAttention(h.eot_token), kernels=kernels)
        opts = tg.build_optimizers(model, h)
        g = torch.Generator().manual_seed(1)
        seq = torch.randint(1, h.vocab_size, (2, 129), generator=g)
        seq[:, 0] = h.eot_token
        x, y = seq[:, :-1], seq[:, 1:]
        out = []
        for _ in range(2):
            loss = model(x, y, torch.tensor([64, 64]))
            loss.backward()
            for o in opts:
                o.step()
            model.zero_grad(set_to_none=True)
            out.append(loss.item())
        return out

    off = losses(tg.NoKernels())
    on = losses(capability.select(torch.device("cpu"), "on", say=lambda _: None))
    assert off[0] == pytest.approx(on[0], rel=1e-6)  # zero-initialised head: every logit is 0 either way
    assert on == pytest.approx(off, rel=5e-3)
    assert off[1] < off[0]  # and it is training


def test_validation_runs_through_the_bf16_head():
    """With the FP8 head on, training goes through it but validation (model.eval()) does not: the val
    loss is exactly the plain bf16 head's, not FP8's rounding of it (the target is judged on that number)."""
    from kernels import fp8_head

    h = tg.PRESETS["tiny"]
    fp8 = capability.Kernels(fp8_head=fp8_head.fp8_head)
    torch.manual_seed(0)
    plain_model = tg.GPT(h, h.seq_len, tg.DenseAttention(h.eot_token))
    with torch.no_grad():
        plain_model.lm_head.weight.normal_(0, 0.05)  # a trained-looking head (zero-init would hide FP8's rounding)
    fp8_model = tg.GPT(h, h.seq_len, tg.DenseAttention(h.eot_token), kernels=fp8)
    fp8_model.load_state_dict(plain_model.state_dict())
    seq = torch.randint(1, h.vocab_size, (2, 129), generator=torch.Generator().manual_seed(1))
    seq[:, 0] = h.eot_token
    x, y, w = seq[:, :-1], seq[:, 1:], torch.tensor([64, 64])

    def loss(model, train):
        model.train(train)
        with torch.no_grad():
            return model(x, y, w, reduction="sum").item()
    plain = loss(plain_model, False)
    assert loss(fp8_model, False) == plain
    assert loss(fp8_model, True) != plain and abs(loss(fp8_model, True) - plain) < 0.02 * abs(plain)


def test_the_log_embeds_the_kernels_the_trainer_imported():
    """A run's source section holds train_gpt.py and every kernels/*.py imported by then."""
    import kernels.xxt  # noqa: F401  (imported above too; explicit here)

    files = tg.source_files()
    assert "train_gpt.py" in files and "kernels/xxt.py" in files and "kernels/capability.py" in files
    assert files["kernels/xxt.py"] == (ROOT / "kernels/xxt.py").read_text()


# ---- speedrun bench on this machine ------------------------------------------------------------------

def test_bench_on_cpu_checks_times_saves_and_compares(tmp_path):
    """`speedrun bench` on CPU says Triton needs a GPU, times the references (and fp8's _scaled_mm after
    its check), saves a results file under records/_bench/<device>/, and --compare flags a slowdown."""
    if CUDA:
        pytest.skip("the CPU path")
    env = {"SPEEDRUN_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    import os
    env = {**os.environ, **env}
    cmd = [sys.executable, "-m", "harness.cli", "bench", "fp8_linear", "xxt", "--no-compile"]
    r = subprocess.run(cmd + ["--out", str(tmp_path / "a.json")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "timed only on a CUDA GPU" in r.stdout
    doc = json.loads((tmp_path / "a.json").read_text())
    rows = {row["kernel"]: row for row in doc["results"]}
    assert rows["xxt"]["status"] == "needs a GPU" and "kernel" not in rows["xxt"]["impls"]
    assert rows["fp8_linear"]["status"] == "ok" and rows["fp8_linear"]["error"] < 0.15
    assert set(rows["fp8_linear"]["impls"]) == {"kernel", "eager"} and "speedup_vs_eager" in rows["fp8_linear"]
    assert rows["fp8_linear"]["impls"]["kernel"]["pct_peak"] is None  # no peak table entry for a CPU
    saved = list((tmp_path / "records" / "_bench").glob("*/*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["commit"]

    # an "earlier" file where everything was twice as fast: this run is a regression
    fast = json.loads((tmp_path / "a.json").read_text())
    for row in fast["results"]:
        for t in row["impls"].values():
            t["ms"] /= 2
    (tmp_path / "fast.json").write_text(json.dumps(fast))
    r = subprocess.run(cmd + ["--no-save", "--compare", str(tmp_path / "fast.json")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "REGRESSED" in r.stdout + r.stderr

    r = subprocess.run(cmd[:4] + ["nosuchkernel"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown kernel" in r.stderr
    r = subprocess.run(cmd + ["--compare", str(tmp_path / "nope.json")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_bench_refuses_to_time_a_wrong_kernel(monkeypatch):
    """A kernel off its reference is reported WRONG and never timed."""
    from kernels import bench

    monkeypatch.setattr(fp8_linear, "fp8_linear", lambda x, w: fp8_linear.fp8_linear_reference(x, w) * 1.5)
    doc = bench.run(["fp8_linear"], shapes="small", device=torch.device("cpu"), compiled=False, say=lambda _: None)
    row = doc["results"][0]
    assert row["status"] == "WRONG" and "kernel" not in row["impls"] and row["error"] > 0.15


def test_peak_table_knows_the_record_gpus_and_nothing_else():
    """% of peak only for known devices: H100 SXM vs PCIe distinguished, unknown → None."""
    from kernels.peaks import peaks_for

    assert peaks_for("NVIDIA H100 80GB HBM3")["bf16"] == pytest.approx(989.4)
    assert peaks_for("NVIDIA H100 PCIe")["bf16"] == 756.0
    assert peaks_for("NVIDIA H200")["mem"] == 4800.0
    assert peaks_for("Some Future GPU") is None


# ---- on a real GPU -----------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("name,shape", [("xxt", dict(M=768, K=3072)), ("xxt", dict(M=200, K=1000)),
                                        ("softcap_ce", dict(N=4096, V=50304)),
                                        ("relu2_linear", dict(M=8192, K=768, N=3072))])
def test_gpu_kernels_compiled(name, shape):
    """Compiled for the GPU, bf16, at record-like shapes: within the module's TOLERANCE."""
    mod = {"xxt": xxt, "softcap_ce": softcap_ce, "relu2_linear": relu2_linear}[name]
    errs = capability.errors(mod, torch.device("cuda"), BF16, **shape)
    assert all(errs[k] <= mod.TOLERANCE[BF16][k] for k in errs), errs


@pytest.mark.gpu
def test_gpu_capability_checks_every_kernel_without_requiring_a_race_win():
    """On CUDA every trainer kernel passes its start-up check (correctness only: at toy shapes a kernel
    need not win a race), fp8_head exactly on sm89+; fp8_linear is not a trainer kernel, so the
    capability check never selects it, but it compiles fullgraph and matches its reference on sm89+."""
    names = capability.select(torch.device("cuda"), "auto", say=print, timed=False).names()
    fp8 = torch.cuda.get_device_capability() >= (8, 9)
    assert {"xxt", "softcap_ce", "relu2_linear"} <= set(names)
    assert ("fp8_head" in names) == fp8 and "fp8_linear" not in names
    if fp8:
        x = torch.randn(8192, 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = (768 ** -0.5 * torch.randn(50304, 768, device="cuda")).requires_grad_()
        y = torch.compile(fp8_linear.fp8_linear, fullgraph=True)(x, w)
        assert rel(y, fp8_linear.fp8_linear_reference(x, w)) <= fp8_linear.TOLERANCE[BF16]["y"]

