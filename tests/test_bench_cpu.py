"""pytest-benchmark benchmarks of the CPU-side hot paths. Not part of the default run (`--benchmark-skip`
in pyproject.toml); run them with `./run.sh test tests/test_bench_cpu.py --benchmark-only`."""
import numpy as np
import pytest
import torch

import logmaker
import train_gpt as tg
from harness import data
from harness.judge import logs
import fixtures


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


PUBLIC = fixtures.RECORDS / "track_1_short"


def public_sized_tree(dest, copies: int = 9):
    """A tree the size of the public track-1 history (≈ 100 folders, ≈ 1,300 logs, ≈ 250 MB), made of
    `copies` dated copies of each fixture folder, every log made distinct (so none is a repeat import) and
    its embedded code too, by a statement (each folder's scripts are new code, as in the real history)."""
    import datetime as dt
    import shutil

    from harness.public import layout

    for k in range(copies):
        for folder in sorted(PUBLIC.iterdir()):
            date, name = layout.folder_date(folder.name)
            day = (dt.date.fromisoformat(date) + dt.timedelta(days=k)).isoformat()
            out = dest / f"{day}_{name}{k}"
            shutil.copytree(folder, out)
            for log in out.rglob("*.txt"):
                text = log.read_text()
                log.write_text(text.replace("\nimport ", f"\n_copy = {k}\nimport ", 1) + f"\n# copy {k}\n")
    return dest


@pytest.mark.skipif(not PUBLIC.is_dir(), reason="shared fixtures absent")
@pytest.mark.parametrize("verb", ["audit", "import"])
def test_bench_whole_public_tree(benchmark, tmp_path, verb):
    """`speedrun audit` and `speedrun import` of a public-history-sized tree (targets on 2 cores: audit
    ≤ 10 s, import ≤ 15 s; the import writes every record, its evidence and the ledger)."""
    import shutil

    from harness.public import audit, importer

    tree = public_sized_tree(tmp_path / "tree")
    root = tmp_path / "proj"
    (root / "records").mkdir(parents=True)
    shutil.copytree(__import__("pathlib").Path(__file__).resolve().parents[1] / "records/gpt2-small",
                    root / "records/gpt2-small")
    run = (lambda: audit.audit_tree(tree, "gpt2-small")) if verb == "audit" else \
        (lambda: importer.import_tree(str(tree), "gpt2-small", root=root))
    out = benchmark.pedantic(run, rounds=1, iterations=1)
    n = len(out["folders"]) if verb == "audit" else sum(i.action == "imported" for i in out.items)
    assert n == len(list(tree.iterdir()))
    benchmark.extra_info["folders"] = n
    benchmark.extra_info["MB"] = round(sum(p.stat().st_size for p in tree.rglob("*.txt")) / 1e6)


@pytest.mark.skipif(not PUBLIC.is_dir(), reason="shared fixtures absent")
def test_bench_frame_of_the_public_history(benchmark, tmp_path):
    """`harness.frame` of a public-history-sized tree: time, and resident memory of the frame (target
    ≤ 1 GB: repeated strings as categoricals)."""
    import harness

    tree = public_sized_tree(tmp_path / "tree")
    df = benchmark.pedantic(lambda: harness.frame([tree]), rounds=1, iterations=1)
    assert len(df) and str(df["file"].dtype) == "category"
    benchmark.extra_info["rows"] = len(df)
    benchmark.extra_info["frame_MB"] = round(df.memory_usage(deep=True).sum() / 1e6)
    import resource

    benchmark.extra_info["peak_rss_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3)
