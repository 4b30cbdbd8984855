"""train_gpt.py, nanoGPT-style baseline for the tiny-cpu track (record 0001): no speedrun tricks.

    speedrun data synthetic
    python train_gpt.py --preset tiny

The model and optimizer of Karpathy's nanoGPT at the tiny track's size: learned position embeddings,
LayerNorm, GELU MLP, tied input/output embeddings, plain causal attention (no document masking, no
windows), AdamW with gradient clipping, linear warm-up and cosine decay, and training batches cut as
contiguous chunks of the stream. Validation, timing, device choices and the log are the tiny track's,
unchanged, so a later record's speedup measures only what it changed.
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
    train_files: str
    val_files: str
    val_tokens: int
    eot_token: int
    vocab_size: int
    # batch
    seq_len: int
    batch_seqs: int
    grad_accum: int
    val_seq_len: int
    val_batch_seqs: int
    # model
    num_layers: int
    model_dim: int
    num_heads: int
    # optimization: AdamW, linear warm-up, cosine decay to min_lr_frac
    num_steps: int = 1000
    lr: float = 1e-3
    min_lr_frac: float = 0.1
    lr_warmup_steps: int = 50
    weight_decay: float = 0.1
    adam_betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0  # global gradient norm (nanoGPT's default); 0 turns it off
    # evaluation and warm-up
    val_every: int = 100
    warmup_steps: int = 3
    compile: bool = True


PRESETS = {
    "tiny": Hyperparameters(
        track="tiny-cpu",
        train_files="synthetic_train_*.bin", val_files="synthetic_val_*.bin",
        val_tokens=65536, eot_token=0, vocab_size=128,
        seq_len=256, batch_seqs=16, grad_accum=2, val_seq_len=256, val_batch_seqs=64,
        num_layers=4, model_dim=128, num_heads=4,
        num_steps=1100, lr=2e-3, min_lr_frac=0.0, lr_warmup_steps=50, val_every=100,
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="NanoGPT speedrun trainer (one run, one log)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="what defines the record")
    p.add_argument("--data-dir", help="folder of shards (default: data/synthetic for tiny, data/fineweb10B otherwise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation")
    p.add_argument("--run-id", help="names the log (default: a fresh uuid4)")
    p.add_argument("--log-dir", default="logs", help="where rank 0 writes <run_id>.txt")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs; schedules stay the preset's)")
    p.add_argument("--val-every", type=int, help="validate every N steps (default: the preset's)")
    p.add_argument("--no-compile", action="store_true", help="eager mode: for smoke runs and tests; its times are not a record's")
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
        device = torch.device("cuda", LOCAL_RANK)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # Share the cores among local ranks: oversubscribed threads make CPU runs several times slower.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", WORLD_SIZE))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if WORLD_SIZE > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def sync(device: torch.device):
    """The clock is read only after this: CUDA work is asynchronous, CPU work is not."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 activations where the hardware has bf16 arithmetic; emulated bf16 would be slower than fp32."""
    if device.type == "cuda":
        return torch.bfloat16
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        print0("dtype: CPU has native bf16 (avx512_bf16/amx_bf16) → bf16 activations, fp32 weights")
        return torch.bfloat16
    print0("dtype: CPU without native bf16 → fp32 activations")
    return torch.float32


def maybe_compile(model: nn.Module, device: torch.device, enabled: bool) -> nn.Module:
    """torch.compile where it can work. On CPU it needs a C++ compiler, and pays (tiny preset, 2 cores:
    ~40 s to compile, untimed; steps 435 → 335 ms)."""
    if not enabled:
        print0("compile: off (eager) — times from this run are not comparable with a record's")
        return model
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        print0("compile: no C++ compiler on PATH → eager on CPU (slower steps)")
        return model
    print0(f"compile: torch.compile on {device.type} (compiles during the untimed warm-up)")
    return torch.compile(model, dynamic=False)


# -----------------------------------------------------------------------------------------------
# Attention: plain causal self-attention over the whole sequence (nanoGPT); no masks to build.

class CausalAttention:
    name = "SDPA, causal over the whole sequence"

    def masks(self, input_seq: Tensor, windows):
        return None, None

    def __call__(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def pick_attention(device: torch.device, eot: int):
    print0(f"attention: {CausalAttention.name}")
    return CausalAttention()


# -----------------------------------------------------------------------------------------------
# The model: nanoGPT's GPT-2 at the tiny size.

class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attend) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.num_heads, C // self.num_heads).transpose(1, 3).unbind(2)
        return self.c_proj(attend(q, k, v).transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(dim), CausalSelfAttention(dim, num_heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, attend) -> Tensor:
        x = x + self.attn(self.ln_1(x), attend)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, h: Hyperparameters, max_seq_len: int):
        super().__init__()
        self.h = h
        self.wte = nn.Embedding(h.vocab_size, h.model_dim)
        self.wpe = nn.Embedding(max_seq_len, h.model_dim)
        self.blocks = nn.ModuleList(Block(h.model_dim, h.num_heads) for _ in range(h.num_layers))
        self.ln_f = nn.LayerNorm(h.model_dim)
        self.attend = None  # set by the trainer
        self.act_dtype = torch.float32
        for name, p in self.named_parameters():  # GPT-2 init: N(0, 0.02), residual projections scaled down
            if p.ndim == 2:
                std = 0.02 / (2 * h.num_layers) ** 0.5 if name.endswith(("c_proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, input_seq: Tensor, target_seq: Tensor, masks: tuple, reduction: str = "mean") -> Tensor:
        T = input_seq.size(1)
        with torch.autocast(input_seq.device.type, dtype=self.act_dtype, enabled=self.act_dtype != torch.float32):
            x = self.wte(input_seq) + self.wpe(torch.arange(T, device=input_seq.device))
            for block in self.blocks:
                x = block(x, self.attend)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied embeddings
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), target_seq.reshape(-1), reduction=reduction)


# -----------------------------------------------------------------------------------------------
# Optimizer: AdamW, weight decay on matrices only (nanoGPT's configure_optimizers).

def build_optimizers(model: GPT, h: Hyperparameters):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=h.weight_decay), dict(params=no_decay, weight_decay=0.0)],
                            lr=h.lr, betas=h.adam_betas, fused=False)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    return [opt]


def all_reduce_grads(model: nn.Module):
    """Average gradients over ranks (gloo has no AVG, so SUM then divide)."""
    if WORLD_SIZE == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    works = [dist.all_reduce(g, op=dist.ReduceOp.SUM, async_op=True) for g in grads]
    for g, w in zip(grads, works):
        w.wait()
        g.div_(WORLD_SIZE)


# -----------------------------------------------------------------------------------------------
# Data: shards in the community format; contiguous training chunks, document-aligned validation.

SHARD_MAGIC, SHARD_VERSION, HEADER_BYTES = 20240520, 1, 256 * 4


def load_shard(path: str) -> np.ndarray:
    """Memory-maps a shard after checking its header against its size."""
    remedy = f"regenerate it (`speedrun data synthetic`, or `speedrun data fineweb` for FineWeb shards)"
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
    """Yields (inputs, targets) micro-batches of this rank: contiguous chunks of the token stream, as
    nanoGPT reads it, so a sequence may start mid-document (as long documents do in validation).

    Every rank walks the same chunks, so a step covers the same grad_accum × batch_seqs sequences at any
    world size; rank r takes micro-batches r, r+W, ….
    """
    n_seqs, T = h.grad_accum * h.batch_seqs, h.seq_len
    epoch, fi, pos, tokens = 0, 0, 0, load_shard(files[0])
    while True:
        seqs = []
        while len(seqs) < n_seqs:
            if pos + T + 1 > len(tokens):  # shard exhausted: its tail is skipped
                fi += 1
                if fi == len(files):
                    fi, epoch = 0, epoch + 1
                    print0(f"data: all {len(files)} train shards seen; epoch {epoch} begins")
                tokens, pos = load_shard(files[fi]), 0
                continue
            seqs.append(tokens[pos:pos + T + 1])
            pos += T
        for micro in range(RANK, h.grad_accum, WORLD_SIZE):
            rows = np.stack(seqs[micro * h.batch_seqs:(micro + 1) * h.batch_seqs])
            buf = torch.from_numpy(rows.astype(np.int64))
            if device.type == "cuda":
                buf = buf.pin_memory().to(device, non_blocking=True)
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
    targets are -100, ignored by the loss); rank r takes sequences r, r+W, …."""
    tokens = np.concatenate([load_shard(f) for f in files])
    assert len(tokens) >= h.val_tokens + 1, f"val shards hold {len(tokens)} tokens, need {h.val_tokens + 1}"
    spans = val_sequences(tokens, h.val_tokens, h.val_seq_len, h.eot_token)[RANK::WORLD_SIZE]
    for i in range(0, len(spans), h.val_batch_seqs):
        batch = spans[i:i + h.val_batch_seqs]
        x = np.full((len(batch), h.val_seq_len), h.eot_token, dtype=np.int64)
        y = np.full((len(batch), h.val_seq_len), -100, dtype=np.int64)
        for row, (p, q) in enumerate(batch):
            x[row, :q - p], y[row, :q - p] = tokens[p:q], tokens[p + 1:q + 1]
        yield torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


def sha256_files(files: list[str]) -> str:
    """One hash for a set of files: sha256 over 'name sha256' lines, in sorted order."""
    lines = []
    for f in sorted(files):
        d = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                d.update(chunk)
        lines.append(f"{os.path.basename(f)} {d.hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# -----------------------------------------------------------------------------------------------
# Schedules: a function of the step alone, so warm-up and resets cannot shift them.

def lr_multiplier(step: int, h: Hyperparameters) -> float:
    if step < h.lr_warmup_steps:
        return (step + 1) / h.lr_warmup_steps
    x = (step - h.lr_warmup_steps) / max(1, h.num_steps - h.lr_warmup_steps)
    return h.min_lr_frac + (1 - h.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * x))


def attention_windows(step: int, h: Hyperparameters) -> tuple[int, int]:
    """No sliding windows: every position attends to all before it."""
    return h.seq_len, h.seq_len


# -----------------------------------------------------------------------------------------------
# The run log: source | environment | run output | RESULT.

SEPARATOR = "=" * 100


def source_files() -> dict[str, str]:
    """This file and every kernels/*.py it imported, as run, keyed by path relative to the repo."""
    root = Path(__file__).resolve().parent
    files = {"train_gpt.py": Path(__file__).read_text()}
    for name, mod in sorted(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if name.startswith("kernels.") and path and Path(path).resolve().is_relative_to(root):
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


def peak_memory(device: torch.device) -> tuple[int, int]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) >> 20, torch.cuda.max_memory_reserved(device) >> 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10  # KiB on Linux
    return rss, rss


# -----------------------------------------------------------------------------------------------
# The loop.

def main(argv=None):
    args = parse_args(argv)
    h = PRESETS[args.preset]
    if args.val_every is not None:
        h = replace(h, val_every=args.val_every)
    sources = source_files()  # read before anything can change on disk
    device = setup_distributed()
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

    code_sha = hashlib.sha256(sources["train_gpt.py"].encode()).hexdigest()
    data_sha = ""
    global LOG
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
               SEPARATOR]
        for line in env:
            print0(line, console=False)
    log = print0
    log(f"hyperparameters: {json.dumps(asdict(h))}", console=False)

    # Every derived quantity, once.
    attend = pick_attention(device, h.eot_token)
    torch.manual_seed(args.seed)  # same seed on every rank: identical initial weights, nothing to broadcast
    raw_model = GPT(h, max(h.seq_len, h.val_seq_len)).to(device)
    raw_model.attend, raw_model.act_dtype = attend, compute_dtype(device)
    model = maybe_compile(raw_model, device, h.compile and not args.no_compile)
    optimizers = build_optimizers(raw_model, h)
    num_steps = min(h.num_steps, args.max_steps) if args.max_steps else h.num_steps
    tokens_per_step = h.seq_len * h.batch_seqs * h.grad_accum
    n_params = sum(p.numel() for p in raw_model.parameters())
    log(f"run {run_id}: preset {args.preset} (track {h.track}), seed {args.seed}, {WORLD_SIZE} rank(s) on {device.type}, "
        f"activations {str(raw_model.act_dtype).removeprefix('torch.')}")
    log(f"model: {n_params:,} parameters, {h.num_layers} layers × {h.model_dim} wide, {h.num_heads} heads, "
        f"vocab {h.vocab_size}; AdamW on all of them")
    log(f"batch: {tokens_per_step:,} tokens/step = {h.grad_accum} micro-batches × {h.batch_seqs} seqs × {h.seq_len} "
        f"({h.grad_accum // WORLD_SIZE} per rank); {num_steps} steps = {num_steps * tokens_per_step:,} tokens"
        + (f" (stopping early: preset has {h.num_steps})" if num_steps < h.num_steps else ""))
    log(f"val: first {h.val_tokens:,} tokens every {h.val_every} steps and at the last; windows "
        f"{attention_windows(0, h)} → {attention_windows(h.num_steps, h)} tokens")

    def train_step(step: int, batches) -> None:
        windows = attention_windows(step, h)
        for _ in range(h.grad_accum // WORLD_SIZE):
            x, y = next(batches)
            loss = model(x, y, attend.masks(x, windows)) / (h.grad_accum // WORLD_SIZE)
            loss.backward()
        all_reduce_grads(raw_model)
        if h.grad_clip:
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), h.grad_clip)
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * lr_multiplier(step, h)
        for opt in optimizers:
            opt.step()
        raw_model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate() -> float:
        windows = (h.val_seq_len, h.val_seq_len)
        total = torch.zeros(2, device=device, dtype=torch.float64)
        for x, y in val_batches(val_files, h, device):
            total[0] += model(x, y, attend.masks(x, windows), reduction="sum").double()
            total[1] += (y >= 0).sum()
        if WORLD_SIZE > 1:
            dist.all_reduce(total)
        return (total[0] / total[1]).item()  # sync point: the value is printed

    # Warm-up (untimed): compiles and touches every code path, then state goes back to the start.
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

    batches = train_batches(train_files, h, device)
    train_time_ms, val_loss = 0.0, float("nan")
    sync(device)
    t0 = time.perf_counter()
    for step in range(num_steps + 1):
        last = step == num_steps
        if last or (h.val_every > 0 and step % h.val_every == 0):
            sync(device)
            train_time_ms += 1000 * (time.perf_counter() - t0)  # the clock stops for validation
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
        train_step(step, batches)
        sync(device)  # a synchronized read: each step line's time is a real measurement
        now = train_time_ms + 1000 * (time.perf_counter() - t0)
        log(f"step:{step + 1}/{h.num_steps} train_time:{now:.0f}ms step_avg:{now / (step + 1):.2f}ms")

    allocated, reserved = peak_memory(device)
    log(f"peak memory allocated: {allocated} MiB reserved: {reserved} MiB")
    result = dict(track=h.track, preset=args.preset, seed=args.seed, run_id=run_id, val_loss=round(val_loss, 6),
                  train_time_ms=round(train_time_ms, 1), steps=step, num_steps=h.num_steps,
                  step_avg_ms=round(train_time_ms / max(step, 1), 3), tokens_per_step=tokens_per_step,
                  world_size=WORLD_SIZE, device=device.type, code_sha256=code_sha, data_sha256=data_sha,
                  peak_memory_mib=allocated, log=str(Path(args.log_dir) / f"{run_id}.txt"))
    log("RESULT " + json.dumps(result))
    if LOG is not None:
        LOG.close()
        LOG = None
    if WORLD_SIZE > 1:
        dist.barrier()  # gloo aborts ("terminate called…") if one rank tears down while another still talks
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
