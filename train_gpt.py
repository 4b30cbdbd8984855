"""train_gpt.py: a NanoGPT speedrun record attempt in one file, read top to bottom.

    # the tiny track on any CPU (what ./run.sh does on a machine without a GPU)
    speedrun data synthetic                                   # shards + their exact loss floor
    python train_gpt.py --preset tiny
    torchrun --standalone --nproc_per_node=2 train_gpt.py --preset tiny     # 2 ranks over gloo

    # the main track: 8×H100, FineWeb
    torchrun --standalone --nproc_per_node=8 train_gpt.py --preset gpt2-small --data-dir data/fineweb10B
    # the same on one GPU (8 micro-batches accumulated a step)
    python train_gpt.py --preset gpt2-small-1gpu --data-dir data/fineweb10B

Rank 0 writes logs/<run_id>.txt: the source of this file (and of every kernels/*.py it imported),
a line of 100 '=', the environment, a line of 100 '=', the run, and last one `RESULT {json}` line.
Timed: synchronized training steps only. Warm-up steps (compilation) are untimed and followed by a
reset of model and optimizer state; the clock stops for every validation pass.
"""
from __future__ import annotations

import argparse
import copy
import glob
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

# -----------------------------------------------------------------------------------------------
# Hyperparameters: what defines a record. One frozen preset per track; runtime knobs are flags.


@dataclass(frozen=True)
class Hyperparameters:
    track: str
    # data
    train_files: str  # glob, relative to --data-dir
    val_files: str
    val_tokens: int  # validate on exactly the first val_tokens tokens (+1 for the last target)
    eot_token: int  # every document starts with it
    vocab_size: int  # embedding rows (padded for fast matmuls)
    # batch: a step sees seq_len × batch_seqs × grad_accum tokens at any world size
    seq_len: int
    batch_seqs: int  # sequences per micro-batch
    grad_accum: int  # micro-batches per step in all; each of W ranks runs grad_accum / W of them
    val_seq_len: int
    val_batch_seqs: int
    # model
    num_layers: int
    model_dim: int
    num_heads: int
    mlp_ratio: int = 4
    num_value_embeds: int = 3  # shared by the first and the last layers
    logit_softcap: float = 15.0
    attn_scale: float = 0.12  # q and k are RMS-normed, so the scale sets the sharpest logit
    window_min: int = 128  # sliding-window attention: grows from min to max over training
    window_max: int = 1024
    window_block: int = 128  # windows are multiples of this (FlexAttention's block size)
    short_window_layers: tuple = ()  # these layers attend over half the window
    block_windows: bool = False  # windows of whole key blocks (the public records' mask): no partial blocks at
    # a window's edge, ≈10-15 % fewer attention blocks than token-exact windows at gpt2-small's schedule
    # optimization
    num_steps: int = 1000
    cooldown_frac: float = 0.4  # lr decays linearly to final_lr_frac over the last part
    final_lr_frac: float = 0.1
    muon_lr: float = 0.05
    muon_momentum: float = 0.95
    muon_momentum_min: float = 0.85  # warmed up to muon_momentum over momentum_warmup_steps
    momentum_warmup_steps: int = 300
    muon_weight_decay: float = 0.0
    ns_steps: int = 5
    embed_lr: float = 0.3
    head_lr: float = 0.008
    scalar_lr: float = 0.04
    adam_betas: tuple = (0.8, 0.95)
    # evaluation and warm-up
    val_every: int = 125
    warmup_steps: int = 10  # untimed; model and optimizer state are reset afterwards
    compile: bool = True  # torch.compile (Triton on CUDA, C++ on CPU), compiled during the warm-up


PRESETS = {
    # CPU, small vocab: a real speedrun in minutes on 2 cores (track tiny-cpu, synthetic corpus).
    "tiny": Hyperparameters(
        track="tiny-cpu",
        train_files="synthetic_train_*.bin", val_files="synthetic_val_*.bin",
        val_tokens=65536, eot_token=0, vocab_size=128,
        seq_len=256, batch_seqs=8, grad_accum=2, val_seq_len=256, val_batch_seqs=64,
        num_layers=4, model_dim=64, num_heads=2, num_value_embeds=2,
        attn_scale=0.2, window_min=128, window_max=256, window_block=64,
        num_steps=210, cooldown_frac=0.6, final_lr_frac=0.0, momentum_warmup_steps=81,
        embed_lr=0.3, head_lr=0.008, scalar_lr=0.04,
        val_every=70, warmup_steps=3,
    ),
    # The 124M-class record shape: 8×H100, FineWeb, GPT-2 tokens (track gpt2-small).
    "gpt2-small": Hyperparameters(
        track="gpt2-small",
        train_files="fineweb_train_*.bin", val_files="fineweb_val_*.bin",
        val_tokens=10485760, eot_token=50256, vocab_size=50304,
        seq_len=48 * 1024, batch_seqs=1, grad_accum=8, val_seq_len=64 * 1024, val_batch_seqs=1,
        num_layers=12, model_dim=768, num_heads=6, num_value_embeds=3,
        attn_scale=0.12, window_min=128, window_max=1792, window_block=128,
        short_window_layers=(1, 3, 4, 6, 8, 10), block_windows=True,
        num_steps=1750, cooldown_frac=0.45, momentum_warmup_steps=300,
        val_every=125, warmup_steps=10,
    ),
}
# gpt2-small's code path at a width and length a CPU runs in seconds: the same 12 layers (so Muon shards the
# same groups over 8 ranks), grad_accum split, data slicing, vocab and schedules. For tests and `speedrun
# doctor` on synthetic shards in FineWeb's format; never a record.
PRESETS["gpt2-small-smoke"] = replace(PRESETS["gpt2-small"], model_dim=64, num_heads=2, seq_len=512,
                                      val_seq_len=1024, val_tokens=4096, warmup_steps=2)
# One GPU (track gpt2-small-1gpu): gpt2-small exactly, its 8 micro-batches a step accumulated on one rank.
PRESETS["gpt2-small-1gpu"] = replace(PRESETS["gpt2-small"], track="gpt2-small-1gpu")
PRESETS["gpt2-small-1gpu-smoke"] = replace(PRESETS["gpt2-small-smoke"], track="gpt2-small-1gpu")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="NanoGPT speedrun trainer (one run, one log)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="what defines the record")
    p.add_argument("--data-dir", help="folder of shards (default: data/synthetic for tiny, data/fineweb10B otherwise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation")
    p.add_argument("--run-id", help="names the log (default: a fresh uuid4)")
    p.add_argument("--log-dir", default="logs", help="where rank 0 writes <run_id>.txt")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs; schedules stay the preset's)")
    p.add_argument("--val-every", type=int, help="validate every N steps (default: the preset's)")
    p.add_argument("--kernels", default="auto", choices=("auto", "on", "off"),
                   help="Triton/FP8 kernels: auto = each one checked at start-up on CUDA, none on CPU; "
                        "on = try them anywhere (CPU needs TRITON_INTERPRET=1: tests); off = torch only")
    p.add_argument("--no-compile", action="store_true", help="eager mode: for smoke runs and tests; its times are not a record's")
    p.add_argument("--estimate-memory", type=int, metavar="RANKS",
                   help="print the peak memory per rank of one training step on RANKS ranks (fake tensors: nothing is "
                        "allocated or run; the CUDA code path unless --cpu-path) as `MEMORY {json}`, then exit")
    p.add_argument("--cpu-path", action="store_true", help="with --estimate-memory: the CPU code path (dense attention)")
    return p.parse_args(argv)


# -----------------------------------------------------------------------------------------------
# Distributed setup and the device choices, each made once and said once.

RANK, WORLD_SIZE, LOCAL_RANK = 0, 1, 0
LOG = None  # rank 0's open logs/<run_id>.txt


def print0(line: str = "", console: bool = True):
    """Rank 0 only: a line to stdout and, as it happens, to the log."""
    if RANK != 0:
        return
    if console:
        print(line, flush=True)
    if LOG is not None:
        LOG.write(line + "\n")
        LOG.flush()


def setup_distributed() -> torch.device:
    global RANK, WORLD_SIZE, LOCAL_RANK
    RANK = int(os.environ.get("RANK", 0))
    WORLD_SIZE = int(os.environ.get("WORLD_SIZE", 1))
    LOCAL_RANK = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        allocator_conf(os.environ)  # before the first CUDA allocation reads it
        device = torch.device("cuda", LOCAL_RANK)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # Share the cores among local ranks: oversubscribed threads make CPU runs several times slower. An
        # explicit OMP_NUM_THREADS (torchrun sets 1 per rank) is the user's choice and wins.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", WORLD_SIZE))
        threads = os.environ.get("OMP_NUM_THREADS", "")
        torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0
                              else max(1, (os.cpu_count() or 1) // local_world))
    if WORLD_SIZE > 1:
        if device.type == "cuda":  # device_id binds the NCCL communicator to this rank's GPU eagerly (2.3+ docs)
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return device


def allocator_conf(env) -> None:
    """expandable_segments:True in PYTORCH_CUDA_ALLOC_CONF unless the user chose otherwise: segments grow in
    place instead of piling up fixed blocks, so the start-up race's and warm-up's freed memory is reused
    (without it, GBs stay reserved and fragmented)."""
    conf = env.get("PYTORCH_CUDA_ALLOC_CONF", "")
    if "expandable_segments" not in conf:
        env["PYTORCH_CUDA_ALLOC_CONF"] = ",".join(filter(None, [conf, "expandable_segments:True"]))


def sync(device: torch.device):
    """The clock is read only after this: CUDA work is asynchronous, CPU work is not."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(batch: Tensor, device: torch.device) -> Tensor:
    """A CPU batch onto the device without stalling the host: pinned memory makes the copy asynchronous
    (non_blocking) on CUDA; a CPU run uses the batch as it is."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def compute_dtype(device: torch.device, say=print0) -> torch.dtype:
    """bf16 activations where the hardware has bf16 arithmetic; emulated bf16 would be slower than fp32."""
    if device.type == "cuda":
        return torch.bfloat16
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        say("dtype: CPU has native bf16 (avx512_bf16/amx_bf16) → bf16 activations, fp32 weights")
        return torch.bfloat16
    say("dtype: CPU without native bf16 → fp32 activations")
    return torch.float32


class NoKernels:
    """The torch path everywhere (a model built without kernels; main() picks the real set)."""
    xxt = softcap_ce = fp8_head = relu2_linear = None

    def names(self) -> list[str]:
        return []


def kernel_shapes(h: Hyperparameters) -> dict:
    """The shapes each kernel runs at in this preset (per rank, per micro-batch): the start-up check and
    race use these, not toy ones."""
    tokens, d, hidden = h.batch_seqs * h.seq_len, h.model_dim, h.mlp_ratio * h.model_dim
    return {"xxt": dict(M=d, K=hidden), "softcap_ce": dict(N=tokens, V=h.vocab_size),
            "fp8_head": dict(N=tokens, K=d, V=h.vocab_size), "relu2_linear": dict(M=tokens, K=d, N=hidden)}


def pick_kernels(device: torch.device, mode: str, say, h: Hyperparameters):
    """Triton kernels and FP8 where they matched the reference at this preset's shapes and, on CUDA, were
    not slower than the compiled torch path; else the torch path. Rank 0 decides and broadcasts: a race on
    every rank could pick differently (noise), while the log shows rank 0's lines. Runs before the log is
    written, so that the log embeds the kernels/*.py files it imported."""
    if mode == "off":
        say("kernels: off (--kernels off) → torch reference everywhere")
        return NoKernels()
    try:
        from kernels.capability import adopt, select
    except ImportError as e:  # e.g. a copy of this file without its kernels/ folder (the same on every rank)
        say(f"kernels: cannot import kernels/ ({e}) → torch reference everywhere")
        return NoKernels()
    chosen = select(device, mode, say=say, shapes=kernel_shapes(h) if device.type == "cuda" else None) \
        if RANK == 0 else None
    names = [chosen.names() if RANK == 0 else None]
    if WORLD_SIZE > 1:
        dist.broadcast_object_list(names, src=0)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the race's record-shape inputs would stay reserved (tens of GB) otherwise
    return chosen if RANK == 0 else adopt(names[0])


def node_figures(device: torch.device) -> dict:
    """What this node delivers, measured at start-up (untimed) on every rank and logged, so a reviewer sees
    on what node a time was taken: matmul TFLOP/s (% of peak), all-reduce bandwidth over this run's
    process group, GPU names and clocks (kernels/node.py, the probes of `speedrun doctor`); and the host
    (CPU model, cores, RAM): records that do host-side work on the clock depend on it. The run's peak host
    memory is known only at its end: the `peak memory` line and RESULT carry it."""
    host = {"cpu": cpu_name(), "cores": os.cpu_count(), "ram_gib": host_ram_gib()}
    try:
        from kernels import node
    except ImportError as e:
        return {"host": host, "error": f"kernels/node.py not importable: {e}"}
    m = node.matmul(device, "bf16", side=4096 if device.type == "cuda" else 512, seconds=0.2)
    out = {"host": host, "matmul_bf16_tflops": round(m["tflops"], 3),
           "matmul_bf16_pct_peak": m["pct_peak"] and round(m["pct_peak"], 1)}
    if WORLD_SIZE > 1:
        r = node.allreduce(64 if device.type == "cuda" else 4, device, iters=5)
        out.update(allreduce_busbw_gbps=round(r["busbw_gbps"], 2), allreduce_mib=r["bytes"] >> 20)
    if device.type == "cuda" and RANK == 0:
        out["gpus"] = [{k: g[k] for k in ("name", "sm_clock_mhz", "max_sm_clock_mhz", "power_limit_w")}
                       for g in node.gpus()]
    return out


def maybe_compile(model: "GPT", device: torch.device, enabled: bool, say=print0) -> nn.Module | None:
    """torch.compile where it can work: the model to call, or None (eager). On several ranks block by block
    (`compile_blocks`: the gradients' reduce-scatters overlap the backward); on one rank there is nothing to
    overlap and the model is one graph. On CPU it needs a C++ compiler, and pays (tiny preset, 2 cores: ~40 s
    to compile, untimed; steps 435 → 335 ms)."""
    if not enabled:
        say("compile: off (eager) — times from this run are not comparable with a record's")
        return None
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        say("compile: no C++ compiler on PATH → eager on CPU (slower steps)")
        return None
    if WORLD_SIZE > 1:
        say(f"compile: torch.compile on {device.type}, block by block (compiles during the untimed warm-up)")
        compile_blocks(model)
        return model
    say(f"compile: torch.compile on {device.type} (compiles during the untimed warm-up)")
    return torch.compile(model, dynamic=False, fullgraph=True)  # a graph break is an error, not a silent slowdown


def compile_blocks(model: "GPT", backend: str = "inductor") -> None:
    """The stem, each block and the head compiled separately (fullgraph: a graph break is an error, not a
    silent slowdown). One graph for the whole model would also be one backward: every gradient, and so every
    post-accumulate-grad hook, lands only after all of it, and no reduce-scatter overlaps the backward. Block
    by block, a block's gradients land (and its unit's reduce-scatter starts) as its own backward ends, while
    the earlier blocks' still run. The blocks share their graphs (same code and shapes)."""
    kw = dict(dynamic=False, fullgraph=True, backend=backend)
    model.stem, model.head = torch.compile(model.stem, **kw), torch.compile(model.head, **kw)
    for block in model.blocks:
        block.compile(**kw)


def compiled_graphs() -> int | None:
    """Graphs torch.compile has built so far in this process (torch._dynamo's own counter), or None when
    nothing was compiled: one more after the warm-up is a recompile inside the timed run."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"] or None


def graph_breaks() -> int:
    """Graph breaks torch.compile met (each one splits a graph: Python runs between the pieces)."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


# -----------------------------------------------------------------------------------------------
# Attention masks: causal, within one document, within a sliding window. Built inside the compiled
# forward from the tokens and a window *tensor*: a new window is new data, never a new graph (a window
# passed as a Python int is a guard, and every value a recompile). FlexAttention gets block masks
# (block-sparse, CUDA); SDPA a dense mask (CPU, where FlexAttention has no backward). Both attend over
# exactly the same keys: the block masks carry the token-level mask for their partial blocks.

def doc_causal_window(docs: Tensor, window: Tensor, block: int | None = None):
    """Causal, same document, and within the window: token-exact (q − kv < window), or with `block` in whole
    blocks (the key's block is fewer than window / block blocks behind the query's)."""
    def mask_mod(b, h, q_idx, kv_idx):
        same_doc = docs[b, q_idx] == docs[b, kv_idx]
        near = (q_idx - kv_idx < window) if block is None else ((q_idx // block - kv_idx // block) * block < window)
        return (q_idx >= kv_idx) & same_doc & near
    return mask_mod


class DenseAttention:
    """SDPA with a boolean (B, 1, T, T) mask evaluated from the mask function."""
    name = "SDPA with a dense doc-causal-window mask"

    def __init__(self, eot: int, window_block: int | None = None):
        self.eot = eot  # every document starts with it
        self.window_block = window_block  # windows in whole blocks of this size, or token-exact (None)

    def masks(self, input_seq: Tensor, windows: Tensor):
        B, T = input_seq.shape
        docs = (input_seq == self.eot).cumsum(1)
        b = torch.arange(B, device=input_seq.device)[:, None, None, None]
        i = torch.arange(T, device=input_seq.device)
        return tuple(doc_causal_window(docs, windows[k], self.window_block)(b, None, i[None, None, :, None],
                                                                            i[None, None, None, :]) for k in range(2))

    def __call__(self, q, k, v, mask, scale):
        if q.dtype == torch.bfloat16:
            # Same math and mask, spelled out: CPU SDPA kernels take 1.5× longer in bf16 (tiny shapes,
            # fwd+bwd 27 vs 18 ms a layer on 2 cores).
            s = (q @ k.transpose(-1, -2)) * scale
            return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


class FlexAttention:
    """FlexAttention with block masks computed blockwise from document boundaries: O((T/block)²) work,
    never a T×T mask (48k² at the record shape)."""
    name = "flex_attention with block masks from document boundaries"

    def __init__(self, eot: int, block: int, block_windows: bool = False):
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
        self.BlockMask, self.flex, self.eot = BlockMask, flex_attention, eot
        self.block, self.block_windows = block, block_windows

    def masks(self, input_seq: Tensor, windows: Tensor):
        B, T = input_seq.shape
        n, bs = T // self.block, self.block
        docs = (input_seq == self.eot).cumsum(1)
        lo, hi = docs.view(B, n, bs)[..., 0], docs.view(B, n, bs)[..., -1]  # each block's first and last doc
        qb = torch.arange(n, device=input_seq.device)[:, None]
        kb = torch.arange(n, device=input_seq.device)[None, :]
        doc_any = (lo[:, :, None] <= hi[:, None, :]) & (hi[:, :, None] >= lo[:, None, :])  # some pair shares a doc
        doc_all = (lo[:, :, None] == hi[:, None, :]) & (hi[:, :, None] == lo[:, None, :])  # one doc throughout
        out = []
        for k in range(2):
            w = windows[k]
            if self.block_windows:  # a block pair is in the window or not: partial only on the diagonal, at docs
                near = near_all = (qb - kb) * bs < w
            else:
                near, near_all = (qb - kb) * bs - (bs - 1) < w, (qb - kb) * bs + (bs - 1) < w
            some = (qb >= kb) & near & doc_any  # some (q, kv) of the pair attends
            every = (qb > kb) & near_all & doc_all  # every (q, kv) attends: no mask_mod
            (pn, pi), (fn, fi) = self._ordered(some & ~every), self._ordered(every)
            mod = doc_causal_window(docs, w, bs if self.block_windows else None)
            out.append(self.BlockMask.from_kv_blocks(pn, pi, fn, fi, BLOCK_SIZE=bs, mask_mod=mod))
        return tuple(out)

    @staticmethod
    def _ordered(dense: Tensor):
        dense = dense[:, None]  # (B, heads=1, q blocks, kv blocks)
        return (dense.sum(-1, dtype=torch.int32),
                dense.to(torch.int8).argsort(dim=-1, descending=True, stable=True).to(torch.int32))

    def __call__(self, q, k, v, mask, scale):
        return self.flex(q, k, v, block_mask=mask, scale=scale)


def pick_attention(device: torch.device, h: Hyperparameters, say=print0):
    eot, block = h.eot_token, h.window_block
    attn = (FlexAttention(eot, block, h.block_windows) if device.type == "cuda"
            else DenseAttention(eot, block if h.block_windows else None))
    how = f"; windows of whole {block}-token key blocks" if h.block_windows else ""
    if device.type != "cuda":
        say(f"attention: CPU → {attn.name} (FlexAttention has no CPU backward){how}")
    else:
        say(f"attention: {attn.name}{how}")
    return attn


# -----------------------------------------------------------------------------------------------
# The model: rotary, QK-norm, ReLU², value embeddings, U-net skips, logit softcap, untied head.

def norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Linear):
    """Weights kept in fp32 for the optimizer, cast to the activations' dtype for the matmul."""

    def __init__(self, in_features, out_features, zero_init=False):
        super().__init__(in_features, out_features, bias=False)
        bound = (3 ** 0.5) * 0.5 * in_features ** -0.5
        with torch.no_grad():
            self.weight.zero_() if zero_init else self.weight.uniform_(-bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight.type_as(x))


class Rotary(nn.Module):
    """Rotary embeddings on half the head dims; the other half carries no position (frequency 0)."""

    def __init__(self, head_dim: int, max_seq_len: int):
        super().__init__()
        quarter = head_dim // 4
        freq = (1 / 1024) ** torch.linspace(0, 1, quarter)
        freq = torch.cat([freq, freq.new_zeros(head_dim // 2 - quarter)])
        theta = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freq)
        self.register_buffer("cos", theta.cos(), persistent=False)
        self.register_buffer("sin", theta.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, H, D)
        T = x.size(1)
        cos, sin = self.cos[None, :T, None, :], self.sin[None, :T, None, :]
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, max_seq_len: int, scale: float):
        super().__init__()
        self.num_heads, self.head_dim, self.scale = num_heads, dim // num_heads, scale
        hdim = num_heads * self.head_dim
        # Q, K and V as one (3, hdim, dim) parameter: one matmul, and Muon orthogonalises each.
        bound = (3 ** 0.5) * 0.5 * dim ** -0.5
        self.qkv_w = nn.Parameter(torch.empty(3, hdim, dim).uniform_(-bound, bound))
        self.lambdas = nn.Parameter(torch.tensor([0.5, 0.5]))  # mixes v with the value embedding
        self.rotary = Rotary(self.head_dim, max_seq_len)
        self.proj = CastedLinear(hdim, dim, zero_init=True)

    def forward(self, x: Tensor, ve: Tensor | None, mask, attend) -> Tensor:
        B, T = x.shape[:2]
        q, k, v = F.linear(x, self.qkv_w.flatten(end_dim=1).type_as(x)).view(B, T, 3, self.num_heads, self.head_dim).unbind(2)
        q, k = self.rotary(norm(q)), self.rotary(norm(k))
        if ve is not None:
            v = self.lambdas[0] * v + self.lambdas[1] * ve.view_as(v)
        else:
            v = self.lambdas[0] * v
        y = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int, relu2_linear=None):
        super().__init__()
        self.fc = CastedLinear(dim, ratio * dim)
        self.proj = CastedLinear(ratio * dim, dim, zero_init=True)
        self.relu2_linear = relu2_linear  # the fused kernel, or None: the torch path

    def forward(self, x: Tensor) -> Tensor:
        if self.relu2_linear is not None:
            return self.proj(self.relu2_linear(x, self.fc.weight.type_as(x)))
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, h: Hyperparameters, max_seq_len: int, relu2_linear=None):
        super().__init__()
        self.attn = CausalSelfAttention(h.model_dim, h.num_heads, max_seq_len, h.attn_scale)
        self.mlp = MLP(h.model_dim, h.mlp_ratio, relu2_linear)
        self.lambdas = nn.Parameter(torch.tensor([1.0, 0.0]))  # mixes the residual with x0

    def forward(self, x, x0, ve, mask, attend, skip=None, skip_weight=None):
        if skip is not None:  # the U-net's skip, added here so that it runs inside the block's compiled graph
            x = x + skip_weight * skip
        x = self.lambdas[0] * x + self.lambdas[1] * x0
        x = x + self.attn(norm(x), ve, mask, attend)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    """`attend`: DenseAttention or FlexAttention (None: a model whose forward never runs, e.g. to count
    parameters); `act_dtype`: the activations' (bf16 on CUDA), the weights stay fp32; `kernels`: the Triton
    kernels chosen at start-up (`pick_kernels`), or NoKernels() for the torch path."""

    def __init__(self, h: Hyperparameters, max_seq_len: int, attend=None, act_dtype: torch.dtype = torch.float32,
                 kernels=NoKernels()):
        super().__init__()
        self.h, self.attend, self.act_dtype, self.kernels = h, attend, act_dtype, kernels
        self.embed = nn.Embedding(h.vocab_size, h.model_dim)
        # Value embeddings: extra token embeddings added to the values of the first and last layers.
        self.value_embeds = nn.ModuleList(nn.Embedding(h.vocab_size, h.model_dim) for _ in range(h.num_value_embeds))
        self.blocks = nn.ModuleList(Block(h, max_seq_len, kernels.relu2_linear) for _ in range(h.num_layers))
        # U-net: the first half's outputs are added, weighted, to the second half's inputs in reverse.
        self.skip_weights = nn.Parameter(torch.ones(h.num_layers // 2))
        self.lm_head = CastedLinear(h.model_dim, h.vocab_size, zero_init=True)
        self.head_w_max = head_weight_bound(h)  # the FP8 head's static weight scale

    def layer_value_embeds(self, input_seq: Tensor):
        n, L = self.h.num_value_embeds, self.h.num_layers
        ve = [e(input_seq) for e in self.value_embeds]
        return ve + [None] * (L - 2 * n) + ve  # layers 0..n-1 and L-n..L-1 share the same n tables

    def forward(self, input_seq: Tensor, target_seq: Tensor, windows: Tensor, reduction: str = "mean") -> Tensor:
        """The loss of target_seq given input_seq; `windows` = (long, short) attention windows in tokens, a
        tensor, so every window of the schedule runs through one compiled graph."""
        (long_mask, short_mask), x0, ves = self.stem(input_seq, windows)
        x, skips, half = x0, [], self.h.num_layers // 2
        for i, block in enumerate(self.blocks):
            skip = skips.pop() if i >= half and skips else None
            mask = short_mask if i in self.h.short_window_layers else long_mask
            x = block(x, x0, ves[i], mask, self.attend, skip, None if skip is None else self.skip_weights[i - half])
            if i < half:
                skips.append(x)
        return self.head(x, target_seq, reduction)

    def stem(self, input_seq: Tensor, windows: Tensor):
        """The masks, the normed embedding x0 and each layer's value embedding (or None)."""
        masks = self.attend.masks(input_seq, windows)
        x0 = norm(self.embed(input_seq).to(self.act_dtype))
        return masks, x0, [ve if ve is None else ve.to(self.act_dtype) for ve in self.layer_value_embeds(input_seq)]

    def head(self, x: Tensor, target_seq: Tensor, reduction: str) -> Tensor:
        x = norm(x)
        c, targets = self.h.logit_softcap, target_seq.reshape(-1)
        if self.kernels.fp8_head is not None and self.training:  # FP8 trains; validation is judged in bf16
            return self.kernels.fp8_head(x.view(-1, x.size(-1)), self.lm_head.weight, targets, c, reduction,
                                    w_max=self.head_w_max)
        logits = self.lm_head(x).view(-1, self.h.vocab_size)
        if self.kernels.softcap_ce is not None:  # never materialises the fp32 logits
            return self.kernels.softcap_ce(logits, targets, c, reduction)
        logits = c * torch.tanh(logits.float() / c)
        return F.cross_entropy(logits, targets, reduction=reduction)


# -----------------------------------------------------------------------------------------------
# Optimizers, sharded over ranks: Muon for the hidden matrices, Adam for embeddings, head and scalars.
# Each rank owns a shard of each optimizer's work and state: Muon whole matrices (grouped by shape, so
# every rank orthogonalises the same number), Adam a slice of every flat bucket. Gradients are
# reduce-scattered (averaged) unit by unit from backward hooks as soon as a unit's last gradient lands
# on the step's last micro-batch, so communication starts while the backward (or the optimizer's other
# units) still runs; each rank updates its shard, then the updated parameters are all-gathered. Gradients
# travel in fp32 (Adam's masters and Muon's momentum add them up); Muon's updates travel in the activation
# dtype (bf16 on CUDA), exactly what Polar Express produced. One code path over NCCL and gloo; one rank skips the collectives.

# Polar Express (Amsel et al., 2025): a different odd quintic per iteration, minimax-optimal for
# moving every singular value in (0, 1] towards 1; five of them leave σ in ≈ [0.85, 1.15] for any
# σ ≥ 1e-3 of the normalised input, where the fixed Newton–Schulz quintic leaves ≈ [0.47, 1.2].
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


ADAM_BUCKET = 48 << 20  # elements per Adam bucket (fp32): big enough to fill the links, few enough to overlap


def orthogonalize(G: Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16, xxt=None) -> Tensor:
    """≈ U Vᵀ of G = U S Vᵀ over the last two dims (batched), in `dtype`: the iteration tolerates bf16's
    rounding (the trainer passes the activation dtype: fp32 on a CPU without bf16 arithmetic, where emulated
    bf16 runs ~150x slower). `xxt`: the symmetric-product kernel, or None for torch's matmuls."""
    X = G.to(dtype)
    transposed = X.size(-2) > X.size(-1)
    if transposed:  # iterate on the short side: X Xᵀ is the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-7)  # Frobenius ≥ spectral: σ ≤ 1/1.01
    for a, b, c in POLAR_EXPRESS[:steps]:
        if xxt is not None:  # symmetric products: half the blocks, and b·A + c·A·A in one pass
            A = xxt(X)
            B = xxt(A, c, A, b)
        else:
            A = X @ X.mT
            B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if transposed else X


class Comm:
    """The step's collectives, async; with one rank each is a local copy (or nothing)."""

    def __init__(self):
        self.rank, self.world = RANK, WORLD_SIZE

    def reduce_scatter(self, out: Tensor, inp: Tensor):
        """out = this rank's 1/world slice of inp averaged over ranks (a Work to wait on, or None)."""
        if self.world == 1:
            out.copy_(inp)
            return None
        return dist.reduce_scatter_tensor(out, inp, op=dist.ReduceOp.AVG, async_op=True)

    def all_gather(self, out: Tensor, inp: Tensor):
        if self.world == 1:
            out.copy_(inp)
            return None
        return dist.all_gather_into_tensor(out, inp, async_op=True)

    def all_reduce_mean(self, t: Tensor):
        return None if self.world == 1 else dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True)


def _wait(work) -> None:
    if work is not None:
        work.wait()


@dataclass(slots=True)
class MuonUnit:
    """One shape group of Muon's matrices (of one layer chunk): reduce-scattered, orthogonalised and
    all-gathered as one. `items`: (parameter, index into a stacked one or None, stored transposed)."""
    shape: tuple[int, int]  # (short side, long side)
    items: list[tuple[nn.Parameter, int | None, bool]]
    k: int  # matrices per rank (the group padded to k × world)
    params: list[nn.Parameter]
    grads: Tensor  # (k × world, *shape): every item's gradient, packed for the reduce-scatter
    shard: Tensor  # (k, *shape): this rank's averaged gradients
    momentum: Tensor  # (k, *shape)
    updates: Tensor  # (k × world, *shape) in the Polar Express dtype: the all-gathered updates


@dataclass(slots=True)
class AdamUnit:
    """One flat bucket of Adam's parameters (one lr group): `flat` holds the parameters (they are views of
    it), `grads` their packed gradients; `shard`, `m`, `v` and `new` are this rank's 1/world slice. A bucket
    gathered in a low dtype keeps this rank's fp32 `master` slice and gathers into `flat_low`."""
    params: list[nn.Parameter]
    group: int
    flat: Tensor
    grads: Tensor
    shard: Tensor
    m: Tensor
    v: Tensor
    new: Tensor
    master: Tensor | None = None
    flat_low: Tensor | None = None


class Sharded:
    """What both optimizers share: param_groups the trainer sets lr (and momentum) on, units that are
    reduce-scattered when their last gradient of the step is in, and `arm(last)` to say whether this
    micro-batch's backward is the step's last (earlier ones only accumulate)."""

    def __init__(self, comm: Comm, groups: list[dict]):
        self.comm, self.param_groups, self.armed, self.pending = comm, groups, False, {}
        for g in groups:
            g["initial_lr"] = g["lr"]

    def arm(self, last: bool) -> None:
        self.armed = last
        if last:
            self.ready = {u: 0 for u in range(len(self.units))}

    def _hook(self, unit: int):
        def on_grad(_p):
            if not self.armed:
                return
            self.ready[unit] += 1
            if self.ready[unit] == len(self.units[unit].params):  # the unit's last gradient of the step
                self.pending[unit] = self._reduce(unit)
        return on_grad

    def _register(self) -> None:
        for u, unit in enumerate(self.units):
            for p in unit.params:
                p.register_post_accumulate_grad_hook(self._hook(u))

    def _reduced(self, unit: int):
        """Wait for the unit's reduce-scatter (started by the hook, or now if no hook fired: e.g. a
        parameter the step did not reach, whose gradient is then zero)."""
        work = self.pending.pop(unit) if unit in self.pending else self._reduce(unit)
        _wait(work)

    def wait(self) -> None:
        """Collectives `step` left in flight (Adam's all-gathers); nothing by default."""

    def zero_grad(self) -> None:
        for unit in self.units:
            for p in unit.params:
                p.grad = None

    def state_dict(self) -> dict:
        return {"state": {k: v.clone() for k, v in self._state().items()}, "groups": [dict(g) for g in self.param_groups]}

    def load_state_dict(self, sd: dict) -> None:
        for k, v in self._state().items():
            v.copy_(sd["state"][k])
        for g, saved in zip(self.param_groups, sd["groups"]):
            g.update(saved)


class Muon(Sharded):
    """Momentum (Nesterov), then the update orthogonalised and scaled by √max(1, rows/cols).

    The work item is a matrix: a 2-D parameter, or each of a stacked (n, rows, cols) parameter's n (Q, K
    and V). Items are grouped by shape, the long side last (a tall matrix is iterated transposed
    anyway), padded to a multiple of the world size, and rank r owns a contiguous 1/world of each
    group: at gpt2-small 48 matrices of 768×768 and 24 of 768×3072, 6 and 3 per rank of 8. On several ranks
    the groups are also split by layer chunk (`chunk_of`; layers_per_unit): gpt2-small on 8 ranks has 3
    chunks of 4 layers (16 and 8 matrices: 2 and 1 per rank), so the last chunk's reduce-scatter starts while
    the first 8 layers' backward still runs. A group's
    gradients are reduce-scattered as one (n_pad, rows, cols) tensor; its owners' momentum, Polar
    Express (batched, in `ns_dtype`, with the `xxt` kernel if given) and updates are theirs alone; the
    updates are all-gathered in `ns_dtype`."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float = 0.0, ns_steps: int = 5,
                 comm: Comm | None = None, chunk_of: dict | None = None, ns_dtype: torch.dtype = torch.bfloat16,
                 xxt=None):
        comm = comm or Comm()
        super().__init__(comm, [dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps)])
        self.ns_dtype, self.xxt = ns_dtype, xxt
        by_shape: dict[tuple, list] = {}
        for p in params:
            for i in (range(p.size(0)) if p.ndim == 3 else [None]):
                r, c = p.shape[-2:]
                chunk = (chunk_of or {}).get(id(p), 0)
                by_shape.setdefault((chunk, min(r, c), max(r, c)), []).append((p, i, r > c))
        self.units: list[MuonUnit] = []
        # the last layers' chunk first: its gradients are the backward's first, its reduce-scatter starts first
        for (_, r, c), items in sorted(by_shape.items(), key=lambda e: (-e[0][0], -e[0][1] * e[0][2])):
            k = -(-len(items) // comm.world)  # items per rank
            n = k * comm.world
            dev, dt = items[0][0].device, items[0][0].dtype  # fp32 masters (fp64 in tests)
            self.units.append(MuonUnit(shape=(r, c), items=items, k=k, params=list(dict.fromkeys(p for p, _, _ in items)),
                                       grads=torch.zeros(n, r, c, device=dev, dtype=dt),
                                       shard=torch.zeros(k, r, c, device=dev, dtype=dt),
                                       momentum=torch.zeros(k, r, c, device=dev, dtype=dt),
                                       updates=torch.zeros(n, r, c, device=dev, dtype=ns_dtype)))
        self.ns = orthogonalize
        if comm.world > 1:
            self._register()

    def compile_ns(self) -> None:
        """Polar Express compiled (CUDA): one graph per group shape, built in the warm-up."""
        self.ns = torch.compile(orthogonalize, dynamic=False)

    def _reduce(self, unit: int):
        u = self.units[unit]
        for j, (p, i, t) in enumerate(u.items):
            g = p.grad if i is None or p.grad is None else p.grad[i]
            if g is None:
                u.grads[j].zero_()
            else:
                u.grads[j].copy_(g.mT if t else g)
        return self.comm.reduce_scatter(u.shard, u.grads)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        gathers = []
        for unit, u in enumerate(self.units):
            self._reduced(unit)
            u.momentum.lerp_(u.shard, 1 - g["momentum"])
            upd = self.ns(u.shard.lerp(u.momentum, g["momentum"]), g["ns_steps"], self.ns_dtype, self.xxt)  # Nesterov
            gathers.append(self.comm.all_gather(u.updates, upd))
        for u, work in zip(self.units, gathers):  # gathers overlap the later groups' math
            _wait(work)
            for (p, i, t), upd in zip(u.items, u.updates):
                w = p.data if i is None else p.data[i]
                w.mul_(1 - g["lr"] * g["weight_decay"])
                w.add_(upd.mT if t else upd, alpha=-g["lr"] * max(1.0, w.size(-2) / w.size(-1)) ** 0.5)

    def _state(self) -> dict:
        return {f"momentum{k}": u.momentum for k, u in enumerate(self.units)}


class Adam(Sharded):
    """Adam on flat buckets, each sharded over ranks: a bucket's parameters (one lr group, whole
    parameters, up to ADAM_BUCKET elements) become views of one fp32 buffer and their gradients are packed
    into another, so a reduce-scatter hands each rank the averaged gradient of its 1/world slice, the rank
    updates that slice (its moments are the only ones it keeps), and an all-gather refreshes every copy
    in place. The arithmetic is torch.optim.Adam's (bias-corrected, eps added to the corrected √v).

    `step` launches the all-gathers and returns; `wait` (after Muon's step) waits for them, so Muon's Polar
    Express runs while they travel. A group with `gather_dtype` (the embeddings: bf16 on CUDA) is gathered
    in it, half the bytes: the forward reads them only through a cast to that dtype, so it sees the same
    values; the owner keeps its slice's fp32 master. Gradients are reduced in fp32 (a bf16 sum of 8 ranks'
    gradients would round each partial sum)."""

    def __init__(self, groups: list[dict], betas: tuple, eps: float, comm: Comm | None = None):
        comm = comm or Comm()
        super().__init__(comm, [{"lr": g["lr"]} for g in groups])
        self.betas, self.eps, self.t, self.gathers = betas, eps, 0, []
        self.units: list[AdamUnit] = []
        self.gather_dtype = [g.get("gather_dtype") or torch.float32 for g in groups]
        for gi, g in enumerate(groups):
            bucket: list = []
            for p in g["params"]:
                if bucket and sum(q.numel() for q in bucket) + p.numel() > ADAM_BUCKET:
                    self._bucket(bucket, gi)
                    bucket = []
                bucket.append(p)
            if bucket:
                self._bucket(bucket, gi)
        if comm.world > 1:
            self._register()

    def _bucket(self, params: list, group: int) -> None:
        w, dev = self.comm.world, params[0].device
        n = sum(p.numel() for p in params)
        size = -(-n // w) * w
        flat, grads = torch.zeros(size, device=dev), torch.zeros(size, device=dev)
        o = 0
        for p in params:  # the parameters become views of the bucket's buffer: the all-gather lands in them
            flat[o:o + p.numel()].copy_(p.data.view(-1))
            p.data = flat[o:o + p.numel()].view_as(p)
            o += p.numel()
        s = size // w
        unit = AdamUnit(params=params, group=group, flat=flat, grads=grads, shard=torch.zeros(s, device=dev),
                        m=torch.zeros(s, device=dev), v=torch.zeros(s, device=dev), new=torch.zeros(s, device=dev))
        low = self.gather_dtype[group]
        if w > 1 and low != torch.float32:  # gathered in `low`; this rank's slice keeps an fp32 master
            r = self.comm.rank
            unit.master, unit.new = flat[r * s:(r + 1) * s].clone(), torch.zeros(s, device=dev, dtype=low)
            unit.flat_low = torch.zeros(size, device=dev, dtype=low)
        self.units.append(unit)

    def _reduce(self, unit: int):
        u, o = self.units[unit], 0
        for p in u.params:
            n = p.numel()
            if p.grad is None:
                u.grads[o:o + n].zero_()
            else:
                u.grads[o:o + n].copy_(p.grad.view(-1))
            o += n
        return self.comm.reduce_scatter(u.shard, u.grads)

    @torch.no_grad()
    def step(self) -> None:
        (b1, b2), rank = self.betas, self.comm.rank
        self.t += 1
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for unit, u in enumerate(self.units):
            self._reduced(unit)
            lr, g, s = self.param_groups[u.group]["lr"], u.shard, u.shard.numel()
            u.m.lerp_(g, 1 - b1)
            u.v.mul_(b2).addcmul_(g, g, value=1 - b2)
            mine = u.flat[rank * s:(rank + 1) * s]
            denom = (u.v.sqrt() / bc2 ** 0.5).add_(self.eps)
            if self.comm.world == 1:
                mine.addcdiv_(u.m, denom, value=-lr / bc1)
            elif u.master is not None:
                u.master.addcdiv_(u.m, denom, value=-lr / bc1)
                u.new.copy_(u.master)
                self.gathers.append((u, self.comm.all_gather(u.flat_low, u.new)))
            else:
                torch.addcdiv(mine, u.m, denom, value=-lr / bc1, out=u.new)
                self.gathers.append((u, self.comm.all_gather(u.flat, u.new)))

    @torch.no_grad()
    def wait(self) -> None:
        """The step's all-gathers, landed (called after Muon's step: they overlapped its math)."""
        for u, work in self.gathers:
            _wait(work)
            if u.master is not None:
                u.flat.copy_(u.flat_low)
        self.gathers = []

    def _state(self) -> dict:
        out = {}
        for k, u in enumerate(self.units):
            out[f"m{k}"], out[f"v{k}"] = u.m, u.v
            if u.master is not None:
                out[f"master{k}"] = u.master
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "t": self.t}

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        self.t = sd["t"]


def layers_per_unit(layers: int, world: int) -> int:
    """Layers per Muon chunk: W/2 (each layer has 4 square and 2 rectangular matrices, so a chunk of W/2
    layers gives every rank 2 and 1 of them), when that leaves ≥ 2 chunks; one chunk on one rank (nothing to
    overlap) or when the layers do not split so."""
    per = world // 2 if world % 2 == 0 else world
    return per if world > 1 and layers % per == 0 and layers // per >= 2 else layers


def optimizer_step(optimizers: list, step: int, h: Hyperparameters) -> None:
    """The step's schedules, then Adam's step (its all-gathers left in flight), Muon's step (its reduce-scatter
    waits, Polar Express, its own all-gathers) while they travel, and only then the wait for Adam's."""
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * lr_multiplier(step, h)
    for g in optimizers[1].param_groups:
        g["momentum"] = muon_momentum(step, h)
    for opt in optimizers:
        opt.step()
        opt.zero_grad()
    for opt in optimizers:
        opt.wait()


def build_optimizers(model: GPT, h: Hyperparameters, comm: Comm | None = None):
    """Adam for the embeddings, head and scalars; Muon for the blocks' matrices, its Polar Express in the model's
    activation dtype and with the model's xxt kernel (if chosen)."""
    comm = comm or Comm()
    hidden = [p for n, p in model.blocks.named_parameters() if p.ndim >= 2]
    per = layers_per_unit(len(model.blocks), comm.world)
    chunk_of = {id(p): i // per for i, b in enumerate(model.blocks) for p in b.parameters()}
    scalars = [p for n, p in model.named_parameters() if p.ndim < 2]
    embeds = [model.embed.weight, *(e.weight for e in model.value_embeds)]
    head = [model.lm_head.weight]
    assert len(hidden) + len(scalars) + len(embeds) + len(head) == len(list(model.parameters()))
    adam = Adam([dict(params=embeds, lr=h.embed_lr, gather_dtype=model.act_dtype), dict(params=head, lr=h.head_lr),
                 dict(params=scalars, lr=h.scalar_lr)], betas=h.adam_betas, eps=1e-10, comm=comm)
    muon = Muon(hidden, lr=h.muon_lr, momentum=h.muon_momentum, weight_decay=h.muon_weight_decay,
                ns_steps=h.ns_steps, comm=comm, chunk_of=chunk_of, ns_dtype=model.act_dtype, xxt=model.kernels.xxt)
    return [adam, muon]


# -----------------------------------------------------------------------------------------------
# Data: shards in the community format; training batches aligned to document starts.

SHARD_MAGIC, SHARD_VERSION, HEADER_BYTES = 20240520, 1, 256 * 4


def load_shard(path: str) -> np.ndarray:
    """Memory-maps a shard after checking its header against its size."""
    remedy = "regenerate it (`speedrun data synthetic`, or `speedrun data fineweb` for FineWeb shards)"
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ValueError(f"{path}: truncated header ({size} bytes < {HEADER_BYTES}); {remedy}")
    header = np.fromfile(path, dtype="<i4", count=256)
    if header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise ValueError(f"{path}: bad magic/version {header[0]}/{header[1]} (want {SHARD_MAGIC}/{SHARD_VERSION}); {remedy}")
    n = int(header[2])
    if size != HEADER_BYTES + 2 * n:
        raise ValueError(f"{path}: header says {n} tokens but the file holds {(size - HEADER_BYTES) / 2:g}; {remedy}")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))


def find_files(data_dir: str, pattern: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(data_dir, pattern)))
    if not files:
        raise FileNotFoundError(f"no {pattern} in {data_dir}: run `speedrun data synthetic` (tiny) or `speedrun data fineweb`")
    return files


def train_batches(files: list[str], h: Hyperparameters, device: torch.device):
    """Yields (inputs, targets) micro-batches of this rank; every sequence starts at a document.

    Every rank walks the same sequence of start positions, so a step covers the same
    grad_accum × batch_seqs sequences at any world size; rank r takes micro-batches r, r+W, ….
    """
    n_seqs, T = h.grad_accum * h.batch_seqs, h.seq_len
    epoch, fi, pos, tokens = 0, 0, 0, load_shard(files[0])
    bos = np.flatnonzero(tokens == h.eot_token)
    while True:
        seqs = []  # slices, not positions: a batch may span two shards
        while len(seqs) < n_seqs:
            j = np.searchsorted(bos, pos)
            if j == len(bos) or bos[j] + T + 1 > len(tokens):  # shard exhausted: its tail is skipped
                fi += 1
                if fi == len(files):
                    fi, epoch = 0, epoch + 1
                    print0(f"data: all {len(files)} train shards seen; epoch {epoch} begins")
                tokens, pos = load_shard(files[fi]), 0
                bos = np.flatnonzero(tokens == h.eot_token)
                continue
            seqs.append(tokens[bos[j]:bos[j] + T + 1])
            pos = bos[j] + T
        for micro in range(RANK, h.grad_accum, WORLD_SIZE):
            rows = np.stack(seqs[micro * h.batch_seqs:(micro + 1) * h.batch_seqs])
            buf = to_device(torch.from_numpy(rows.astype(np.int64)), device)
            yield buf[:, :-1], buf[:, 1:]


def val_sequences(tokens: np.ndarray, n: int, seq_len: int, eot: int) -> list[tuple[int, int]]:
    """Cuts predictions 1..n of the val stream into spans [p, q) of at most seq_len, ending at document
    starts where one exists: every val token is predicted exactly once, from its document's start
    (documents longer than seq_len excepted), as in training. Contiguous chunks would instead start
    most of their sequences inside a document the model never saw begin."""
    starts = np.flatnonzero(tokens[:n + 1] == eot)
    spans, p = [], 0
    while p < n:
        limit = min(p + seq_len, n)
        j = np.searchsorted(starts, limit, side="right") - 1  # the last document start ≤ limit
        q = int(starts[j]) if limit < n and starts[j] > p else limit
        spans.append((p, q))
        p = q
    return spans


def val_batches(files: list[str], h: Hyperparameters, device: torch.device):
    """The first val_tokens predictions, as document-aligned sequences padded to val_seq_len (padding
    targets are -100, ignored by the loss); rank r takes sequences r, r+W, …. The last batch is padded
    with empty rows to val_batch_seqs: one shape, so the compiled model compiles validation once."""
    tokens = np.concatenate([load_shard(f) for f in files])
    assert len(tokens) >= h.val_tokens + 1, f"val shards hold {len(tokens)} tokens, need {h.val_tokens + 1}"
    spans = val_sequences(tokens, h.val_tokens, h.val_seq_len, h.eot_token)[RANK::WORLD_SIZE]
    for i in range(0, len(spans), h.val_batch_seqs):
        batch = spans[i:i + h.val_batch_seqs]
        x = np.full((h.val_batch_seqs, h.val_seq_len), h.eot_token, dtype=np.int64)
        y = np.full((h.val_batch_seqs, h.val_seq_len), -100, dtype=np.int64)
        for row, (p, q) in enumerate(batch):
            x[row, :q - p], y[row, :q - p] = tokens[p:q], tokens[p + 1:q + 1]
        yield to_device(torch.from_numpy(x), device), to_device(torch.from_numpy(y), device)


def sha256_file(path: str) -> str:
    d = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            d.update(chunk)
    return d.hexdigest()


def sha256_files(files: list[str]) -> str:
    """One hash for a set of files: sha256 over 'name sha256' lines, in sorted order."""
    lines = [f"{os.path.basename(f)} {sha256_file(f)}\n" for f in sorted(files)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# -----------------------------------------------------------------------------------------------
# Schedules: a function of the step alone, so warm-up and resets cannot shift them.

def lr_multiplier(step: int, h: Hyperparameters) -> float:
    x = step / h.num_steps
    if x < 1 - h.cooldown_frac:
        return 1.0
    w = (1 - x) / h.cooldown_frac
    return w + (1 - w) * h.final_lr_frac


def head_weight_bound(h: Hyperparameters) -> float:
    """A bound on |lm_head weight| over the whole run, for the FP8 head's static scale: it starts at zero and
    Adam moves an element by about lr a step at most (|m̂/√v̂| ≲ 1 for β1 = 0.8 ≤ 1 − √(1 − β2)), so the sum of
    the schedule's lr, with 1.5× margin. Loose (weights stay far below it) but never overflowed; gpt2-small: ≈17."""
    return 1.5 * h.head_lr * sum(lr_multiplier(s, h) for s in range(h.num_steps))


def muon_momentum(step: int, h: Hyperparameters) -> float:
    frac = min(step / max(h.momentum_warmup_steps, 1), 1)
    return (1 - frac) * h.muon_momentum_min + frac * h.muon_momentum


def attention_windows(step: int, h: Hyperparameters) -> tuple[int, int]:
    """(long, short) window in tokens, grown linearly and rounded to whole blocks."""
    w = h.window_min + (h.window_max - h.window_min) * min(step / h.num_steps, 1)
    long = max(h.window_block, int(round(w / h.window_block)) * h.window_block)
    if h.block_windows:  # half as many whole blocks
        return long, max(1, long // h.window_block // 2) * h.window_block
    return long, max(h.window_block, long // 2)


# -----------------------------------------------------------------------------------------------
# The run log: source | environment | run output | RESULT.

SEPARATOR = "=" * 100


def source_files() -> dict[str, str]:
    """This file and every kernels/*.py it imported, as run, keyed by path relative to the repo."""
    root = Path(__file__).resolve().parent
    files = {"train_gpt.py": Path(__file__).read_text()}
    for name, mod in sorted(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if (name == "kernels" or name.startswith("kernels.")) and path and Path(path).resolve().is_relative_to(root):
            files[str(Path(path).resolve().relative_to(root))] = Path(path).read_text()
    return files


def environment(device: torch.device) -> list[str]:
    lines = [f"Running Python {sys.version}",
             f"Running PyTorch {torch.__version__} compiled for CUDA {torch.version.cuda}"]
    try:
        import triton
        lines.append(f"Running Triton version {triton.__version__}")
    except ImportError:
        lines.append("Running Triton version none (not installed)")
    if device.type == "cuda":
        try:
            lines.append(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout.rstrip())
        except (OSError, subprocess.TimeoutExpired) as e:
            lines.append(f"nvidia-smi: unavailable ({e}); torch sees {torch.cuda.device_count()}× {torch.cuda.get_device_name(device)}")
    else:
        lines.append(f"CPU: {cpu_name()} cores:{os.cpu_count()} torch_threads:{torch.get_num_threads()} platform:{platform.platform()}")
    return lines


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def host_peak_mib(device: torch.device) -> int:
    """The largest resident set of any rank's process so far (MiB), over every rank (a collective)."""
    rss = torch.tensor(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10, device=device)  # KiB on Linux
    if WORLD_SIZE > 1:
        dist.all_reduce(rss, op=dist.ReduceOp.MAX)
    return int(rss)


def peak_memory(device: torch.device) -> tuple[int, int]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) >> 20, torch.cuda.max_memory_reserved(device) >> 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10  # KiB on Linux
    return rss, rss


# -----------------------------------------------------------------------------------------------
# The loop.

def step_cost(h: Hyperparameters) -> tuple[float, float]:
    """Model FLOPs of one step (forward + backward = 3× the forward's) and the bytes it must move at least.

    FLOPs: every matmul 2·m·n·k — per token, 12·d² per layer (q, k, v, o: 4d²; MLP 8d²) and d·V for the
    head; attention 4·w·d per token and layer (QKᵀ and AV over a window of w keys; the schedule's mean
    window, each layer its long or short one: an upper bound, as documents end earlier). Bytes: the fp32
    weights read twice (forward, backward) and their gradients written and read, Adam's two moments read
    and written and Muon's momentum, and the bf16 logits written, read by the loss, their gradient written
    and read by the two head products."""
    T, d, L, V = h.seq_len * h.batch_seqs * h.grad_accum, h.model_dim, h.num_layers, h.vocab_size
    windows = [attention_windows(s, h) for s in range(0, h.num_steps + 1, max(1, h.num_steps // 64))]
    mean_long, mean_short = (sum(w[k] for w in windows) / len(windows) for k in (0, 1))
    short = len(h.short_window_layers)
    attn = 4 * d * T * (mean_long * (L - short) + mean_short * short)
    flops = 3 * (2 * T * (12 * d * d * L + d * V) + attn)
    hidden = 12 * d * d * L
    adam = V * d * (2 + h.num_value_embeds)
    nbytes = 4 * (hidden + adam) * 4 + adam * 16 + hidden * 8 + 2 * T * V * 4
    return float(flops), float(nbytes)


class _FlexFootprint(torch.autograd.Function):
    """FlexAttention's memory without running it (it has no CPU backward): saves q, k, v, the output and the
    log-sum-exp, as its kernels do; the backward returns dq, dk, dv."""

    @staticmethod
    def forward(ctx, q, k, v):
        out, lse = torch.empty_like(q), q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


class _FlexFootprintAttention(FlexAttention):
    """FlexAttention's block masks, and its memory footprint in place of its kernel."""

    def __call__(self, q, k, v, mask, scale):
        return _FlexFootprint.apply(q, k, v)


class _LocalComm:
    """Rank 0 of `world` with the collectives' buffers but no peers: what the memory estimate needs."""

    def __init__(self, world: int):
        self.rank, self.world = 0, world

    def reduce_scatter(self, out, inp):
        out.copy_(inp.reshape(-1)[:out.numel()].view_as(out))

    def all_gather(self, out, inp):
        out.view(self.world, -1).copy_(inp.view(1, -1))

    def all_reduce_mean(self, t):
        return None


def memory_estimate(h: Hyperparameters, world: int, cuda_path: bool = True) -> dict:
    """Peak memory of one rank over one training step (a micro-batch's forward and backward with the
    reduce-scatters, then the optimizer step) at the preset's shapes, on `world` ranks, without allocating
    anything: the model, optimizers and step run on fake tensors (FakeTensorMode) under torch's MemTracker.
    The CUDA path: bf16 activations, FlexAttention's footprint, the Triton kernels' (fake) outputs and
    Polar Express in bf16; the CPU path: fp32, dense attention masks, no kernels. Allocator slack and
    torch.compile's own buffers are not in it (Inductor frees intermediates earlier than eager does)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    kernels = NoKernels()
    if cuda_path:
        try:
            from kernels.capability import adopt
            kernels = adopt(["softcap_ce", "relu2_linear"])  # xxt is no custom op (no fake): torch's X Xᵀ, same sizes
        except ImportError:  # no kernels/ or no Triton here: the torch path's (larger) footprint
            pass
    attend = (_FlexFootprintAttention(h.eot_token, h.window_block, h.block_windows) if cuda_path
              else DenseAttention(h.eot_token, h.window_block if h.block_windows else None))
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = GPT(h, max(h.seq_len, h.val_seq_len), attend, torch.bfloat16 if cuda_path else torch.float32, kernels)
        tracker = MemTracker()
        tracker.track_external(model)
        x = torch.randint(0, h.vocab_size, (h.batch_seqs, h.seq_len))
        with tracker:
            optimizers = build_optimizers(model, h, _LocalComm(world))  # inside: its state is counted
            for opt in optimizers:
                opt.arm(True)
            model(x, x, torch.tensor(attention_windows(h.num_steps, h))).backward()
            optimizer_step(optimizers, 0, h)
        peak = tracker.get_tracker_snapshot("peak")
    used = kernels.names()
    per_device = {str(dev): {str(k).rsplit(".", 1)[-1].lower(): int(v) for k, v in kinds.items()} for dev, kinds in peak.items()}
    total = max(d.get("total", 0) for d in per_device.values())
    return {"preset_track": h.track, "ranks": world, "path": "cuda" if cuda_path else "cpu", "kernels": used,
            "peak_bytes": total, "peak_gib": round(total / 2 ** 30, 2), "by_kind": per_device}


def node_peak(device: torch.device) -> float | None:
    """The device's dense bf16 peak in TFLOP/s (kernels/peaks.py's table), or None (a CPU, an unknown GPU)."""
    try:
        from kernels.peaks import peak
    except ImportError:
        return None
    return peak(device, "bf16")


def open_log(args, h: Hyperparameters, run_id: str, device: torch.device, sources: dict, node: dict, data: tuple,
             notes: list[str], model: GPT, optimizers: list, num_steps: int) -> dict:
    """Rank 0 opens <log_dir>/<run_id>.txt and writes its head: the sources as run, the environment (versions,
    code and data hashes, the node's figures), the hyperparameters, then, to the console too, the device
    choices made at start-up (`notes`) and every derived quantity, once. Returns what RESULT repeats."""
    global LOG
    data_dir, train_files, val_files = data
    data_sha = ""
    if RANK == 0:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        LOG = open(Path(args.log_dir) / f"{run_id}.txt", "w", encoding="utf-8")
        data_sha = sha256_files(train_files + val_files)
        for name, src in sources.items():
            LOG.write(f"# ==== file: {name} ====\n" + src + ("" if src.endswith("\n") else "\n"))
        env = [SEPARATOR, *environment(device),
               f"speedrun track:{h.track} preset:{args.preset} seed:{args.seed} run_id:{run_id} "
               f"world_size:{WORLD_SIZE} device:{device.type}",
               *(f"code_sha256 {name}: {hashlib.sha256(src.encode()).hexdigest()}" for name, src in sources.items()),
               f"data_sha256: {data_sha} ({len(train_files)} train + {len(val_files)} val shards in {data_dir})",
               *(f"val_shard_sha256 {Path(f).name}: {sha256_file(f)}" for f in val_files),  # vs the track's pin
               f"node: {json.dumps(node)}",
               SEPARATOR]
        for line in env:
            print0(line, console=False)
    log = print0
    log(f"hyperparameters: {json.dumps(asdict(h))}", console=False)
    for line in notes:
        log(line)
    tokens_per_step = h.seq_len * h.batch_seqs * h.grad_accum
    n_params = sum(p.numel() for p in model.parameters())
    adam, muon = optimizers
    log(f"run {run_id}: preset {args.preset} (track {h.track}), seed {args.seed}, {WORLD_SIZE} rank(s) on {device.type}, "
        f"activations {str(model.act_dtype).removeprefix('torch.')}")
    log(f"model: {n_params:,} parameters, {h.num_layers} layers × {h.model_dim} wide, {h.num_heads} heads, "
        f"vocab {h.vocab_size}; Muon on {sum(p.numel() for u in muon.units for p in u.params):,} of them")
    muon_split = ", ".join(f"{len(u.items)} of {u.shape[0]}×{u.shape[1]} ({u.k} a rank)" for u in muon.units)
    log(f"optimizers sharded over {WORLD_SIZE} rank(s): Muon matrices {muon_split}, Polar Express in "
        f"{str(muon.ns_dtype).removeprefix('torch.')}; Adam {len(adam.units)} "
        f"bucket(s) of ≤ {ADAM_BUCKET >> 20}M fp32 elements, 1/{WORLD_SIZE} of each per rank")
    flops, nbytes = step_cost(h)
    peak = node_peak(device)
    log(f"cost: {flops / 1e12:.3f} TFLOP a step (matmuls and attention at full window, fwd + bwd), ≈ "
        f"{nbytes / 2**30:.2f} GiB of weights, gradients, optimizer state and logits traffic; device peak "
        + (f"{peak:.0f} TFLOP/s bf16 × {WORLD_SIZE}" if peak else "unknown (no MFU)"))
    log(f"batch: {tokens_per_step:,} tokens/step = {h.grad_accum} micro-batches × {h.batch_seqs} seqs × {h.seq_len} "
        f"({h.grad_accum // WORLD_SIZE} per rank); {num_steps} steps = {num_steps * tokens_per_step:,} tokens"
        + (f" (stopping early: preset has {h.num_steps})" if num_steps < h.num_steps else ""))
    log(f"val: first {h.val_tokens:,} tokens every {h.val_every} steps and at the last; windows "
        f"{attention_windows(0, h)} → {attention_windows(h.num_steps, h)} tokens")
    return dict(code_sha256=hashlib.sha256(sources["train_gpt.py"].encode()).hexdigest(), data_sha256=data_sha,
                tokens_per_step=tokens_per_step, step_flops=flops, peak_tflops=peak)


def close_log() -> None:
    global LOG
    if LOG is not None:
        LOG.close()
        LOG = None


def main(argv=None):
    args = parse_args(argv)
    h = PRESETS[args.preset]
    if args.estimate_memory:
        print("MEMORY " + json.dumps(memory_estimate(h, args.estimate_memory, cuda_path=not args.cpu_path)))
        return None
    if args.val_every is not None:
        h = replace(h, val_every=args.val_every)
    device = setup_distributed()
    notes = []  # the device choices, said in the log once it is open
    attend = pick_attention(device, h, notes.append)
    kernels = pick_kernels(device, args.kernels, notes.append, h)
    act_dtype = compute_dtype(device, notes.append)
    node = node_figures(device)  # every rank: the all-reduce needs them all
    sources = source_files()  # this file and the kernels just imported, before anything can change on disk
    run_id = args.run_id or str(uuid.uuid4())
    if WORLD_SIZE > 1:  # every rank names the same log
        obj = [run_id]
        dist.broadcast_object_list(obj, src=0)
        run_id = obj[0]
    if h.grad_accum % WORLD_SIZE:
        sys.exit(f"train_gpt.py: --preset {args.preset} splits each step into {h.grad_accum} micro-batches; "
                 f"run it on a number of ranks that divides {h.grad_accum} (got {WORLD_SIZE})")
    data_dir = args.data_dir or ("data/synthetic" if args.preset == "tiny" else "data/fineweb10B")
    train_files, val_files = find_files(data_dir, h.train_files), find_files(data_dir, h.val_files)

    torch.manual_seed(args.seed)  # same seed on every rank: identical initial weights, nothing to broadcast
    raw_model = GPT(h, max(h.seq_len, h.val_seq_len), attend, act_dtype, kernels).to(device)
    comm = Comm()
    optimizers = build_optimizers(raw_model, h, comm)  # before compiling: Adam's parameters become bucket views
    compiled = maybe_compile(raw_model, device, h.compile and not args.no_compile, notes.append)
    model = compiled if compiled is not None else raw_model  # an OptimizedModule has no truth value
    if compiled is not None and device.type == "cuda":
        optimizers[1].compile_ns()
    num_steps = min(h.num_steps, args.max_steps) if args.max_steps else h.num_steps
    facts = open_log(args, h, run_id, device, sources, node, (data_dir, train_files, val_files), notes, raw_model,
                     optimizers, num_steps)
    log = print0
    flops, peak = facts["step_flops"], facts["peak_tflops"]
    # Every step's windows, on the device once: a step indexes a row (no host-to-device copy, no new graph).
    window_table = torch.tensor([attention_windows(s, h) for s in range(h.num_steps + 1)], device=device)
    val_windows = torch.tensor([h.window_max, max(h.window_block, h.window_max // 2)], device=device)

    def train_step(step: int, batches) -> Tensor:
        windows = window_table[step]
        total = torch.zeros((), device=device)
        micro = h.grad_accum // WORLD_SIZE
        for m in range(micro):
            x, y = next(batches)
            for opt in optimizers:  # on the last micro-batch, each unit's reduce-scatter starts from its hook
                opt.arm(m == micro - 1)
            loss = model(x, y, windows) / micro
            loss.backward()
            total += loss.detach()
        work = comm.all_reduce_mean(total)  # the step's loss on every rank (a divergence anywhere stops all)
        optimizer_step(optimizers, step, h)
        _wait(work)  # on NCCL the stream waits, not the host
        return total  # this step's train loss, averaged over ranks

    @torch.no_grad()
    def evaluate() -> float:
        raw_model.eval()  # the bf16 LM head: FP8's rounding has no place in the number a record is judged on
        total = torch.zeros(2, device=device, dtype=torch.float64)
        for x, y in val_batches(val_files, h, device):
            total[0] += model(x, y, val_windows, reduction="sum").double()
            total[1] += (y >= 0).sum()
        if WORLD_SIZE > 1:
            dist.all_reduce(total)
        raw_model.train()
        return (total[0] / total[1]).item()  # sync point: the value is printed

    # Warm-up (untimed): compiles and touches every code path, then state goes back to the start.
    warm_t0 = time.perf_counter()
    if h.warmup_steps:
        log(f"warm-up: {h.warmup_steps} steps and one validation, untimed; then resetting model and optimizer state")
        initial = copy.deepcopy(dict(model=raw_model.state_dict(), opts=[o.state_dict() for o in optimizers]))
        batches = train_batches(train_files, h, device)
        for step in range(h.warmup_steps):
            train_step(step, batches)
        evaluate()
        raw_model.load_state_dict(initial["model"])
        for o, s in zip(optimizers, initial["opts"]):
            o.load_state_dict(s)
        del initial
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    warmup_s = time.perf_counter() - warm_t0
    graphs_warm = compiled_graphs()
    log(f"warm-up: {warmup_s:.1f} s" + ("" if graphs_warm is None else
        f"; compile: {graphs_warm} graph(s) (training and validation), {graph_breaks()} graph break(s); any "
        "more graphs would be recompiles inside the timed run"))

    batches = train_batches(train_files, h, device)
    train_time_ms, val_loss = 0.0, float("nan")
    diverged_above = 2 * math.log(h.vocab_size)
    # The first step whose train loss was nan, inf or above twice a uniform guess's, kept on the device and
    # read at the next validation (a sync there anyway): the steps themselves never wait for the host.
    bad_step = torch.full((), -1, device=device, dtype=torch.long)
    bad_loss = torch.zeros((), device=device)
    sync(device)
    t0 = time.perf_counter()
    for step in range(num_steps + 1):
        last = step == num_steps
        if last or (h.val_every > 0 and step % h.val_every == 0):
            sync(device)
            train_time_ms += 1000 * (time.perf_counter() - t0)  # the clock stops for validation
            if bad_step.item() >= 0:
                log(f"diverged: train loss {bad_loss.item()} at step {bad_step.item()} (nan, inf or above "
                    f"{diverged_above:.2f} = twice a uniform guess's); stopping this run")
                close_log()
                sys.exit(3)
            val_loss = evaluate()
            log(f"step:{step}/{h.num_steps} val_loss:{val_loss:.4f} train_time:{train_time_ms:.0f}ms "
                f"step_avg:{train_time_ms / max(step, 1):.2f}ms")
            if not math.isfinite(val_loss):
                log(f"stopping: val_loss is {val_loss} at step {step}")
                break
            sync(device)
            t0 = time.perf_counter()
        if last:
            break
        loss = train_step(step, batches)
        bad = (bad_step < 0) & (~torch.isfinite(loss) | (loss > diverged_above))
        bad_step = torch.where(bad, step + 1, bad_step)
        bad_loss = torch.where(bad, loss, bad_loss)
        # No sync: the host may run ahead of the device, so a step line's time is approximate (as the
        # community's are); every val line's, and the final time, are exact.
        now = train_time_ms + 1000 * (time.perf_counter() - t0)
        log(f"step:{step + 1}/{h.num_steps} train_time:{now:.0f}ms step_avg:{now / (step + 1):.2f}ms")

    allocated, reserved = peak_memory(device)
    host_peak = host_peak_mib(device)
    log(f"peak memory allocated: {allocated} MiB reserved: {reserved} MiB (host: {host_peak} MiB, the largest rank's)")
    recompiles = None if graphs_warm is None else compiled_graphs() - graphs_warm
    if recompiles is not None:
        log(f"compile: {recompiles} recompile(s) after the warm-up")
    result = dict(track=h.track, preset=args.preset, seed=args.seed, run_id=run_id, val_loss=round(val_loss, 6),
                  train_time_ms=round(train_time_ms, 1), steps=step, num_steps=h.num_steps,
                  step_avg_ms=round(train_time_ms / max(step, 1), 3), tokens_per_step=facts["tokens_per_step"],
                  world_size=WORLD_SIZE, device=device.type, code_sha256=facts["code_sha256"],
                  data_sha256=facts["data_sha256"],
                  graphs=graphs_warm, recompiles=recompiles, graph_breaks=graph_breaks(), warmup_s=round(warmup_s, 1),
                  step_tflop=round(flops / 1e12, 4),
                  tflops=round(flops * step / max(train_time_ms / 1000, 1e-9) / 1e12, 3),
                  mfu=None if not peak else round(flops * step / max(train_time_ms / 1000, 1e-9) / 1e12
                                                  / (peak * WORLD_SIZE), 4),
                  peak_memory_mib=allocated, peak_host_mib=host_peak, log=str(Path(args.log_dir) / f"{run_id}.txt"))
    log("RESULT " + json.dumps(result))
    close_log()
    if WORLD_SIZE > 1:
        dist.barrier()  # gloo aborts ("terminate called…") if one rank tears down while another still talks
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
