"""The gpt2-small-1gpu track (issue 21): gpt2-small's model, data, target and batch on one GPU, the 8-rank
batch by gradient accumulation. On CPU: the track file, the preset, the memory estimate, and a smoke run of
its code path (one rank, 8 accumulated micro-batches)."""
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import train_gpt as tg
from harness import data
from harness.core.track import load_track

ROOT = Path(__file__).resolve().parents[1]


def test_the_track_is_gpt2_small_on_one_gpu():
    """Same target, data, val tokens, significance and rules as gpt2-small; one H100; its preset is
    gpt2-small's hyperparameters exactly (only the track's name differs), 393,216 tokens a step on 1 rank."""
    one, eight = load_track("gpt2-small-1gpu"), load_track("gpt2-small")
    assert one["hardware"] == {"accelerator": "gpu", "model": "H100", "count": 1} and one["preset"] == "gpt2-small-1gpu"
    assert one["target"] == eight["target"] and one["data"] == {k: v for k, v in eight["data"].items() if k != "pin"}
    assert one["significance"] == eight["significance"] and one["rules"]["timing"] == eight["rules"]["timing"]
    h, base = asdict(tg.PRESETS["gpt2-small-1gpu"]), asdict(tg.PRESETS["gpt2-small"])
    assert {k for k in h if h[k] != base[k]} == {"track"}
    p = tg.PRESETS["gpt2-small-1gpu"]
    assert p.seq_len * p.batch_seqs * p.grad_accum == 8 * 48 * 1024


@pytest.mark.slow
def test_one_rank_holds_it_in_an_h100():
    """The doctor's fake-tensor estimate for the track (1 rank: all of the optimizer state) fits 80 GB."""
    from harness.runs.doctor import memory_check

    line = memory_check(load_track("gpt2-small-1gpu"), [], {})
    assert line.verdict == "ok" and line.detail["ranks"] == 1 and line.detail["fits"], line.figure


@pytest.mark.slow
def test_smoke_run_of_the_one_gpu_code_path(tmp_path):
    """Its code path at toy width on one CPU process: 8 micro-batches accumulated a step, a finite loss, the
    log naming the track."""
    rng = np.random.default_rng(0)

    def stream(n):
        toks = rng.integers(0, 50256, n)
        toks[rng.random(n) < 1 / 300] = 50256
        toks[0] = 50256
        return toks

    data.write_shard(tmp_path / "fineweb_train_000001.bin", stream(100_000))
    data.write_shard(tmp_path / "fineweb_val_000000.bin", stream(5_000))
    cmd = [sys.executable, str(ROOT / "train_gpt.py"), "--preset", "gpt2-small-1gpu-smoke", "--data-dir", str(tmp_path),
           "--log-dir", str(tmp_path), "--run-id", "one", "--max-steps", "2", "--val-every", "0", "--no-compile"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2",
                            **{k: os.environ[k] for k in os.environ if k.startswith("MALLOC_")}})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    log = (tmp_path / "one.txt").read_text()
    r = json.loads(log.rstrip().split("\n")[-1][len("RESULT "):])
    assert r["track"] == "gpt2-small-1gpu" and r["world_size"] == 1 and r["steps"] == 2 and r["val_loss"] < 12
    assert "8 micro-batches × 1 seqs × 512 (8 per rank)" in log
