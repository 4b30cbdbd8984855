"""baselines/tiny_nanogpt.py, record 0001's script: nanoGPT's data reading, and a log the harness verifies."""
import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import data
from harness.judge import logs, verify

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "baselines" / "tiny_nanogpt.py"

spec = importlib.util.spec_from_file_location("tiny_nanogpt", SCRIPT)
nano = importlib.util.module_from_spec(spec)
sys.modules["tiny_nanogpt"] = nano  # dataclasses look their module up while the class is built
spec.loader.exec_module(nano)


def test_training_chunks_are_the_stream_cut_contiguously(corpus):
    """nanoGPT reads the stream as consecutive chunks sharing one token (input/target shift), so sequences
    start mid-document like validation's long-document continuations; a shard's tail shorter than a
    chunk is skipped and the next shard starts at its first token."""
    files = sorted(str(p) for p in corpus.glob("synthetic_train_*.bin"))
    h = replace(nano.PRESETS["tiny"], seq_len=1000, batch_seqs=4, grad_accum=2)
    it = nano.train_batches(files, h, torch.device("cpu"))
    per_shard = (data.read_shard(files[0]).size - 1) // h.seq_len
    steps = -(-2 * per_shard // (h.batch_seqs * h.grad_accum))  # enough to cross into the third shard
    rows = torch.cat([next(it)[0] for _ in range(steps * h.grad_accum)])
    stream0, stream1 = data.read_shard(files[0]), data.read_shard(files[1])
    T = h.seq_len
    for i in range(per_shard):
        assert np.array_equal(rows[i].numpy(), stream0[i * T:(i + 1) * T])
    assert np.array_equal(rows[per_shard].numpy(), stream1[:T])
    assert (rows[:, 0] != h.eot_token).any()  # not aligned to documents


@pytest.mark.slow
def test_a_short_run_logs_and_verifies(corpus, tmp_path):
    """A 3-step run writes one log that the parser reads and whose `code` check passes (the embedded
    source is this script), with the gradient clip among the logged hyperparameters."""
    cmd = [sys.executable, str(SCRIPT), "--data-dir", str(corpus), "--log-dir", str(tmp_path), "--run-id", "b",
           "--max-steps", "3", "--val-every", "1", "--no-compile"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # one rank: the trainer takes every core
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = tmp_path / "b.txt"
    parsed = logs.parse_file(str(log))
    assert len(parsed.trials) == 1
    assert '"grad_clip": 1.0' in log.read_text()
    v = verify.verify_files([str(log)], "tiny-cpu", script=str(SCRIPT))
    code = next(c for c in v.runs[0].checks if c.name == "code")
    assert code.ok, code.detail
