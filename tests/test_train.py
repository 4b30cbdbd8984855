"""The trainer: Muon, the model, the masks, the data slicing, the log, and 1 rank vs 2 ranks."""
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import train_gpt as tg
from harness import data
from harness.core.track import load_track

ROOT = Path(__file__).resolve().parents[1]
TINY = tg.PRESETS["tiny"]


def tiny_model(h=TINY, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return tg.GPT(h, max(h.seq_len, h.val_seq_len), tg.DenseAttention(h.eot_token), dtype)


def doc_batch(B=2, T=64, seed=0, h=TINY):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, h.vocab_size, (B, T + 1), generator=g)
    x[:, 0] = h.eot_token
    x[:, T // 3] = h.eot_token  # a second document starts a third of the way in
    return x[:, :-1], x[:, 1:]


# ---- the track and the preset agree --------------------------------------------------------------

def test_presets_match_their_tracks():
    """What a track's rules say (val tokens, EOT, vocabulary) is what its preset trains and validates on."""
    for name, h in tg.PRESETS.items():
        if name.endswith("-smoke"):  # a track's code path at toy size: never a record, not the track's preset
            base = tg.PRESETS[h.track]
            assert (h.num_layers, h.grad_accum, h.batch_seqs, h.vocab_size) == (base.num_layers, base.grad_accum,
                                                                                base.batch_seqs, base.vocab_size)
            continue
        track = load_track(h.track)
        assert track["preset"] == name
        assert h.val_tokens == track["data"]["val_tokens"]
        assert h.eot_token == track["data"]["eot_token"]
        vocab = track["data"].get("synthetic", track["data"]).get("vocab_size")
        assert vocab <= h.vocab_size, "the embedding must cover the track's vocabulary"
        assert h.val_tokens % h.val_seq_len == 0 and h.grad_accum % 2 == 0
        cap = track["data"].get("synthetic", {}).get("max_doc_len")
        if cap:  # every document, its EOT included, fits one val sequence: none is cut mid-document
            assert cap + 1 <= h.val_seq_len


# ---- Muon -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 64), (96, 32), (32, 96), (3, 48, 16)])
def test_orthogonalize_brings_singular_values_near_one(shape):
    """Five Polar Express steps in bf16 put every singular value of a Gaussian matrix in [0.7, 1.2]
    (the polynomial alone gives [0.85, 1.15]; bf16 rounding adds the rest), and the result spans the
    same singular vectors: ⟨O, UVᵀ⟩/‖UVᵀ‖² ≥ 0.95."""
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    O = tg.orthogonalize(G).float()
    assert O.shape == G.shape and O.dtype == torch.bfloat16 or O.dtype == torch.float32
    s = torch.linalg.svdvals(O)
    assert s.min() >= 0.7 and s.max() <= 1.2, (s.min(), s.max())
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    polar = U @ Vh
    align = (O * polar).sum(dim=(-2, -1)) / (polar * polar).sum(dim=(-2, -1))
    assert (align >= 0.95).all(), align


def reference_muon_step(W, grads, lr, momentum, ns_steps=5):
    """Plain Muon, written out independently: fp64 polynomial, one matrix at a time."""
    W, buf = W.double().clone(), torch.zeros_like(W, dtype=torch.float64)
    for g in grads:
        g = g.double()
        buf = momentum * buf + (1 - momentum) * g
        u = (1 - momentum) * g + momentum * buf  # Nesterov: g.lerp(buf, momentum)
        X = u.mT if u.shape[-2] > u.shape[-1] else u
        X = X / (torch.linalg.matrix_norm(X, keepdim=True) * 1.01 + 1e-7)
        for a, b, c in tg.POLAR_EXPRESS[:ns_steps]:
            A = X @ X.mT
            X = a * X + (b * A + c * A @ A) @ X
        X = X.mT if u.shape[-2] > u.shape[-1] else X
        W = W - lr * max(1, W.shape[-2] / W.shape[-1]) ** 0.5 * X
    return W


@pytest.mark.parametrize("ns_dtype,tol", [(torch.float64, 1e-9), (torch.bfloat16, 0.1)])
@pytest.mark.parametrize("shape", [(32, 16), (16, 32), (2, 24, 24)])
def test_muon_matches_a_plain_reference(shape, ns_dtype, tol):
    """Three Muon steps equal the plain fp64 reference: exactly (1e-9) with the iteration in fp64, and
    within 10% of the update's largest entry in bf16 (measured ≈5%: bf16 rounding over 5 iterations)."""
    torch.manual_seed(0)
    W0 = torch.randn(shape)
    grads = [torch.randn(shape) for _ in range(3)]
    p = torch.nn.Parameter(W0.clone().to(torch.float64 if ns_dtype == torch.float64 else torch.float32))
    opt = tg.Muon([p], lr=0.02, momentum=0.9, ns_dtype=ns_dtype)
    for g in grads:
        p.grad = g.clone().to(p.dtype)
        opt.step()
    ref = reference_muon_step(W0, grads, lr=0.02, momentum=0.9)
    err = (p.detach().double() - ref).abs().max()
    assert err <= tol * (ref - W0.double()).abs().max(), err


def test_muon_groups_by_shape_and_keeps_momentum():
    """Matrices land in groups by shape, the long side last (a tall matrix joins its transpose's group:
    the iteration runs on the short side anyway), so ranks can share a group evenly; Q, K, V of a stacked
    parameter are three matrices; the momentum carries over between steps."""
    a, b, c = (torch.nn.Parameter(torch.randn(s)) for s in [(8, 4), (4, 8), (8, 4)])
    qkv = torch.nn.Parameter(torch.randn(3, 4, 4))
    opt = tg.Muon([a, b, c, qkv], lr=0.1, momentum=0.5)
    assert [(u.shape, len(u.items)) for u in opt.units] == [((4, 8), 3), ((4, 4), 3)]
    for p in (a, b, c, qkv):
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.equal(opt.units[0].momentum[0], torch.full((4, 8), 0.5))  # a's gradient, transposed: ones


def test_muon_shares_the_gpt2_small_matrices_evenly_over_8_ranks():
    """At gpt2-small, 48 matrices of 768×768 (Q, K, V, O of 12 layers) and 24 of 768×3072 (the MLP's two,
    one transposed): 6 and 3 per rank of 8, none idle and none doubled."""
    class Eight:
        rank, world = 0, 8
    h = tg.PRESETS["gpt2-small"]
    shapes = [(3, 768, 768), (768, 768), (3072, 768), (768, 3072)] * h.num_layers
    params = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in shapes]
    opt = tg.Muon(params, lr=0.05, momentum=0.95, comm=Eight())
    assert [(u.shape, len(u.items), u.k) for u in opt.units] == [((768, 3072), 24, 3), ((768, 768), 48, 6)]


def test_muon_chunks_the_layers_so_the_last_ones_reduce_first():
    """On 8 ranks the groups are split into 3 chunks of 4 layers (16 and 8 matrices: 2 and 1 per rank, none
    idle), the last layers' chunk first (its gradients come first in the backward); one rank keeps one chunk."""
    class Eight:
        rank, world = 0, 8
    h = tg.PRESETS["gpt2-small"]
    assert tg.layers_per_unit(12, 8) == 4 and tg.layers_per_unit(12, 1) == 12 and tg.layers_per_unit(4, 2) == 1
    shapes = [(3, 768, 768), (768, 768), (3072, 768), (768, 3072)] * h.num_layers
    params = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in shapes]
    chunk_of = {id(p): i // 4 // 4 for i, p in enumerate(params)}  # 4 parameters a layer, 4 layers a chunk
    opt = tg.Muon(params, lr=0.05, momentum=0.95, comm=Eight(), chunk_of=chunk_of)
    assert [(u.shape, len(u.items), u.k) for u in opt.units] == [((768, 3072), 8, 1), ((768, 768), 16, 2)] * 3
    assert [{chunk_of[id(p)] for p in u.params} for u in opt.units] == [{2}, {2}, {1}, {1}, {0}, {0}]


# ---- the model ---------------------------------------------------------------------------------------

def test_forward_backward_at_init():
    """Zero-initialised head and output projections: the first loss is exactly ln(vocab) and only the
    head gets a gradient; the second step reaches the projections, the third every parameter (no dead
    branch), and the loss falls."""
    model = tiny_model()
    opts = tg.build_optimizers(model, TINY)
    x, y = doc_batch()
    windows = torch.tensor([64, 32])
    losses, live = [], []
    for _ in range(3):
        loss = model(x, y, windows)
        loss.backward()
        losses.append(loss.item())
        live.append({n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0})
        for opt in opts:
            opt.step()
        model.zero_grad()
    assert math.isclose(losses[0], math.log(TINY.vocab_size), rel_tol=1e-6)
    assert live[0] == {"lm_head.weight"}
    assert {"blocks.0.attn.proj.weight", "blocks.0.mlp.proj.weight"} <= live[1]
    assert live[2] == {n for n, _ in model.named_parameters()}
    assert losses[2] < losses[0]


def trained_model(steps=3, dtype=torch.float32):
    model = tiny_model(dtype=dtype)
    opts = tg.build_optimizers(model, TINY)
    for s in range(steps):
        x, y = doc_batch(seed=s)
        model(x, y, torch.tensor([64, 32])).backward()
        for o in opts:
            o.step()
        model.zero_grad()
    return model


def per_token_loss(model, x, y, window=64):
    with torch.no_grad():
        return model(x, y, torch.tensor([window, max(1, window // 2)]), reduction="none").view(x.shape)


def test_causal_within_documents_and_windows():
    """A token's loss depends only on earlier tokens of its own document within the window: editing a
    later token, an earlier document, or a token beyond the window changes nothing before/after it."""
    model = trained_model()
    x, y = doc_batch(B=1, T=60)
    base = per_token_loss(model, x, y)
    # a later token: nothing before it moves
    x2 = x.clone(); x2[0, 50] = (x2[0, 50] % (TINY.vocab_size - 1)) + 1
    assert torch.allclose(per_token_loss(model, x2, y)[0, :50], base[0, :50], atol=1e-6)
    # the first document (positions 0..19): the second document (20..) does not see it
    x3 = x.clone(); x3[0, 5] = (x3[0, 5] % (TINY.vocab_size - 1)) + 1
    changed = per_token_loss(model, x3, y)
    assert torch.allclose(changed[0, 20:], base[0, 20:], atol=1e-6)
    assert not torch.allclose(changed[0, 5:20], base[0, 5:20], atol=1e-6)
    # window w: each layer looks back w-1 tokens, so L layers reach L·(w-1) back and no further
    w, reach = 4, TINY.num_layers * 3
    base_w = per_token_loss(model, x, y, window=w)
    x4 = x.clone(); x4[0, 25] = (x4[0, 25] % (TINY.vocab_size - 1)) + 1
    moved = per_token_loss(model, x4, y, window=w)
    assert torch.allclose(moved[0, 25 + reach + 1:], base_w[0, 25 + reach + 1:], atol=1e-6)
    assert not torch.allclose(moved[0, 25:25 + reach + 1], base_w[0, 25:25 + reach + 1], atol=1e-6)


def test_bf16_explicit_attention_matches_sdpa():
    """The CPU bf16 attention path (masked softmax spelled out) equals SDPA with the same mask."""
    attn = tg.DenseAttention(eot=0)
    x, _ = doc_batch(B=2, T=48)
    mask, _ = attn.masks(x, torch.tensor([16, 16]))
    q, k, v = (torch.randn(2, 2, 48, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    got = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 0.3).float()
    assert (got - ref).abs().max() < 0.05


def test_flex_attention_block_masks_equal_the_dense_mask():
    """The block masks built blockwise from document boundaries (the CUDA path) attend over exactly the
    keys of the dense mask (the CPU path): FlexAttention (its forward runs on CPU) equals SDPA with the
    dense mask, for windows below, at and above the block size and across documents, batch of 2."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    x, _ = doc_batch(B=2, T=512)
    flex, dense = tg.FlexAttention(0, 64), tg.DenseAttention(0)
    q, k, v = (torch.randn(2, 2, 512, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    for windows in ([64, 32], [100, 50], [192, 128], [512, 448]):
        w = torch.tensor(windows)
        for fm, dm in zip(flex.masks(x, w), dense.masks(x, w)):
            want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dm, scale=0.25)
            assert (flex(q, k, v, fm, 0.25) - want).abs().max() < 1e-5, windows


def test_no_recompile_through_the_whole_window_schedule():
    """Under torch.compile (backend "eager": dynamo's own decisions, FlexAttention's CPU forward), the
    model goes through every (long, short) window of the gpt2-small schedule and the validation call
    with no graph after the warm-up's: windows are tensors and the block masks are built inside the
    compiled forward (a window as a Python int would be a guard, each new value a recompile)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    from torch._dynamo.utils import counters

    full = tg.PRESETS["gpt2-small"]
    # every window fits; two layers (one long-window, one short) and a small vocab keep FlexAttention's
    # slow CPU forward to seconds: the windows and masks are the code under test, not the depth
    h = replace(tg.PRESETS["gpt2-small-smoke"], seq_len=2048, val_seq_len=4096, num_layers=2, short_window_layers=(1,),
                num_value_embeds=1, vocab_size=512, eot_token=511)
    schedule = sorted({tg.attention_windows(s, full) for s in range(full.num_steps + 1)})
    assert len(schedule) >= 12 and max(w for w, _ in schedule) <= h.seq_len
    torch.manual_seed(0)
    model = tg.GPT(h, max(h.seq_len, h.val_seq_len), tg.FlexAttention(h.eot_token, h.window_block))
    tg.compile_blocks(model, backend="eager")  # the trainer's own compile: stem, blocks and head apart
    run = model
    seq = torch.randint(0, h.vocab_size, (1, h.seq_len + 1))
    seq[0, ::97] = h.eot_token
    val = torch.randint(0, h.vocab_size, (1, h.val_seq_len + 1))
    x, y, vx, vy = seq[:, :-1], seq[:, 1:], val[:, :-1], val[:, 1:]
    counters.clear()
    with torch.no_grad():
        run(x, y, torch.tensor(schedule[0]))  # the warm-up: one training call, one validation call
        model.eval()
        run(vx, vy, torch.tensor([h.window_max, h.window_max // 2]), reduction="sum")
        model.train()
        warm = counters["stats"]["unique_graphs"]
        for w in schedule:
            run(x, y, torch.tensor(w))
        model.eval()
        run(vx, vy, torch.tensor([h.window_max, h.window_max // 2]), reduction="sum")
    assert warm == counters["stats"]["unique_graphs"] and warm <= 8, dict(counters["stats"])


# ---- data --------------------------------------------------------------------------------------------

def test_trainer_reads_the_harness_shards_and_rejects_bad_ones(corpus, tmp_path):
    """train_gpt.py's own shard reader (a record is one file) agrees with harness.data, and refuses a
    file whose header disagrees with its size, naming the file and the command that fixes it."""
    f = sorted(corpus.glob("synthetic_train_*.bin"))[0]
    assert np.array_equal(tg.load_shard(str(f)), data.read_shard(f))
    bad = tmp_path / "synthetic_train_000000.bin"
    bad.write_bytes(f.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"synthetic_train_000000\.bin.*speedrun data synthetic"):
        tg.load_shard(str(bad))


def micro_batches(corpus, world, steps=3):
    files = sorted(str(p) for p in corpus.glob("synthetic_train_*.bin"))
    h = replace(TINY, seq_len=1000)  # long sequences: a few steps cross shard boundaries
    out = {}
    for rank in range(world):
        tg.RANK, tg.WORLD_SIZE = rank, world
        try:
            it = tg.train_batches(files, h, torch.device("cpu"))
            out[rank] = [next(it)[0] for _ in range(steps * h.grad_accum // world)]
        finally:
            tg.RANK, tg.WORLD_SIZE = 0, 1
    return out, h


def test_batches_start_at_documents_and_split_across_ranks(corpus):
    """Every training sequence starts with EOT; at world size 2 the ranks' micro-batches are exactly
    the world-size-1 micro-batches, interleaved (same global batch at any world size)."""
    one, h = micro_batches(corpus, 1)
    two, _ = micro_batches(corpus, 2)
    assert all((b[:, 0] == h.eot_token).all() for b in one[0])
    for i, b in enumerate(one[0]):
        assert torch.equal(b, two[i % 2][i // 2])


def test_val_batches_cover_every_val_token_once_in_one_shape(corpus):
    """Validation: every one of the first val_tokens predictions is a target exactly once, each span
    starts at a document (the track caps documents to fit), and every batch has the same shape (the
    last one padded with empty rows), so the compiled model compiles validation once."""
    files = sorted(str(p) for p in corpus.glob("synthetic_val_*.bin"))
    tokens = np.concatenate([tg.load_shard(f) for f in files])
    spans = tg.val_sequences(tokens, TINY.val_tokens, TINY.val_seq_len, TINY.eot_token)
    assert all(tokens[p] == TINY.eot_token for p, _ in spans)
    assert len(spans) % TINY.val_batch_seqs  # the last batch is a partial one, padded
    batches = list(tg.val_batches(files, TINY, torch.device("cpu")))
    assert {tuple(x.shape) for x, _ in batches} == {(TINY.val_batch_seqs, TINY.val_seq_len)}
    assert sum(int((y >= 0).sum()) for _, y in batches) == TINY.val_tokens
    got = torch.cat([y[y >= 0] for _, y in batches]).numpy()
    assert np.array_equal(got, tokens[1:TINY.val_tokens + 1])


def test_schedules():
    """lr is flat then decays linearly to final_lr_frac; momentum warms up; windows grow in whole blocks."""
    h = TINY
    assert tg.lr_multiplier(0, h) == 1 and math.isclose(tg.lr_multiplier(h.num_steps, h), h.final_lr_frac)
    assert tg.muon_momentum(0, h) == h.muon_momentum_min and tg.muon_momentum(10**6, h) == h.muon_momentum
    for s in range(0, h.num_steps + 1, 7):
        long, short = tg.attention_windows(s, h)
        assert long % h.window_block == 0 and h.window_min <= long <= h.window_max and short <= long


# ---- whole runs: the log, and 1 rank vs 2 ranks ----------------------------------------------------

def run_trainer(corpus, tmp_path, nproc, run_id, steps=3, extra=(), preset="tiny"):
    script = str(ROOT / "train_gpt.py")
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]
              if nproc > 1 else [sys.executable, script])
    cmd = launch + ["--preset", preset, "--data-dir", str(corpus), "--log-dir", str(tmp_path), "--run-id", run_id,
                    "--max-steps", str(steps), "--val-every", "1", "--no-compile", *extra]
    # threads: the trainer shares the cores among its local ranks (one rank takes them all)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return (tmp_path / f"{run_id}.txt").read_text()


def val_losses(log):
    return [float(m) for m in re.findall(r"^step:\d+/\d+ val_loss:(\S+)", log, re.M)]


@pytest.fixture(scope="module")
def one_rank_log(corpus, tmp_path_factory):
    return run_trainer(corpus, tmp_path_factory.mktemp("logs1"), 1, "one")


@pytest.mark.slow
def test_two_ranks_match_one_rank_with_accumulation(corpus, tmp_path, one_rank_log):
    """2 gloo ranks (1 micro-batch each) and 1 rank (2 accumulated micro-batches) train the same
    global batches: val losses after each of 3 steps agree within 2e-3 (bf16 activations, reduction
    order). Covers batch slicing, gradient all-reduce, sharded Muon with all_gather, sharded validation."""
    two = val_losses(run_trainer(corpus, tmp_path, 2, "two"))
    one = val_losses(one_rank_log)
    assert len(one) == len(two) == 4
    assert one[0] == two[0]  # identical initial weights on every rank
    assert max(abs(a - b) for a, b in zip(one, two)) < 2e-3, (one, two)
    assert one[-1] < one[0] - 0.5  # and it learns


@pytest.fixture(scope="module")
def fineweb_like(tmp_path_factory):
    """Shards in FineWeb's names and format (GPT-2 token ids, EOT 50256 starts every document) for the
    gpt2-small code path: one train shard, one val shard."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("fineweb")

    def stream(n):
        toks = rng.integers(0, 50256, n)
        toks[rng.random(n) < 1 / 300] = 50256
        toks[0] = 50256
        return toks

    data.write_shard(out / "fineweb_train_000001.bin", stream(200_000))
    data.write_shard(out / "fineweb_val_000000.bin", stream(20_000))
    return out


@pytest.mark.slow
def test_eight_ranks_match_one_rank_on_the_gpt2_small_code_path(fineweb_like, tmp_path):
    """The gpt2-small code path at toy width (preset gpt2-small-smoke: 12 layers, grad_accum 8, batch 1):
    8 gloo ranks (one micro-batch each, Muon's groups sharded 8 ways, validation split 8 ways) and 1 rank
    (8 accumulated micro-batches) give the same val losses over 2 steps within 2e-3 (bf16 activations on
    this CPU, reduction order)."""
    def run(nproc, run_id):
        return val_losses(run_trainer(fineweb_like, tmp_path, nproc, run_id, steps=2, preset="gpt2-small-smoke"))
    eight, one = run(8, "eight"), run(1, "one")
    assert len(one) == len(eight) == 3 and one[0] == eight[0]
    assert max(abs(a - b) for a, b in zip(one, eight)) < 2e-3, (one, eight)
    assert one[-1] != one[0]  # the steps changed the model (from a zero head, 2 steps barely move ln V)


@pytest.mark.slow
def test_the_log_has_the_design_sections(one_rank_log):
    """logs/<run_id>.txt: source after a banner | 100 '=' | environment | 100 '=' | run lines in the
    community's formats | peak memory | one RESULT line last, whose code_sha256 hashes the embedded source."""
    log = one_rank_log
    parts = log.split("\n" + "=" * 100 + "\n")
    assert len(parts) == 3
    source, env, run = parts
    assert source.startswith("# ==== file: train_gpt.py ====\n")
    files = re.split(r"^# ==== file: (.+) ====\n", source + "\n", flags=re.M)[1:]
    files = dict(zip(files[::2], files[1::2]))
    assert files["train_gpt.py"] == (ROOT / "train_gpt.py").read_text()
    assert files["kernels/capability.py"] == (ROOT / "kernels/capability.py").read_text()  # imported, so embedded
    for pat in (r"^Running Python 3\.", r"^Running PyTorch \S+ compiled for CUDA ", r"^Running Triton version ",
                r"^CPU: .+ cores:\d+", r"^speedrun track:tiny-cpu preset:tiny seed:0 run_id:one world_size:1 device:cpu$",
                r"^code_sha256 train_gpt\.py: [0-9a-f]{64}$", r"^data_sha256: [0-9a-f]{64} "):
        assert re.search(pat, env, re.M), pat
    # Polar Express runs in the activation dtype: emulated bf16 on a CPU without it is ~150x slower than fp32
    act = re.search(r"activations (\w+)$", run, re.M)[1]
    assert re.search(rf"Polar Express in {act};", run), act
    lines = run.rstrip("\n").split("\n")
    step_lines = [l for l in lines if l.startswith("step:")]
    assert all(re.fullmatch(r"step:\d+/\d+ (val_loss:\d+\.\d{4} )?train_time:\d+ms step_avg:\d+\.\d{2}ms", l)
               for l in step_lines), step_lines
    assert re.fullmatch(r"peak memory allocated: \d+ MiB reserved: \d+ MiB \(host: \d+ MiB, the largest rank.s\)", lines[-2])
    assert lines[-1].startswith("RESULT ")
    result = json.loads(lines[-1][len("RESULT "):])
    for key in ("val_loss", "train_time_ms", "steps", "seed", "run_id", "track", "code_sha256"):
        assert key in result
    assert result["code_sha256"] == hashlib.sha256(files["train_gpt.py"].encode()).hexdigest()
    assert result["steps"] == 3 and result["val_loss"] == pytest.approx(val_losses(log)[-1], abs=1e-4)
    # the clock stops for validation: train_time is monotonic and the val line repeats the step's time
    times = [int(t) for t in re.findall(r"train_time:(\d+)ms", run)]
    assert times == sorted(times)


# ---- benchmark (not part of the default run: --benchmark-skip) ---------------------------------------

@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bench_tiny_tokens_per_second(benchmark, compiled):
    """Tokens per second of one tiny-preset training step (fwd, bwd, Muon + Adam) on this CPU, eager and
    under torch.compile (what a record run uses; compilation happens in the untimed warm-up rounds)."""
    model = tiny_model(dtype=tg.compute_dtype(torch.device("cpu")))
    run = torch.compile(model, dynamic=False) if compiled else model
    opts = tg.build_optimizers(model, TINY)
    x, y = doc_batch(B=TINY.batch_seqs, T=TINY.seq_len)
    windows = torch.tensor(tg.attention_windows(TINY.num_steps, TINY))

    def step():
        for _ in range(TINY.grad_accum):
            run(x, y, windows).backward()
        for o in opts:
            o.step()
        model.zero_grad()

    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
    tokens = TINY.seq_len * TINY.batch_seqs * TINY.grad_accum
    benchmark.extra_info["tokens_per_s"] = round(tokens / benchmark.stats["median"])


@pytest.mark.gpu
def test_gpu_smoke_run_compiles_once_and_uses_the_kernels(fineweb_like, tmp_path):
    """On one GPU, the gpt2-small code path (smoke width) under torch.compile with --kernels auto: the
    device functions run for real (pinned, non-blocking copies; FlexAttention block masks; FP8 head on
    sm89+), each kernel's start-up line says checked and raced, nothing recompiles after the warm-up, the
    loss is finite and the RESULT carries MFU."""
    cmd = [sys.executable, str(ROOT / "train_gpt.py"), "--preset", "gpt2-small-smoke", "--data-dir", str(fineweb_like),
           "--log-dir", str(tmp_path), "--run-id", "gpu", "--max-steps", "5", "--val-every", "0"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = (tmp_path / "gpu.txt").read_text()
    r = json.loads(log.rstrip().split("\n")[-1][len("RESULT "):])
    assert r["recompiles"] == 0 and r["graphs"] >= 1 and math.isfinite(r["val_loss"]) and r["mfu"] is not None
    assert "fwd+bwd" in log and "attention: flex_attention" in log and "node: {" in log


@pytest.mark.slow
def test_the_log_names_the_host_and_its_peak_memory(one_rank_log):
    """The `node:` line carries the host's CPU model, cores and RAM; the peak memory line and RESULT carry the
    run's peak host memory (the largest rank's resident set), known only at the end."""
    node = json.loads(next(l for l in one_rank_log.splitlines() if l.startswith("node: "))[len("node: "):])
    assert node["host"]["cpu"] and node["host"]["cores"] >= 1 and node["host"]["ram_gib"] > 0
    result = json.loads(one_rank_log.rstrip().split("\n")[-1][len("RESULT "):])
    assert result["peak_host_mib"] > 50 and f"(host: {result['peak_host_mib']} MiB" in one_rank_log


@pytest.mark.slow
def test_the_preset_runs_compiled_through_main(corpus, tmp_path):
    """The record's own path: `train_gpt.py --preset tiny` under torch.compile through main(), not only
    eager (--no-compile) as the smoke runs go; a few steps, compiled during the untimed warm-up."""
    script = str(ROOT / "train_gpt.py")
    cmd = [sys.executable, script, "--preset", "tiny", "--data-dir", str(corpus), "--log-dir", str(tmp_path),
           "--run-id", "compiled", "--max-steps", "4", "--val-every", "0"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2",
               TORCHINDUCTOR_CACHE_DIR=str(ROOT / ".cache" / "inductor"))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = (tmp_path / "compiled.txt").read_text()
    result = json.loads(log.rsplit("RESULT ", 1)[1])
    assert result["steps"] == 4 and result["graphs"] >= 1 and result["recompiles"] == 0
