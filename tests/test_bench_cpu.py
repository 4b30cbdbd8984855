"""pytest-benchmark benchmarks of the CPU-side hot paths. Not part of the default run (`--benchmark-skip`
in pyproject.toml); run them with `./run.sh test tests/test_bench_cpu.py --benchmark-only`."""
import numpy as np
import pytest
import torch

import logmaker
import train_gpt as tg
from harness import data, logs


def test_bench_parse_log(benchmark):
    """Throughput of `speedrun parse`/`verify`'s reader on a 20,000-step log of our format (MB/s)."""
    text = logmaker.ours(total=20_000, val_every=125)
    parsed = benchmark(logs.parse_text, text)
    assert len(parsed.trials) == 1 and parsed.trials[0].final_step == 20_000
    benchmark.extra_info["MB_per_s"] = round(len(text.encode()) / 1e6 / benchmark.stats["median"], 1)


@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mmap"])
def test_bench_read_shard(benchmark, tmp_path, mmap):
    """Reading (header checks included) a 16M-token shard: what the data check and the trainer's loader pay."""
    path = tmp_path / "bench_train_000001.bin"
    data.write_shard(path, np.random.default_rng(0).integers(0, 50257, 1 << 24, dtype=np.uint16))
    tokens = benchmark(lambda: np.asarray(data.read_shard(path, mmap=mmap)).sum())
    assert tokens > 0
    benchmark.extra_info["Mtokens_per_s"] = round((1 << 24) / 1e6 / benchmark.stats["median"], 1)


def test_bench_muon_step_cpu(benchmark):
    """One Muon step (Nesterov momentum, 5 Polar Express iterations in bf16) over the tiny preset's
    hidden matrices: the optimizer's share of a tiny-cpu step."""
    h = tg.PRESETS["tiny"]
    torch.manual_seed(0)
    model = tg.GPT(h, h.seq_len)
    hidden = [p for p in model.blocks.parameters() if p.ndim >= 2]
    for p in hidden:
        p.grad = torch.randn_like(p)
    muon = tg.Muon(hidden, lr=h.muon_lr, momentum=h.muon_momentum)
    benchmark.pedantic(muon.step, rounds=20, warmup_rounds=2)
    benchmark.extra_info["params"] = sum(p.numel() for p in hidden)
